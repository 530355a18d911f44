"""`epd-engine --drain`, the engine pods' preStop hook: tables for the gauge parsing and the
wait loop (a fake clock), and the real command against a running simulator engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from epd_connector.launch.drain import busy, drain
from epd_connector.sim.localcluster import LocalCluster, http_json

EPD_ENGINE = shutil.which("epd-engine", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0.0),
        ('vllm:num_requests_running{model_name="m"} 2.0\n', 2.0),
        (
            '# HELP vllm:num_requests_running x\nvllm:num_requests_running{a="1"} 1\n'
            'vllm:num_requests_running{a="2"} 1\nvllm:num_requests_waiting{a="1"} 3\n',
            5.0,
        ),
        # Other series, and the by-reason breakdown (already counted in waiting), do not count.
        ('vllm:num_requests_waiting_by_reason{reason="x"} 4\nvllm:gpu_cache_usage_perc 0.5\n', 0.0),
        ("vllm:num_requests_running garbage\n", 0.0),
    ],
)
def test_busy_sums_the_running_and_waiting_gauges(text: str, expected: float) -> None:
    assert busy(text) == expected


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


@pytest.mark.parametrize(
    ("reads", "budget", "drained", "waited"),
    [
        # Settles 5 s, then needs two idle reads in a row.
        ([0, 0], 30, True, 5.5),
        ([2, 1, 0, 1, 0, 0], 30, True, 7.5),
        # Busy to the end of the budget.
        ([1] * 100, 8, False, 8.0),
        # A budget below the settle time is all it waits.
        ([1] * 100, 2, False, 2.0),
    ],
)
def test_drain_waits_for_two_idle_reads_within_the_budget(
    reads: list[float], budget: float, drained: bool, waited: float
) -> None:
    clock, it = _Clock(), iter(reads)
    out = drain(
        lambda: f"vllm:num_requests_running {next(it)}\n",
        budget,
        clock=clock.now,
        sleep=clock.sleep,
    )
    assert (out.drained, out.waited_s) == (drained, waited)


def test_an_engine_that_stopped_answering_is_drained() -> None:
    def gone() -> str:
        raise ConnectionRefusedError

    clock = _Clock()
    out = drain(gone, 30, clock=clock.now, sleep=clock.sleep)
    assert (out.drained, out.last_busy) == (True, None)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("drain")),
        encoders=1,
        decodes=1,
        sim_args={"decode": ["--decode-delay-per-token-s", "0.1"]},
    )
    with c:
        yield c


def _hook(c: LocalCluster, budget_s: int) -> subprocess.Popen[str]:
    assert EPD_ENGINE is not None
    pd = c.sims("decode")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPD_", "POD_"))}
    env.update(
        EPD_LAUNCH_CONFIG=str(c.workdir / "launch.json"),
        EPD_ROLE="decode",
        POD_IP=pd.host,
        POD_NAME="sim-decode-0",
        POD_NAMESPACE="default",
        EPD_DRAIN_SECONDS=str(budget_s),
    )
    return subprocess.Popen([EPD_ENGINE, "--drain"], env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.process  # a simulator pod and `epd-engine --drain`
@pytest.mark.parametrize(
    ("tokens", "budget_s", "waits_for_request"), [(80, 60, True), (80, 2, False)]
)
def test_the_hook_returns_when_the_engine_holds_nothing_or_the_budget_is_spent(
    slow: LocalCluster, tokens: int, budget_s: int, waits_for_request: bool
) -> None:
    pd = slow.sims("decode")[0]
    finished: list[float] = []

    def request() -> None:
        body = {"model": slow.model, "prompt": "hi", "max_tokens": tokens, "ignore_eos": True}
        status, _ = http_json("POST", pd.url + "/v1/completions", body, timeout=60)
        assert status == 200
        finished.append(time.monotonic())

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.5)
    hook = _hook(slow, budget_s)
    _, err = hook.communicate(timeout=budget_s + 60)
    hook_done = bool(finished)  # had the request ended when the hook returned?
    t.join()
    assert hook.returncode == 0, err
    if waits_for_request:
        # 80 tokens x 0.1 s: the hook read the request running, then nothing left.
        assert hook_done, err
        assert "drain: done" in err
        assert "requests left: 0" in err
    else:
        # 80 tokens x 0.1 s outlive the 2 s budget: the hook gave up with the request running.
        assert not hook_done, err
        assert "drain: budget spent" in err
        assert "requests left: 1" in err
