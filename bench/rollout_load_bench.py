"""A rollout under load on the data plane: failed requests and latency before / during / after,
for our rollout path next to what a plain setup does, in one run.

Two revisions of one E/PD cluster run as simulator processes on loopback (2 encoders + 2 PD
each). Their wiring differs the way a real change does (the EC control port moved), so a
request that pairs an encoder of one revision with a consumer of the other pushes its encoder
output to the wrong port and fails. A steady load of image chat requests runs throughout
(--clients at once, a new image each); the old revision's pods are then taken down one per role
at a time, as a rollout step with maxUnavailable 1 does:

- **ours**: the routing table lists each revision with its pods (revision-pinned routing); an
  old pod leaves the table (its Service) and runs the real preStop hook (`epd-engine --drain`)
  before it gets SIGTERM; its replacement of revision B then joins B's entry.
- **plain**: the table lists one revision with every pod in it and the old launch config (what
  a router without revisions knows through the role Services), and an old pod gets SIGTERM as
  it leaves, as a pod without a preStop hook does; its replacement joins the same list.

Printed per scenario: requests, failed, p50/p99 latency in each phase. The load generator is
pinned to core 0 and the servers to core 1 where there are two cores.

    .venv/bin/python bench/rollout_load_bench.py [--clients 8] [--steady-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.routing import RevisionRoute, RoutingTable, wiring_revision
from epd_connector.sim.localcluster import LocalCluster
from epd_connector.sim.procs import Proc, start_router

EPD_ENGINE = shutil.which("epd-engine", path=str(Path(sys.executable).parent))
QUIET = ["--log-level", "WARNING"]
ROLES = ("encoder", "decode")


@dataclass
class Sample:
    at: float
    latency: float
    ok: bool


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    stop: bool = False


def _pin(core: int) -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def _image(n: int) -> str:
    return "data:image/png;base64," + base64.b64encode(f"pixels:{n}".encode() * 64).decode()


async def _client(url: str, load: Load, seq: list[int]) -> None:
    async with aiohttp.ClientSession() as session:
        while not load.stop:
            seq[0] += 1
            body = {
                "model": "Qwen/Qwen3-VL-8B-Instruct",
                "max_tokens": 4,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "describe"},
                            {"type": "image_url", "image_url": {"url": _image(seq[0])}},
                        ],
                    }
                ],
            }
            t0 = time.monotonic()
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            load.samples.append(Sample(t0, time.monotonic() - t0, ok))


def _route(c: LocalCluster, pods: dict[str, list[Proc]]) -> RevisionRoute:
    cfg = LaunchConfig.model_validate(c.config)
    static = {r: [f"{p.host}:{p.port}" for p in pods[r]] for r in ROLES}
    return RevisionRoute(wiring=wiring_revision(cfg), config=cfg, static=static)


def _write(path: Path, *routes: RevisionRoute) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(RoutingTable(revisions=list(routes)).to_json())
    tmp.replace(path)


def _drain(c: LocalCluster, pod: Proc, budget_s: int) -> subprocess.Popen[bytes]:
    assert EPD_ENGINE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPD_", "POD_"))}
    env.update(
        EPD_LAUNCH_CONFIG=str(c.workdir / "launch.json"),
        EPD_ROLE=pod.role,
        POD_IP=pod.host,
        POD_NAME=pod.name,
        POD_NAMESPACE="default",
        EPD_DRAIN_SECONDS=str(budget_s),
    )
    return subprocess.Popen([EPD_ENGINE, "--drain"], env=env, stderr=subprocess.DEVNULL)


def _clusters(root: Path) -> tuple[LocalCluster, LocalCluster]:
    args = dict.fromkeys(ROLES, QUIET)
    a = LocalCluster(root / "a", encoders=2, decodes=2, push_wait_timeout_s=2.0, sim_args=args)
    b = LocalCluster(root / "b", encoders=2, decodes=2, push_wait_timeout_s=2.0, sim_args=args)
    return a, b


def _steps(a: LocalCluster) -> list[list[Proc]]:
    """One old pod per role per step (maxUnavailable 1), the highest ordinal first."""
    enc, dec = a.sims("encoder")[::-1], a.sims("decode")[::-1]
    return [[e, d] for e, d in zip(enc, dec, strict=True)]


def _plain_route(a: LocalCluster, pods: dict[str, list[Proc]]) -> RevisionRoute:
    """One revision ("") holding whatever pods exist, with the old launch config: what a
    router without revisions knows through the role Services during a plain rolling update."""
    route = _route(a, pods)
    return RevisionRoute(wiring="", config=route.config, static=route.static)


def scenario(name: str, root: Path, clients: int, steady_s: float) -> dict[str, object]:
    a, b = _clusters(root / name)
    with a, b:
        table = root / name / "routing.json"
        old = {r: list(a.sims(r)) for r in ROLES}
        new: dict[str, list[Proc]] = {r: [] for r in ROLES}

        def publish() -> None:
            if name == "ours":
                routes = [_route(a, old)] if any(old.values()) else []
                _write(table, *routes, _route(b, new))
            else:
                _write(table, _plain_route(a, {r: old[r] + new[r] for r in ROLES}))

        publish()
        router = start_router(
            a.group,
            a.workdir / "launch.json",
            [],
            [*QUIET, "--routing-file", str(table), "--dns-refresh-s", "1"],
            name="bench-router",
            wait_rotation=False,
        )
        if (os.cpu_count() or 1) >= 2:
            for proc in a.group.procs:
                os.sched_setaffinity(proc.popen.pid, {1})
        time.sleep(2.0)  # health checks put the pods in rotation
        load = Load()
        seq = [0]

        async def drive() -> dict[str, float]:
            marks: dict[str, float] = {}
            tasks = [asyncio.create_task(_client(router.url, load, seq)) for _ in range(clients)]
            await asyncio.sleep(steady_s)
            marks["rollout"] = time.monotonic()
            replacements = {r: list(b.sims(r)) for r in ROLES}
            for step in _steps(a):
                for pod in step:
                    old[pod.role].remove(pod)
                publish()  # the terminating pods leave their Services
                if name == "ours":
                    # Their preStop hook drains them before SIGTERM.
                    hooks = [_drain(a, pod, 30) for pod in step]
                    await asyncio.gather(*(asyncio.to_thread(h.wait) for h in hooks))
                await asyncio.gather(*(asyncio.to_thread(a.group.stop_one, pod) for pod in step))
                for pod in step:
                    new[pod.role].append(replacements[pod.role].pop(0))
                publish()  # the replacements are up (started and ready beforehand)
                await asyncio.sleep(2.0)  # the router checks them in; the next step follows
            marks["after"] = time.monotonic()
            await asyncio.sleep(steady_s)
            load.stop = True
            await asyncio.gather(*tasks)
            return marks

        marks = asyncio.run(drive())
    out: dict[str, object] = {}
    phases = {
        "before": (0.0, marks["rollout"]),
        "during": (marks["rollout"], marks["after"]),
        "after": (marks["after"], float("inf")),
    }
    for phase, (lo, hi) in phases.items():
        got = [s for s in load.samples if lo <= s.at < hi]
        lat = sorted(s.latency for s in got if s.ok)
        out[phase] = {
            "requests": len(got),
            "failed": sum(not s.ok for s in got),
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        }
    out["rollout_s"] = marks["after"] - marks["rollout"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steady-s", type=float, default=10.0)
    args = p.parse_args()
    _pin(0)
    with tempfile.TemporaryDirectory(prefix="rollout-load-") as tmp:
        results = {
            n: scenario(n, Path(tmp), args.clients, args.steady_s) for n in ("ours", "plain")
        }
    print(f"rollout under load: {args.clients} clients, image chat requests, 2E+2PD -> 2E+2PD")
    print(f"{'scenario':8} {'phase':7} {'requests':>8} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for n, res in results.items():
        for phase in ("before", "during", "after"):
            r = res[phase]
            assert isinstance(r, dict)
            print(
                f"{n:8} {phase:7} {r['requests']:8d} {r['failed']:7d} {r['p50_ms']:8.1f} "
                f"{r['p99_ms']:8.1f}"
            )
        print(f"{n:8} rollout took {res['rollout_s']:.1f} s")
    ours, plain = results["ours"]["during"], results["plain"]["during"]
    assert isinstance(ours, dict)
    assert isinstance(plain, dict)
    print(
        f"during the rollout: failed {ours['failed']} (ours) vs {plain['failed']} (plain); "
        f"p99 ours/plain = {ours['p99_ms'] / plain['p99_ms']:.2f}"
    )
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
