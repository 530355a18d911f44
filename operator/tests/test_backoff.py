"""reconcile.backoff on a fake clock, and the runtime's use of it: a failing object is retried
with exponential, jittered, capped delays, skipped by resync/child triggers until its retry is
due, and forgotten after a successful pass; the EPDCluster is written only when its status
changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.handlers import Options, Runtime
from epd_operator.reconcile import core
from epd_operator.reconcile.backoff import Backoff, BackoffPolicy
from epd_operator.reconcile.kube import Kube


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("policy", "u", "delays"),
    [
        (BackoffPolicy(base_s=1, factor=2, cap_s=30, jitter=0.0), 0.0,
         [1, 2, 4, 8, 16, 30, 30, 30]),
        (BackoffPolicy(base_s=1, factor=2, cap_s=30, jitter=0.5), 0.999999,
         [0.5, 1, 2, 4, 8, 15, 15, 15]),
        (BackoffPolicy(base_s=5, factor=3, cap_s=300, jitter=0.2), 0.5,
         [4.5, 13.5, 40.5, 121.5, 270, 270]),
    ],
)  # fmt: skip
def test_delays_grow_exponentially_to_the_cap(
    policy: BackoffPolicy, u: float, delays: list[float]
) -> None:
    clock = FakeClock()
    backoff = Backoff(policy, clock=clock, rand=lambda: u)
    got = [backoff.failed("a").delay_s for _ in delays]
    assert got == pytest.approx(delays, rel=1e-5)


def test_jitter_spreads_retries_within_bounds() -> None:
    draws = iter([0.0, 0.25, 0.5, 0.75, 0.999])
    policy = BackoffPolicy(base_s=8, factor=2, cap_s=8, jitter=0.5)
    backoff = Backoff(policy, clock=FakeClock(), rand=lambda: next(draws))
    got = [backoff.failed(uid).delay_s for uid in "abcde"]
    assert len(set(got)) == 5
    assert all(4 < d <= 8 for d in got)


def test_due_follows_the_clock_and_success_resets() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(base_s=10, jitter=0), clock=clock, rand=lambda: 0)
    assert backoff.due("a")
    state = backoff.failed("a")
    assert (state.attempts, state.next_at) == (1, 1010.0)
    assert not backoff.due("a")
    clock.now = 1010.0
    assert backoff.due("a")
    assert backoff.failed("a").attempts == 2
    assert backoff.succeeded("a")
    assert backoff.state("a") is None
    assert not backoff.succeeded("a")
    assert backoff.failed("a").delay_s == 10  # back to the base delay


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="invalid backoff policy"):
        BackoffPolicy(base_s=0)
    with pytest.raises(ValueError, match="invalid backoff policy"):
        BackoffPolicy(jitter=1.0)


def body(uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": "c", "namespace": "ns"}}


def test_runtime_retries_with_backoff_and_skips_look_again_triggers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    outcomes = [core.Outcome(retry=True), core.Outcome(retry=True), core.Outcome()]
    calls: list[str] = []

    def fake_reconcile(
        kube: Any, obj: Any, cfg: Any, memory: Any, cache: Any = None
    ) -> core.Outcome:
        calls.append(obj["metadata"]["uid"])
        return outcomes[len(calls) - 1]

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", fake_reconcile)
    backoff = Backoff(BackoffPolicy(base_s=100, jitter=0), clock=clock, rand=lambda: 0)
    runtime = Runtime(
        Kube(lambda *a: (200, b"{}")), OperatorConfig.from_env({}), Options(), backoff=backoff
    )
    runtime.remember("u1", body())

    async def scenario() -> list[Any]:
        got = [await runtime.run("create", "u1", body)]
        # Failed: a retry is scheduled; resync and child pokes before it is due do nothing.
        assert set(runtime._retry_timers) == {"u1"}
        got.append(await runtime.run("resync", "u1", body, coalesce=True))
        got.append(await runtime.run("child", "u1", body, coalesce=True))
        rows = runtime.metrics.retries.source()
        assert [(r[0], r[1], r[2]) for r in rows] == [("ns", "c", 1)]
        clock.now += 100  # the retry is due
        got.append(await runtime.run("resync", "u1", body, coalesce=True))
        assert backoff.state("u1").attempts == 2  # type: ignore[union-attr]
        assert backoff.state("u1").delay_s == 200  # type: ignore[union-attr]
        # A change of the EPDCluster itself runs at once, and its success resets everything.
        got.append(await runtime.run("update", "u1", body))
        assert runtime._retry_timers == {}
        assert runtime.metrics.retries.source() == []
        return got

    results = asyncio.run(scenario())
    assert [r is None for r in results] == [False, True, True, False, False]
    assert calls == ["u1", "u1", "u1"]
    assert backoff.state("u1") is None
    runtime.close()


def test_a_crashing_pass_is_retried_with_backoff_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(*_: Any, **__: Any) -> core.Outcome:
        raise RuntimeError("boom")

    monkeypatch.setattr("epd_operator.handlers.runtime.reconcile", crash)
    runtime = Runtime(Kube(lambda *a: (200, b"{}")), OperatorConfig.from_env({}), Options())

    async def scenario() -> Any:
        return await runtime.run("create", "u1", body)

    assert asyncio.run(scenario()) is None
    assert runtime.backoff.state("u1").attempts == 1  # type: ignore[union-attr]
    runtime.close()
