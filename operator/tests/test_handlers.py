"""handlers: which kopf handlers exist, kopf's settings, and the serialisation of passes.

The handlers' behaviour on a real apiserver is e2e/test_operator.py; here: the registry holds
exactly the triggers the design names, no handler makes kopf add a finalizer, kopf's
bookkeeping uses our prefix, and `Runtime.run` serialises and coalesces per object.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from epd_operator.api import constants as c
from epd_operator.api.admission import WEBHOOK_ID
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.handlers import Options, Runtime, configure, connection_info, register
from epd_operator.handlers.admission import register_admission
from epd_operator.handlers.runtime import cause_of
from epd_operator.reconcile import core
from epd_operator.reconcile.kube import Kube


@pytest.fixture
def runtime() -> Runtime:
    return Runtime(
        Kube(lambda *a: (200, b"{}")), OperatorConfig.from_env({}), Options(resync_seconds=5)
    )


def test_registered_triggers(runtime: Runtime) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    # No kopf change handler: create / update / resume come from the event handler
    # (runtime.cause_of), so kopf writes no diff-base or progress annotations.
    assert list(registry._changing.get_all_handlers()) == []
    watching = {
        (h.selector.group, h.selector.any_name): h
        for h in registry._watching.get_all_handlers()
        if h.selector
    }
    # kopf watches EPDClusters only: children reach the runtime through its own caches
    # (reconcile.cache), one watch per kind for both the triggers and what passes observe.
    assert set(watching) == {(c.GROUP, c.PLURAL)}
    activities = sorted(str(h.activity) for h in registry._activities.get_all_handlers())
    assert activities == ["authentication", "cleanup", "probe", "startup"]


def test_no_handler_makes_kopf_add_a_finalizer(runtime: Runtime) -> None:
    # Timers/daemons (spawning handlers) and deletion handlers would: then an EPDCluster could
    # not be deleted while the operator is down.
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    assert list(registry._spawning.get_all_handlers()) == []
    assert not any(h.requires_finalizer for h in registry._changing.get_all_handlers())


def test_settings_use_our_prefix_and_post_no_kopf_events() -> None:
    settings = kopf.OperatorSettings()
    configure(settings, Options(workers=3))
    assert settings.persistence.finalizer == f"{c.KOPF_PREFIX}/finalizer"
    assert settings.posting.enabled is False
    assert settings.peering.standalone is True
    assert settings.scanning.disabled is True
    assert settings.execution.max_workers == 3
    assert dict(settings.watching.label_selectors) == {}  # kopf watches no child kind


def obj(generation: int = 1, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": "a", "name": "a", "namespace": "ns", "generation": generation, **meta},
        "spec": {"model": {"name": "m"}},
    }


CAUSES: list[tuple[str, dict[str, Any] | None, dict[str, Any], bool, str | None]] = [
    ("first-in-a-listing", None, obj(), True, "resume"),
    ("first-in-the-stream", None, obj(), False, "create"),
    ("spec-changed", obj(1), obj(2), False, "update"),
    ("changed-while-the-watch-was-down", obj(1), obj(2), True, "update"),
    ("label-added", obj(), obj(labels={"team": "a"}), False, "update"),
    (
        "annotation-changed",
        obj(annotations={"x": "1"}),
        obj(annotations={"x": "2"}),
        False,
        "update",
    ),
    ("status-written", obj(), {**obj(), "status": {"phase": "Ready"}}, False, None),
    ("resource-version-only", obj(resourceVersion="1"), obj(resourceVersion="2"), False, None),
    ("relisted-unchanged", obj(), obj(), True, None),
]


@pytest.mark.parametrize(
    ("held", "new", "listed", "want"),
    [row[1:] for row in CAUSES],
    ids=[row[0] for row in CAUSES],
)
def test_cause_of_an_epdcluster_event(
    held: dict[str, Any] | None, new: dict[str, Any], listed: bool, want: str | None
) -> None:
    assert cause_of(held, new, listed) == want


def test_the_event_handler_keeps_the_newest_body_and_queues_what_it_causes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    (handler,) = registry._watching.get_all_handlers()
    event_fn = cast("Callable[..., Awaitable[None]]", handler.fn)
    queued: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "trigger", lambda trigger, uid: queued.append((trigger, uid)))

    async def event(type_: str | None, body: dict[str, Any]) -> None:
        managed = {**body, "metadata": {**body["metadata"], "managedFields": [{"manager": "x"}]}}
        await event_fn(type=type_, uid="a", body=managed)

    async def scenario() -> None:
        await event(None, obj(1))  # listed at start
        await event("MODIFIED", {**obj(1), "status": {"phase": "Ready"}})  # our own write
        await event("MODIFIED", obj(2))  # a user's edit
        assert runtime.newest("a") == obj(2)  # managedFields are not kept
        await event("DELETED", obj(2))

    asyncio.run(scenario())
    assert queued == [("resume", "a"), ("update", "a")]
    assert runtime.newest("a") is None
    runtime.close()


def test_passes_of_one_object_never_overlap_and_extra_pokes_coalesce(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    calls: list[str] = []
    lock = threading.Lock()

    def slow_reconcile(
        kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None
    ) -> core.Outcome:
        uid = obj["metadata"]["uid"]
        with lock:
            running[uid] = running.get(uid, 0) + 1
            peak[uid] = max(peak.get(uid, 0), running[uid])
            calls.append(uid)
        time.sleep(0.05)
        with lock:
            running[uid] -= 1
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", slow_reconcile)

    def body(uid: str) -> Any:
        return lambda: {"metadata": {"uid": uid, "name": uid, "namespace": "ns"}}

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(
            runtime.run("create", "a", body("a")),
            runtime.run("child", "a", body("a"), coalesce=True),
            runtime.run("child", "a", body("a"), coalesce=True),  # adds nothing
            runtime.run("resync", "a", body("a"), coalesce=True),  # adds nothing
            runtime.run("create", "b", body("b")),
        )

    results = asyncio.run(scenario())
    assert peak == {"a": 1, "b": 1}
    assert sorted(calls) == ["a", "a", "b"]  # the create + one coalesced follow-up
    assert sum(r is None for r in results) == 2
    runtime.close()


def test_an_object_cause_that_joins_a_waiting_pass_names_it(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a restart a child event's pass may already wait when the object is first listed:
    # that pass is the object's resume (e2e test 5 counts resumes), not a second pass.
    def quick_reconcile(
        kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None
    ) -> core.Outcome:
        time.sleep(0.05)
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", quick_reconcile)

    def body() -> Any:
        return {"metadata": {"uid": "a", "name": "a", "namespace": "ns"}}

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(
            runtime.run("update", "a", body),  # runs
            runtime.run("child", "a", body, coalesce=True),  # waits
            runtime.run("resume", "a", body, coalesce=True),  # joins it and names it
            runtime.run("resync", "a", body, coalesce=True),  # joins; the name stays
        )

    results = asyncio.run(scenario())
    assert sum(r is None for r in results) == 2

    def passes(trigger: str) -> float:
        value = runtime.metrics.registry.get_sample_value(
            "epd_operator_reconcile_duration_seconds_count", {"trigger": trigger}
        )
        return value or 0.0

    assert [passes(t) for t in ("update", "resume", "child", "resync")] == [1, 1, 0, 0]
    runtime.close()


def test_the_admission_webhook_handler_validates_epdclusters_only() -> None:
    registry = kopf.OperatorRegistry()
    register_admission(registry)
    (handler,) = registry._webhooks.get_all_handlers()
    assert handler.id == WEBHOOK_ID
    assert handler.selector is not None
    assert (handler.selector.group, handler.selector.any_name) == (c.GROUP, c.PLURAL)
    assert sorted(handler.operations or ()) == ["CREATE", "UPDATE"]


def test_a_burst_of_child_events_for_one_object_does_not_starve_another(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the caches produce when one EPDCluster's children churn: many pokes for it. They
    # coalesce into at most one running and one waiting pass, so another object's pass waits
    # behind two passes at most, not behind the whole burst.
    order: list[str] = []

    def reconcile_once(
        kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None
    ) -> core.Outcome:
        order.append(obj["metadata"]["uid"])
        time.sleep(0.01)
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", reconcile_once)

    def body(uid: str) -> Any:
        return lambda: {"metadata": {"uid": uid, "name": uid, "namespace": "ns"}}

    async def scenario() -> None:
        burst = [runtime.run("child", "a", body("a"), coalesce=True) for _ in range(200)]
        await asyncio.gather(*burst, runtime.run("create", "b", body("b")))

    asyncio.run(scenario())
    assert order.count("a") <= 2
    assert order.count("b") == 1
    runtime.close()


def test_a_child_change_seen_by_the_caches_runs_a_pass_of_its_owner(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, Any]] = []

    def record(kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None) -> core.Outcome:
        ran.append((obj["metadata"]["uid"], cache))
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", record)
    runtime.remember("u1", {"metadata": {"uid": "u1", "name": "demo", "namespace": "ns"}})

    async def scenario() -> None:
        runtime.poke_owner("ns", "demo")
        runtime.poke_owner("ns", "unknown")  # not an EPDCluster we serve: nothing
        await asyncio.gather(*runtime._tasks)

    asyncio.run(scenario())
    assert ran == [("u1", runtime.caches)]  # the pass observes through the caches
    runtime.close()


@pytest.mark.parametrize(("debounce", "passes"), [(0.0, 3), (0.3, 1)])
def test_child_events_in_quick_succession_make_one_pass(
    monkeypatch: pytest.MonkeyPatch, debounce: float, passes: int
) -> None:
    ran: list[str] = []

    def record(kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None) -> core.Outcome:
        ran.append(obj["metadata"]["uid"])
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", record)
    rt = Runtime(
        Kube(lambda *a: (200, b"{}")),
        OperatorConfig.from_env({}),
        Options(child_debounce_s=debounce),
    )

    def body() -> Any:
        return {"metadata": {"uid": "a", "name": "a", "namespace": "ns"}}

    async def scenario() -> None:
        tasks = []
        for _ in range(3):  # three status changes of a rolling update, 0.1 s apart
            tasks.append(asyncio.ensure_future(rt.run("child", "a", body, coalesce=True)))
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert len(ran) == passes
    rt.close()


def test_the_event_handler_queues_the_pass_and_returns_at_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The event handler must not hold kopf's event while the pass waits for a worker: it
    # returns while the pass is still running, and a change that comes meanwhile queues one
    # more pass, which reads the newest body.
    release = threading.Event()
    seen: list[str] = []

    def blocked(kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None) -> core.Outcome:
        release.wait(10)
        seen.append(obj["spec"]["v"])
        return core.Outcome()

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", blocked)
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    (handler,) = registry._watching.get_all_handlers()
    # Called with the arguments it reads, not kopf's whole set.
    event = cast("Callable[..., Awaitable[None]]", handler.fn)

    async def scenario() -> None:
        for v in ("1", "2"):
            meta = {"uid": "u", "name": "a", "namespace": "ns", "generation": int(v)}
            body = {"metadata": meta, "spec": {"v": v}}
            await asyncio.wait_for(event(type="MODIFIED", body=body, uid="u"), timeout=1)
            await asyncio.sleep(0.05)
        assert seen == []  # both handlers returned while the first pass is still blocked
        release.set()
        while len(seen) < 2:
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert seen == ["1", "2"]
    runtime.close()


def test_kopf_logs_in_with_what_reconcile_login_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source of credentials for both clients: kopf's watches get login.login()'s answer,
    and a kubeconfig it refuses is kopf's LoginError, with the same message."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cfg = {
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://10.0.0.1:6443",
                    "certificate-authority-data": base64.b64encode(pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": "t0"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "n"}}],
        "current-context": "x",
    }
    (tmp_path / "kc").write_text(yaml.safe_dump(cfg))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc"))
    info = connection_info()
    assert (info.server, info.token, info.ca_data, info.default_namespace) == (
        "https://10.0.0.1:6443",
        "t0",
        pem,
        "n",
    )
    assert info.as_http_headers() == {"Authorization": "Bearer t0"}
    cfg["users"] = [{"name": "u", "user": {"exec": {"command": "x"}}}]
    (tmp_path / "kc").write_text(yaml.safe_dump(cfg))
    with pytest.raises(kopf.LoginError, match="user 'u' authenticates with 'exec'"):
        connection_info()
