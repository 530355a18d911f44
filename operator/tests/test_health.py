"""Liveness without API requests: reconcile.health judges the watches' own signs of life (a
table on a fake clock), and the runtime's probe fails once the API refused our credentials.
The same judge against a real apiserver: operator/tests/test_cache_integration.py."""

from __future__ import annotations

import json

import pytest

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.handlers import Options, Runtime
from epd_operator.handlers.runtime import HealthError
from epd_operator.reconcile.health import QUIET_GRACE_S, WatchState, watch_problems
from epd_operator.reconcile.kube import Kube, KubeError


def state(**kw: object) -> WatchState:
    base: dict[str, object] = {
        "name": "services in ns",
        "running": True,
        "alive_at": 1000.0,
        "deadline": 5000.0,
        "error_status": None,
    }
    base.update(kw)
    return WatchState(**base)  # type: ignore[arg-type]


NOW = 1000.0 + QUIET_GRACE_S  # exactly at the end of the grace: still fine

# (what, state, now, a fragment of the problem or None when healthy)
CASES: list[tuple[str, WatchState, float, str | None]] = [
    ("a live idle watch", state(), NOW, None),
    (
        "a quiet open watch is fine until its deadline (bookmarks may skip minutes)",
        state(),
        5000.0,
        None,
    ),
    ("a stream open past its timeout is stuck", state(), 5001.0, "outlived its timeout by 1s"),
    ("the thread ended", state(running=False), NOW, "thread is not running"),
    (
        "credentials refused on the last re-list",
        state(error_status=401, deadline=None),
        NOW,
        "refused our credentials (HTTP 401)",
    ),
    (
        "forbidden (RBAC) on the last re-list",
        state(error_status=403, deadline=None),
        NOW,
        "HTTP 403",
    ),
    (
        "re-listing after a transient error, within the grace",
        state(error_status=500, deadline=None),
        NOW,
        None,
    ),
    (
        "still failing to re-list past the grace",
        state(error_status=500, deadline=None),
        NOW + 1,
        "nothing from the API for 181s (last error HTTP 500)",
    ),
    ("never listed", state(alive_at=None, deadline=None), NOW, "nothing from the API for ever"),
]


@pytest.mark.parametrize(("what", "st", "now", "problem"), CASES, ids=[c[0] for c in CASES])
def test_watch_problems(what: str, st: WatchState, now: float, problem: str | None) -> None:
    got = watch_problems([st], now)
    if problem is None:
        assert got == []
    else:
        (line,) = got
        assert line.startswith("services in ns: ")
        assert problem in line


def test_every_bad_watch_is_named() -> None:
    got = watch_problems(
        [state(name="a", running=False), state(name="b"), state(name="c", error_status=401)], NOW
    )
    assert [line.split(":")[0] for line in got] == ["a", "c"]


def runtime(status: int) -> Runtime:
    def transport(method: str, path: str, headers: object, payload: object) -> tuple[int, bytes]:
        return status, json.dumps({"message": "Unauthorized"} if status >= 400 else {}).encode()

    return Runtime(Kube(transport), OperatorConfig.from_env({}), Options())


def test_the_probe_makes_no_api_request() -> None:
    calls: list[str] = []

    def transport(method: str, path: str, headers: object, payload: object) -> tuple[int, bytes]:
        calls.append(path)
        return 500, b"{}"

    rt = Runtime(Kube(transport), OperatorConfig.from_env({}), Options())
    assert rt.check_health() == {"epdclusters": 0, "watches": 0}  # caches not started yet
    assert calls == []
    rt.close()


def test_unhealthy_once_a_request_was_refused_401_until_one_succeeds() -> None:
    rt = runtime(401)
    with pytest.raises(KubeError):
        rt.kube.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}}
        )
    with pytest.raises(HealthError, match=r"refuses our credentials.*HTTP 401"):
        rt.check_health()
    rt.kube._transport = lambda *a: (200, b"{}")  # the token works again (a new one mounted)
    rt.kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}}
    )
    assert rt.check_health()["epdclusters"] == 0
    rt.close()


def test_other_refusals_are_no_health_matter() -> None:
    rt = runtime(403)  # RBAC on one call: the pass reports it; the process is fine
    with pytest.raises(KubeError):
        rt.kube.apply(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}}
        )
    assert rt.check_health()["epdclusters"] == 0
    rt.close()
