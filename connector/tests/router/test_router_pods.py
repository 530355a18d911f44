"""Pod pools and selection: rotation, exclusion, least-loaded, affinity with a load bound."""

from __future__ import annotations

import random

import pytest

from epd_connector.router.discovery import parse_static
from epd_connector.router.pods import Pod, Pool, by_affinity, least_loaded


def _pool(n: int, dp: int = 1) -> Pool:
    pool = Pool("encoder", 8000, dp)
    pool.sync((f"10.0.0.{i}", 8000) for i in range(n))
    for pod in pool.pods.values():
        pod.healthy = True
    return pool


def test_sync_adds_and_drops_pods_and_reports_new_ones() -> None:
    pool = Pool("decode", 8000, 2)
    new = pool.sync([("10.0.0.1", 8000), ("10.0.0.2", 8000)])
    assert [p.key for p in new] == ["10.0.0.1:8000", "10.0.0.2:8000"]
    assert pool.in_rotation() == []  # unchecked pods are not in rotation
    new = pool.sync([("10.0.0.2", 8000), ("fd00::5", 8000)])
    assert [p.key for p in new] == ["[fd00::5]:8000"]
    assert sorted(pool.pods) == ["10.0.0.2:8000", "[fd00::5]:8000"]
    assert pool.pods["[fd00::5]:8000"].base_url == "http://[fd00::5]:8000"


def test_candidates_skip_tried_pods_unless_all_were_tried() -> None:
    pool = _pool(3)
    pool.pods["10.0.0.2:8000"].healthy = False
    assert {p.key for p in pool.candidates({"10.0.0.0:8000"})} == {"10.0.0.1:8000"}
    assert {p.key for p in pool.candidates({"10.0.0.0:8000", "10.0.0.1:8000"})} == {
        "10.0.0.0:8000",
        "10.0.0.1:8000",
    }


def test_least_loaded_and_dp_rank() -> None:
    pods = list(_pool(3, dp=3).pods.values())
    pods[0].acquire(0)
    pods[1].acquire(2)
    assert least_loaded(pods) is pods[2]
    pods[2].acquire(0)
    pods[2].acquire(1)
    assert pods[2].least_loaded_rank() == 2
    assert least_loaded([]) is None


def test_affinity_is_stable_and_spreads_keys() -> None:
    pods = list(_pool(4).pods.values())
    first = {f"img-{i}": by_affinity(pods, f"img-{i}", 1.5) for i in range(200)}
    assert all(by_affinity(pods, k, 1.5) is p for k, p in first.items())
    counts = {p.key: sum(1 for q in first.values() if q is p) for p in pods}
    assert min(counts.values()) > 25, counts


def test_affinity_gives_way_under_load() -> None:
    pods = list(_pool(2).pods.values())
    home = by_affinity(pods, "hot", 1.5)
    assert home is not None
    for _ in range(4):
        home.acquire()
    other = by_affinity(pods, "hot", 1.5)
    assert other is not home
    home.release()
    home.release()
    home.release()
    home.release()
    assert by_affinity(pods, "hot", 1.5) is home


def test_least_loaded_breaks_ties_at_random() -> None:
    pods = list(_pool(3).pods.values())
    rng = random.Random(0)
    assert len({least_loaded(pods, rng).key for _ in range(50)}) == 3  # type: ignore[union-attr]


STATIC_OK = [
    ("10.0.0.1", [("10.0.0.1", 9000)]),
    ("10.0.0.1:81, 10.0.0.2", [("10.0.0.1", 81), ("10.0.0.2", 9000)]),
    ("[fd00::1]:82,[fd00::2]", [("fd00::1", 82), ("fd00::2", 9000)]),
    ("pod-a.svc:7", [("pod-a.svc", 7)]),
]
STATIC_BAD = [
    (":80", "empty host"),
    ("h:x", "bad port"),
    ("h:0", "out of range"),
    ("h:70000", "out of range"),
]


@pytest.mark.parametrize(("spec", "want"), STATIC_OK)
def test_parse_static(spec: str, want: list[tuple[str, int]]) -> None:
    assert parse_static(spec, 9000) == want


@pytest.mark.parametrize(("spec", "error"), STATIC_BAD)
def test_parse_static_rejects(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_static(spec, 9000)


def test_pod_defaults() -> None:
    pod = Pod("decode", "10.1.1.1", 8000, dp_size=2)
    assert pod.rank_inflight == [0, 0]
    assert pod.healthy is None
