"""Revision-pinned routing: the wiring revision, the routing table, and which revisions a
request may use (tables; the data-plane proof is tests/dataplane/test_dataplane_revisions.py)."""

from __future__ import annotations

import copy

import pytest

from epd_connector.launch.config import LaunchConfig, LaunchConfigError
from epd_connector.launch.routing import (
    parse_table,
    revision_service,
    table_for,
    wiring_revision,
    wiring_view,
)
from epd_connector.router.pods import Endpoint, Pool, eligible_revisions

BASE: dict[str, object] = {
    "cluster": "c",
    "namespace": "ns",
    "model": {"name": "m"},
    "roles": {
        "encoder": {"service": "c-encoder"},
        "decode": {"service": "c-decode", "max_model_len": 4096},
    },
}


def _cfg(**changes: object) -> LaunchConfig:
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})  # type: ignore[assignment]
        node[leaf] = value
    return LaunchConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("change", "same_wiring"),
    [
        ({"roles__decode__max_model_len": 8192}, True),  # a role's own setting
        ({"roles__decode__extra_args": ["--enforce-eager"]}, True),
        ({"roles__encoder__gpu_memory_utilization": 0.5}, True),
        ({"roles__decode__port": 8100}, False),  # what peers dial
        ({"roles__decode__parallelism": {"data": 2}}, False),  # the router's DP ranks
        ({"ec__port": 31000}, False),  # the EC control port the encoder pushes to
        ({"model__name": "other"}, False),
    ],
)
def test_wiring_revision_moves_only_with_the_wiring(
    change: dict[str, object], same_wiring: bool
) -> None:
    assert (wiring_revision(_cfg(**change)) == wiring_revision(_cfg())) is same_wiring


def test_wiring_view_keeps_only_what_pairs_agree_on() -> None:
    view = wiring_view(_cfg(**{"roles__decode__extra_args": ["--x"]}))
    assert view.roles.decode.extra_args == []
    assert view.roles.decode.max_model_len is None
    assert view.roles.decode.service == "c-decode"
    assert revision_service("c-decode", "ab12cd34") == "c-decode-wab12cd34"


def test_table_lists_each_wiring_once_oldest_first_and_round_trips() -> None:
    old, own, new = _cfg(), _cfg(**{"roles__decode__max_model_len": 1}), _cfg(ec__port=31000)
    table = table_for([old, own, new])
    assert [r.wiring for r in table.revisions] == [wiring_revision(old), wiring_revision(new)]
    assert parse_table(table.to_json()) == table


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{", "not valid JSON"),
        ('{"revisions": [{"wiring": "a"}]}', "revisions.0.config"),
        ('{"revisions": [], "extra": 1}', "extra"),
        ('{"schema_version": "epd.routing/v2"}', "schema_version"),
    ],
)
def test_bad_routing_tables_name_the_key(text: str, named: str) -> None:
    with pytest.raises(LaunchConfigError, match=named.replace(".", r"\.")):
        parse_table(text)


def _pools(pods: dict[str, list[tuple[str, bool]]]) -> dict[str, Pool]:
    """role -> [(revision, healthy)] -> pools with one pod per entry."""
    pools: dict[str, Pool] = {}
    for role, entries in pods.items():
        pool = pools[role] = Pool(role, 8000, 1)
        pool.sync(
            Endpoint(f"10.0.{i}.{len(pools)}", 8000, rev) for i, (rev, _) in enumerate(entries)
        )
        for pod, (_, ok) in zip(pool.pods.values(), entries, strict=True):
            pod.healthy = ok
            pod.down_reason = None if ok else "refused"  # hard down: not even a panic candidate
    return pools


@pytest.mark.parametrize(
    ("pods", "needed", "eligible"),
    [
        # One revision: the table-less router's "" revision.
        ({"encoder": [("", True)], "decode": [("", True)]}, ["decode"], {""}),
        # A new revision with a decode pod but no encoder yet takes no traffic...
        ({"encoder": [("a", True)], "decode": [("a", True), ("b", True)]}, ["decode"], {"a"}),
        # ...until it has a pod of every role; then both serve.
        (
            {"encoder": [("a", True), ("b", True)], "decode": [("a", True), ("b", True)]},
            ["decode", "encoder"],
            {"a", "b"},
        ),
        # An unhealthy pod does not make its revision complete.
        (
            {"encoder": [("a", True), ("b", False)], "decode": [("a", True), ("b", True)]},
            ["decode"],
            {"a"},
        ),
        # No complete revision: the roles this request needs decide (text needs no encoder).
        ({"encoder": [("a", False)], "decode": [("a", True), ("b", True)]}, ["decode"], {"a", "b"}),
        ({"encoder": [("a", False)], "decode": [("b", True)]}, ["decode", "encoder"], set()),
        # E/P/D: a revision needs prefill and decode of its own.
        (
            {
                "encoder": [("a", True)],
                "prefill": [("a", True), ("b", True)],
                "decode": [("b", True)],
            },
            ["prefill", "decode"],
            {"b"},
        ),
    ],
)
def test_eligible_revisions(
    pods: dict[str, list[tuple[str, bool]]], needed: list[str], eligible: set[str]
) -> None:
    assert eligible_revisions(_pools(pods), needed, now=0.0) == eligible


def test_candidates_of_a_revision_and_an_address_that_changes_revision() -> None:
    pool = Pool("decode", 8000, 1)
    pool.sync([Endpoint("10.0.0.1", 8000, "a"), Endpoint("10.0.0.2", 8100, "b", 2)])
    for pod in pool.pods.values():
        pod.healthy = True
    assert [p.key for p in pool.candidates(set(), 0.0, {"b"})] == ["10.0.0.2:8100"]
    assert pool.pods["10.0.0.2:8100"].dp_size == 2
    # The IP now belongs to a pod of revision b (reused after a restart): a new, unchecked pod.
    new = pool.sync([Endpoint("10.0.0.1", 8000, "b"), Endpoint("10.0.0.2", 8100, "b", 2)])
    assert [(p.key, p.revision, p.healthy) for p in new] == [("10.0.0.1:8000", "b", None)]
