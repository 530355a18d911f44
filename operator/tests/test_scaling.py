"""reconcile.scaling: the clamp (per-role bounds, ratio bounds) and the per-role decision
(who owns the number, what the scaler's spec.replicas must become), as tables."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.reconcile.scaling import (
    Bounds,
    Ratio,
    clamp,
    clamp_events,
    decide,
    role_status_fields,
    scaler_replicas,
    scaler_status,
    scaler_status_differs,
)
from epd_operator.render import render_cluster

F = Fraction
E, P, D = "encoder", "prefill", "decode"

# (id, requested, bounds, ratios, desired, roles whose `why` mentions the fragment)
CLAMP_TABLE: list[
    tuple[str, dict[str, int], dict[str, Bounds], list[Ratio], dict[str, int], dict[str, str]]
] = [
    ("no bounds", {E: 3, D: 5}, {}, [], {E: 3, D: 5}, {}),
    ("inside bounds", {E: 3}, {E: Bounds(1, 4)}, [], {E: 3}, {}),
    ("raised to min", {E: 1}, {E: Bounds(2, 4)}, [], {E: 2}, {E: "to minReplicas 2"}),
    ("lowered to max", {D: 9}, {D: Bounds(None, 4)}, [], {D: 4}, {D: "to maxReplicas 4"}),
    ("api ceiling without max", {D: 5000}, {}, [], {D: 1024}, {D: "maxReplicas 1024"}),
    (
        "ratio max lowers the role",
        {E: 8, D: 4},
        {},
        [Ratio(E, D, None, F(1))],
        {E: 4, D: 4},
        {E: "by ratio encoder/decode in [0, 1] with decode=4"},
    ),
    (
        "ratio min raises the role",
        {E: 1, D: 8},
        {},
        [Ratio(E, D, F("0.25"), None)],
        {E: 2, D: 8},
        {E: "raised from 1 to 2 by ratio"},
    ),
    (
        "ratio min rounds up",
        {E: 1, D: 5},
        {},
        [Ratio(E, D, F("0.25"), None)],
        {E: 2, D: 5},
        {E: "raised"},
    ),
    (
        "ratio max rounds down",
        {E: 4, D: 5},
        {},
        [Ratio(E, D, None, F("0.5"))],
        {E: 2, D: 5},
        {E: "lowered"},
    ),
    (
        "exact decimal: 0.1 x 30 is 3",
        {E: 2, D: 30},
        {},
        [Ratio(E, D, F("0.1"), None)],
        {E: 3, D: 30},
        {E: "raised from 2 to 3"},
    ),
    (
        "ratio max never below one pod",
        {E: 3, D: 1},
        {},
        [Ratio(E, D, None, F("0.25"))],
        {E: 1, D: 1},
        {E: "lowered from 3 to 1"},
    ),
    ("inside the ratio", {E: 3, D: 4}, {}, [Ratio(E, D, F("0.25"), F(1))], {E: 3, D: 4}, {}),
    (
        "the per role's own bounds first",
        {E: 1, D: 2},
        {D: Bounds(8, None)},
        [Ratio(E, D, F("0.5"), None)],
        {E: 4, D: 8},
        {D: "minReplicas 8", E: "with decode=8"},
    ),
    (
        "role bounds win over the ratio",
        {E: 1, D: 8},
        {E: Bounds(None, 2)},
        [Ratio(E, D, F(1), None)],
        {E: 2, D: 8},
        {E: "not met: encoder kept at 2 by its maxReplicas"},
    ),
    (
        "two ratios on one per",
        {E: 1, P: 9, D: 4},
        {},
        [Ratio(E, D, F("0.5"), None), Ratio(P, D, None, F(2))],
        {E: 2, P: 8, D: 4},
        {E: "raised", P: "lowered from 9 to 8"},
    ),
    (
        "ratio over an absent role is ignored",
        {E: 2, D: 2},
        {},
        [Ratio(E, P, None, F(1))],
        {E: 2, D: 2},
        {},
    ),
]


@pytest.mark.parametrize("row", CLAMP_TABLE, ids=[r[0] for r in CLAMP_TABLE])
def test_clamp(row: tuple[Any, ...]) -> None:
    _, requested, bounds, ratios, desired, why = row
    got = clamp(requested, bounds, ratios)
    assert got.replicas == desired
    assert set(got.why) == set(why), got.why
    for role, fragment in why.items():
        assert fragment in "; ".join(got.why[role]), got.why[role]


def test_clamp_results_satisfy_every_bound_that_can_hold() -> None:
    # Exhaustive over small counts: after the clamp each role is within its bounds, and each
    # ratio holds unless the role's own bounds forbid it (then the reason says so).
    bounds = {E: Bounds(1, 6), D: Bounds(2, 10)}
    ratio = Ratio(E, D, F("0.25"), F("0.75"))
    for e in range(0, 12):
        for d in range(0, 12):
            got = clamp({E: e, D: d}, bounds, [ratio])
            ne, nd = got.replicas[E], got.replicas[D]
            assert 1 <= ne <= 6
            assert 2 <= nd <= 10
            if F(ne, nd) < F("0.25") or F(ne, nd) > F("0.75"):
                assert "not met" in "; ".join(got.why[E])
            if (ne, nd) != (e, d):
                assert got.why


def cluster(roles: dict[str, Any], scaling: dict[str, Any] | None = None) -> Any:
    spec: dict[str, Any] = {"model": {"name": "m"}, "roles": copy.deepcopy(roles)}
    if "prefill" in roles:
        spec["kvTransfer"] = {"connector": "MooncakeConnector"}
    if scaling:
        spec["scaling"] = scaling
    return parse(
        {
            "apiVersion": "epd-operator.io/v1alpha1",
            "kind": "EPDCluster",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
            "spec": spec,
        }
    )


SCALER = {"replicasFrom": "Scaler"}
# (id, roles, live scaler spec.replicas per role, requested, desired, scaler writes)
DECIDE_TABLE: list[
    tuple[
        str,
        dict[str, Any],
        dict[str, int | None],
        dict[str, int],
        dict[str, int],
        dict[str, int | None],
    ]
] = [
    (
        "spec owns, no scalers yet: seed them",
        {E: {"replicas": 2}, D: {}},
        {},
        {E: 2, D: 1},
        {E: 2, D: 1},
        {E: 2, D: 1},
    ),
    (
        "spec owns, scalers agree: nothing to write",
        {E: {"replicas": 2}, D: {}},
        {E: 2, D: 1},
        {E: 2, D: 1},
        {E: 2, D: 1},
        {E: None, D: None},
    ),
    (
        "spec owns, scaler hand-scaled: revert it",
        {E: {}, D: {}},
        {E: 5, D: 1},
        {E: 1, D: 1},
        {E: 1, D: 1},
        {E: 1, D: None},
    ),
    (
        "scaler owns: its number counts and is never written",
        {E: SCALER, D: {}},
        {E: 5, D: 1},
        {E: 5, D: 1},
        {E: 5, D: 1},
        {E: None, D: None},
    ),
    (
        "scaler owns, scaler without a number: seed from spec",
        {E: {**SCALER, "replicas": 3}, D: {}},
        {E: None, D: 1},
        {E: 3, D: 1},
        {E: 3, D: 1},
        {E: 3, D: None},
    ),
    (
        "scaler owns, clamped to maxReplicas, scaler left as the autoscaler wrote it",
        {E: {**SCALER, "maxReplicas": 4}, D: {}},
        {E: 9, D: 1},
        {E: 9, D: 1},
        {E: 4, D: 1},
        {E: None, D: None},
    ),
    (
        "both scaler-owned with a ratio",
        {E: SCALER, D: SCALER},
        {E: 1, D: 8},
        {E: 1, D: 8},
        {E: 2, D: 8},
        {E: None, D: None},
    ),
]


@pytest.mark.parametrize("row", DECIDE_TABLE, ids=[r[0] for r in DECIDE_TABLE])
def test_decide(row: tuple[Any, ...]) -> None:
    rid, roles, live, requested, desired, writes = row
    scaling = {"ratios": [{"role": E, "per": D, "min": 0.25}]} if rid.endswith("ratio") else None
    got = decide(cluster(roles, scaling).spec, live)
    assert {r: d.requested for r, d in got.items()} == requested
    assert {r: d.desired for r, d in got.items()} == desired
    assert {r: d.scaler_write for r, d in got.items()} == writes
    for d in got.values():
        assert bool(d.clamped) == (d.desired != d.requested)


def test_switching_owner_or_count_never_changes_a_pod_template() -> None:
    cfg = OperatorConfig.from_env({})
    spec_owned = cluster({E: {}, D: {"replicas": 2}})
    scaler_owned = cluster({E: SCALER, D: {**SCALER, "replicas": 2, "maxReplicas": 9}})

    def templates(objs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            o["metadata"]["name"]: o["spec"]["template"]
            for o in objs
            if o["kind"] in ("StatefulSet", "Deployment")
        }

    base = render_cluster(spec_owned, cfg)
    other = render_cluster(scaler_owned, cfg, {E: 7, D: 9})
    assert templates(base) == templates(other)
    sts = {
        o["metadata"]["name"]: o["spec"]["replicas"] for o in other if o["kind"] == "StatefulSet"
    }
    assert sts == {"demo-encoder": 7, "demo-decode": 9}
    # The launch config carries no counts: scaling makes no new launch revision.
    cms = [[o for o in objs if o["kind"] == "ConfigMap"] for objs in (base, other)]
    assert cms[0] == cms[1]
    assert "replicas" not in next(iter(cms[1][0]["data"].values()))


def test_scaler_replicas_reads_only_numbers() -> None:
    got = scaler_replicas(
        {E: {"spec": {"replicas": 3}}, P: {"spec": {}}, D: {"spec": {"replicas": True}}}
    )
    assert got == {E: 3, P: None, D: None}


def test_status_fields_and_events() -> None:
    spec = cluster({E: {**SCALER, "maxReplicas": 2}, D: {}}).spec
    decisions = decide(spec, {E: 5, D: 1})
    fields = role_status_fields(decisions[E])
    assert fields == {
        "desiredReplicas": 2,
        "requestedReplicas": 5,
        "replicasFrom": "Scaler",
        "clamped": "lowered from 5 to maxReplicas 2",
    }
    assert "clamped" not in role_status_fields(decisions[D])
    # Announced once: a previous status holding the same explanation means no new Event.
    assert clamp_events(None, decisions) == ["encoder: lowered from 5 to maxReplicas 2"]
    assert clamp_events({"roles": {E: fields}}, decisions) == []
    sts = {"status": {"replicas": 2, "readyReplicas": 1}}
    st = scaler_status(decisions[E], "demo", {"b": "2", "a": "1"}, sts, 4)
    assert st == {
        "replicas": 2,
        "readyReplicas": 1,
        "desiredReplicas": 2,
        "selector": "a=1,b=2",
        "replicasFrom": "Scaler",
        "cluster": "demo",
        "role": E,
        "observedGeneration": 4,
        "clamped": "lowered from 5 to maxReplicas 2",
    }
    assert not scaler_status_differs(st, st)
    assert scaler_status_differs({**st, "replicas": 1}, st)
    unclamped = {k: v for k, v in st.items() if k != "clamped"}
    assert scaler_status_differs(st, unclamped)  # a stale explanation must go
