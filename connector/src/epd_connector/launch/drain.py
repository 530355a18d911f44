"""`epd-engine --drain`: an engine pod's preStop hook. Leave rotation, finish, then exit.

Why: when a pod is told to terminate (a rollout step, a node drain, a scale-down) the kubelet
runs the preStop hook before SIGTERM. vLLM stops accepting and aborts what it is doing on
SIGTERM, which would cut the requests, EC pushes and KV pulls in flight. Kubernetes takes a
terminating pod out of its Services at once, and the router stops sending it new work within a
DNS refresh. So the hook first waits `settle_s` (longer than the router's refresh), then polls
the engine's own Prometheus gauges, `vllm:num_requests_running` + `vllm:num_requests_waiting`,
until they read 0 twice in a row (a KV producer's request stays running until its KV was
pulled), bounded by the role's drain budget (EPD_DRAIN_SECONDS); then SIGTERM follows.
The loop takes its clock, sleep and fetch as arguments so the tests drive it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

ENV_DRAIN_SECONDS = "EPD_DRAIN_SECONDS"
DEFAULT_DRAIN_SECONDS = 30
SETTLE_S = 5.0  # > the router's default DNS refresh (3 s): no new work arrives after this
POLL_S = 0.5
BUSY_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")


def busy(metrics_text: str) -> float:
    """Requests the engine still holds: the sum of BUSY_GAUGES over all their label sets."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in BUSY_GAUGES:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return total


@dataclass(frozen=True)
class Outcome:
    drained: bool  # False: the budget ran out (or the engine stopped answering first)
    waited_s: float
    last_busy: float | None  # None: the engine's metrics could not be read


def drain(
    fetch: Callable[[], str],
    budget_s: float,
    *,
    settle_s: float = SETTLE_S,
    poll_s: float = POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Wait until the engine holds no request (seen twice), at most `budget_s` in all."""
    start = clock()
    sleep(min(settle_s, budget_s))
    idle_reads = 0
    last: float | None = None
    while True:
        try:
            last = busy(fetch())
        except (OSError, urllib.error.URLError):
            # Nothing answers: nothing is left to finish here.
            return Outcome(drained=True, waited_s=clock() - start, last_busy=None)
        idle_reads = idle_reads + 1 if last == 0 else 0
        if idle_reads >= 2:
            return Outcome(drained=True, waited_s=clock() - start, last_busy=last)
        if clock() - start >= budget_s:
            return Outcome(drained=False, waited_s=clock() - start, last_busy=last)
        sleep(poll_s)


def http_fetch(host: str, port: int, timeout_s: float = 2.0) -> Callable[[], str]:
    """GET the engine's /metrics at the pod's own address (the hook runs in its container)."""
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def fetch() -> str:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return str(resp.read().decode("utf-8", "replace"))

    return fetch
