"""Pod pools and selection: rotation, exclusion, least-loaded, affinity with a load bound."""

from __future__ import annotations

import random

import pytest

from epd_connector.launch.router_options import Overload, RouterOptions
from epd_connector.router.discovery import parse_static
from epd_connector.router.pods import Pod, Pool, by_affinity, least_loaded, round_robin


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


# ---- overload: health thresholds, outlier ejection, panic, per-pod limits ---------------------

OV = Overload(
    unhealthy_threshold=3,
    eject_after_failures=2,
    base_ejection_s=10,
    max_ejection_s=25,
    max_ejection_percent=50,
    panic_threshold_percent=50,
)


def _checked(n: int, overload: Overload = OV) -> Pool:
    pool = Pool("decode", 8000, 1, overload)
    pool.sync((f"10.0.0.{i}", 8000) for i in range(n))
    for pod in pool.pods.values():
        pool.health_result(pod, True)
    return pool


def _keys(pods: list[Pod]) -> set[str]:
    return {p.key.removesuffix(":8000") for p in pods}


@pytest.mark.parametrize(
    ("reason", "checks_to_leave"),
    [("timeout", 3), ("refused", 1), ("status", 1)],
)
def test_a_pod_leaves_rotation_at_once_on_hard_signals_and_after_a_run_of_timeouts(
    reason: str, checks_to_leave: int
) -> None:
    pool = _checked(4)
    pod = pool.pods["10.0.0.0:8000"]
    for i in range(1, checks_to_leave + 1):
        changed = pool.health_result(pod, False, reason)
        assert changed == (i == checks_to_leave)
        assert (pod in pool.in_rotation(0)) == (i < checks_to_leave)
    assert pool.health_result(pod, True)  # one good answer brings it back
    assert pod.health_timeouts == 0


def test_timeouts_in_a_row_only() -> None:
    pool = _checked(2)
    pod = pool.pods["10.0.0.0:8000"]
    for ok in (False, False, True, False, False):
        pool.health_result(pod, ok, None if ok else "timeout")
    assert pod in pool.in_rotation(0)


def test_failed_requests_eject_for_a_growing_bounded_interval() -> None:
    pool = _checked(4)
    pod = pool.pods["10.0.0.0:8000"]
    now = 100.0
    intervals = []
    for _ in range(4):
        assert not pool.request_failed(pod, now)
        assert pool.request_failed(pod, now)
        assert pod not in pool.in_rotation(now)
        intervals.append(pod.ejected_until - now)
        now = pod.ejected_until
        assert pod in pool.in_rotation(now)
    assert intervals == [10, 20, 25, 25]  # base x ejections, at most max_ejection_s


def test_a_success_breaks_the_run_and_a_long_good_spell_resets_the_interval() -> None:
    pool = _checked(4)
    pod = pool.pods["10.0.0.0:8000"]
    pool.request_failed(pod, 0)
    pool.request_succeeded(pod, 0)
    assert not pool.request_failed(pod, 0)  # the run started again
    assert pool.request_failed(pod, 0)
    pool.request_succeeded(pod, pod.ejected_until + 26)  # > max_ejection_s back in
    assert pod.ejections == 0


def test_a_refused_connection_takes_the_pod_out_at_once() -> None:
    pool = _checked(2)
    pod = pool.pods["10.0.0.1:8000"]
    assert pool.request_failed(pod, 0, refused=True)
    assert pod.hard_down
    assert _keys(pool.candidates(set(), 0)) == {"10.0.0.0"}


def test_never_more_than_the_bounded_share_is_ejected() -> None:
    pool = _checked(4)
    ejected = []
    for pod in pool.pods.values():
        pool.request_failed(pod, 0)
        if pool.request_failed(pod, 0):
            ejected.append(pod.key)
    assert len(ejected) == 2  # 50 % of 4
    assert len(pool.in_rotation(0)) == 2
    one = _checked(1)
    only = one.pods["10.0.0.0:8000"]
    one.request_failed(only, 0)
    assert one.request_failed(only, 0)  # one pod always may be ejected ...


def test_panic_routes_to_every_pod_that_accepts_connections() -> None:
    pool = _checked(4)
    pods = list(pool.pods.values())
    for pod in pods[:3]:
        for _ in range(3):
            pool.health_result(pod, False, "timeout")  # busy: /health answers too late
    assert _keys(pool.in_rotation(0)) == {"10.0.0.3"}
    assert pool.panicking(0)
    assert _keys(pool.candidates(set(), 0)) == {"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3"}
    pool.health_result(pods[0], False, "refused")  # nothing listens: never a candidate
    assert _keys(pool.candidates(set(), 0)) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    for pod in pods[1:3]:
        pool.health_result(pod, True)
    assert not pool.panicking(0)  # 3 of 4 in rotation
    assert _keys(pool.candidates(set(), 0)) == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


def test_every_pod_ejected_still_serves_through_panic() -> None:
    pool = _checked(2, Overload(eject_after_failures=1, max_ejection_percent=100))
    for pod in pool.pods.values():
        assert pool.request_failed(pod, 0)
    assert pool.in_rotation(0) == []
    assert len(pool.candidates(set(), 0)) == 2


def test_pods_at_their_inflight_limit_are_not_candidates() -> None:
    pool = _checked(2, Overload(max_inflight_per_pod=2))
    a, b = pool.pods.values()
    a.acquire()
    a.acquire()
    assert pool.candidates(set(), 0) == [b]
    b.acquire()
    b.acquire()
    assert pool.candidates(set(), 0) == []  # the router queues
    a.release()
    assert pool.candidates(set(), 0) == [a]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("consumer_media", "pixels", "consumer_media 'pixels'"),
        ("max_ejection_percent", 101, "max_ejection_percent 101"),
        ("unhealthy_threshold", 0, "unhealthy_threshold 0"),
        ("queue_size", -1, "queue_size"),
    ],
)
def test_options_that_cannot_work_are_refused(field: str, value: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RouterOptions(**{field: value}).check()  # type: ignore[arg-type]


def test_round_robin_takes_turns_in_key_order() -> None:
    pods = list(_pool(3).pods.values())
    assert [round_robin(pods, t).key for t in range(4)] == [  # type: ignore[union-attr]
        "10.0.0.0:8000",
        "10.0.0.1:8000",
        "10.0.0.2:8000",
        "10.0.0.0:8000",
    ]
    assert round_robin([], 0) is None
