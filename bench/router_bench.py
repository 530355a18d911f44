"""Router benchmarks on loopback simulator pods: throughput, added latency, CPU and memory of
`epd-router` next to what a user would otherwise use, in one run, as ratios.

Sections (all by default; pick with --only):
- text: the same text chat requests straight to the PD simulator ("direct") and through the
  router; with --before REF also through the router of git revision REF (same engines).
- images: E -> PD image requests through the router with media sent by reference (default),
  raw (the fallback), and REF's router. Images are --image-kib of base64 data each; the
  consumer's preprocessing costs what the simulator models (--preprocess-ms of CPU per raw item
  on the engine, plus the real decoding and hashing of the data).
- overload: --overload-s of image requests at concurrency 256 against engines that preprocess
  and encode in line on their event loop (so /health answers late under load, as vLLM's does),
  counting failed requests, for the router and REF's; then the same with one of the two PD pods
  killed mid-run.
- affinity: 2 encoders with an encoder cache, half the requests repeat an earlier image; the
  router's content affinity vs round-robin (hit rate, req/s).
Each level runs --reps times, interleaved (direct, router, REF, direct, ...), and the median is
printed. With two or more cores the load generator is pinned to core 0 and every server process
to core 1 (`sched_setaffinity`), so the two columns compete for the same core the same way.
Router CPU is its utime+stime from /proc per 1,000 requests; RSS is its peak (VmHWM).

    .venv/bin/python bench/router_bench.py [--before REF] [--only text,images,...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from epd_connector.sim.localcluster import LocalCluster
from epd_connector.sim.procs import Proc

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 16, 64, 256)
QUIET = ["--log-level", "WARNING"]


# ---- load generation ---------------------------------------------------------------------------


@dataclass
class Run:
    rps: float
    latencies: list[float]
    failed: int
    errors: dict[str, int]

    def pct(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] * 1000 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1] * 1000


def _image(i: int, kib: int) -> str:
    raw = random.Random(i).randbytes(kib * 768)  # base64 makes it kib KiB
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def text_body(i: int) -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": f"bench request {i}"}],
        "max_tokens": 4,
    }


def image_body(image: str, i: int) -> dict[str, object]:
    content = [
        {"type": "text", "text": f"bench request {i}"},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


async def load(
    url: str,
    concurrency: int,
    total: int | None,
    body: Callable[[int], dict[str, object]],
    seconds: float | None = None,
) -> Run:
    """`total` requests (or as many as fit in `seconds`) with `concurrency` in flight."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(url, json=body(0)) as warm:  # open the pool first
            await warm.read()
        counter = iter(range(1, 1 << 40))
        end = time.perf_counter() + seconds if seconds else None

        async def worker() -> None:
            for i in counter:
                if total is not None and i > total:
                    return
                if end is not None and time.perf_counter() > end:
                    return
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=body(i)) as resp:
                        data = await resp.read()
                        ok = resp.status == 200
                        key = f"HTTP {resp.status}: {data[:80]!r}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    ok, key = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return Run(len(latencies) / elapsed, latencies, sum(errors.values()), errors)


# ---- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pin(core: int) -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def before_env(ref: str | None) -> dict[str, str] | None:
    """PYTHONPATH of REF's connector sources (exported with git archive), or None."""
    if ref is None:
        return None
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    out = Path(tempfile.gettempdir()) / f"epd-router-{sha}"
    if not out.exists():
        out.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "connector/src"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return {"PYTHONPATH": str(out / "connector" / "src")}


@dataclass
class Target:
    name: str
    url: str
    proc: Proc | None  # the router process (None: direct to the engine)


def cluster(workdir: Path, **kwargs: object) -> LocalCluster:
    pin(1)  # every server process inherits core 1
    c = LocalCluster(workdir, router_args=QUIET, **kwargs)  # type: ignore[arg-type]
    c.start()
    return c


def _targets(c: LocalCluster, ref: str | None, *variants: tuple[str, list[str]]) -> list[Target]:
    assert c.router is not None
    out = []
    pin(1)  # routers started here share the engines' core too
    for i, (name, args) in enumerate(variants):
        proc = c.router if i == 0 else c.add_router(*QUIET, *args, name=name, wait_rotation=True)
        out.append(Target(name, proc.url + "/v1/chat/completions", proc))
    if ref is not None:
        proc = c.add_router(*QUIET, name="before", wait_rotation=True, env=before_env(ref))
        out.append(Target(f"router@{ref}", proc.url + "/v1/chat/completions", proc))
    pin(0)
    return out


async def compare(
    targets: list[Target],
    levels: tuple[int, ...],
    reps: int,
    per_level: int,
    body: Callable[[int], dict[str, object]],
) -> None:
    """Interleaved runs per level; prints medians and ratios against the first target."""
    head = f"{'conc':>5} " + " ".join(f"{t.name + ' req/s':>22}" for t in targets)
    head += "  " + " ".join(f"{'/' + targets[0].name:>12}" for _ in targets[1:])
    head += "   p50/p99 ms per target"
    print(head)
    cpu: dict[str, list[float]] = {t.name: [] for t in targets}
    for c in levels:
        n = max(per_level, 4 * c)
        runs: dict[str, list[Run]] = {t.name: [] for t in targets}
        for _ in range(reps):
            for t in targets:
                cpu0 = cpu_seconds(t.proc.popen.pid) if t.proc else 0.0
                run = await load(t.url, c, n, body)
                if t.proc:
                    cpu[t.name].append((cpu_seconds(t.proc.popen.pid) - cpu0) / n * 1000)
                if run.failed:
                    print(f"  ! {t.name} c{c}: {run.failed} failed {run.errors}")
                runs[t.name].append(run)
        med = {k: statistics.median(r.rps for r in v) for k, v in runs.items()}
        lat = {k: statistics.median(r.pct(50) for r in v) for k, v in runs.items()}
        lat99 = {k: statistics.median(r.pct(99) for r in v) for k, v in runs.items()}
        base = targets[0].name
        line = f"{c:>5} " + " ".join(f"{med[t.name]:>22.0f}" for t in targets)
        line += "  " + " ".join(f"{med[t.name] / med[base]:>12.2f}" for t in targets[1:])
        line += "   " + "  ".join(f"{lat[t.name]:.2f}/{lat99[t.name]:.2f}" for t in targets)
        print(line, flush=True)
    for t in targets:
        if t.proc is not None:
            print(
                f"  {t.name}: {statistics.median(cpu[t.name]):.2f} CPU-s per 1,000 requests "
                f"(median over levels), peak RSS {peak_rss_mib(t.proc.popen.pid):.0f} MiB"
            )


# ---- sections ----------------------------------------------------------------------------------


async def text(args: argparse.Namespace, workdir: Path) -> None:
    print("\n== text: direct to the PD simulator vs through the router ==")
    c = cluster(workdir / "text", encoders=1, decodes=1)
    try:
        pin(0)
        pd = c.sims("decode")[0]
        routers = _targets(c, args.before, ("router", []))
        direct = Target("direct", pd.url + "/v1/chat/completions", None)
        await compare([direct, *routers], args.levels, args.reps, args.requests, text_body)
        for r in routers:
            assert r.proc is not None
        print("  added latency = router p50/p99 - direct p50/p99 at the same level")
    finally:
        c.stop()


async def images(args: argparse.Namespace, workdir: Path) -> None:
    print(
        f"\n== images: E -> PD, {args.image_kib} KiB images, {args.preprocess_ms} ms modelled "
        "preprocessing per raw item on the engine =="
    )
    pre = ["--preprocess-cpu-s", str(args.preprocess_ms / 1000)]
    c = cluster(workdir / "images", encoders=1, decodes=1, sim_args={"decode": pre})
    try:
        pin(0)
        pool = [_image(i, args.image_kib) for i in range(64)]
        routers = _targets(
            c, args.before, ("by-reference", []), ("raw", ["--consumer-media", "raw"])
        )
        await compare(
            routers,
            args.levels[:3],
            args.reps,
            args.requests // 2,
            lambda i: image_body(pool[i % len(pool)], i),
        )
    finally:
        c.stop()


async def overload(args: argparse.Namespace, workdir: Path) -> None:
    print(
        f"\n== overload: {args.overload_s:.0f} s of image requests at concurrency 256; engines "
        f"spend {args.preprocess_ms} ms preprocessing + {args.encode_ms} ms encoding per item "
        "in line, so /health answers late while they are busy (like vLLM's API server) =="
    )
    work = ["--preprocess-cpu-s", str(args.preprocess_ms / 1000)]
    enc = [*work, "--encode-cpu-s", str(args.encode_ms / 1000)]
    c = cluster(
        workdir / "overload",
        encoders=2,
        decodes=2,
        sim_args={"encoder": enc, "decode": work},
        push_wait_timeout_s=60.0,  # vLLM's default; the tests' 5 s would fail queued pushes
    )
    try:
        pin(0)
        targets = _targets(c, args.before, ("router", []))
        pool = [_image(i, 16) for i in range(64)]
        for t in targets:
            run = await load(
                t.url, 256, None, lambda i: image_body(pool[i % 64], i), args.overload_s
            )
            print(
                f"  {t.name}: {len(run.latencies) + run.failed} requests, {run.failed} failed, "
                f"{run.rps:.0f} req/s, p99 {run.pct(99):.0f} ms {_first(run.errors)}"
            )
        print("  one of the two PD pods killed after a third of the run:")
        t = targets[0]
        task = asyncio.create_task(
            load(t.url, 256, None, lambda i: image_body(pool[i % 64], i), args.overload_s)
        )
        await asyncio.sleep(args.overload_s / 3)
        c.kill("decode-1")
        run = await task
        print(
            f"  {t.name}: {len(run.latencies) + run.failed} requests, {run.failed} failed "
            f"{run.errors}"
        )
    finally:
        c.stop()


async def affinity(args: argparse.Namespace, workdir: Path) -> None:
    print(
        "\n== affinity: 2 encoders with an encoder cache of 16 items each, 50 % of requests "
        "repeat one of the last 32 images, "
        f"{args.encode_ms} ms encode CPU per miss =="
    )
    enc = ["--encoder-cache-items", "16", "--encode-cpu-s", str(args.encode_ms / 1000)]
    c = cluster(workdir / "affinity", encoders=2, decodes=1, sim_args={"encoder": enc})
    try:
        pin(0)
        targets = _targets(
            c, None, ("affinity", []), ("round-robin", ["--encoder-routing", "round-robin"])
        )
        rng = random.Random(7)
        seen: list[int] = []

        def body(i: int) -> dict[str, object]:
            if seen and rng.random() < 0.5:
                n = rng.choice(seen[-32:])  # a recent image: still cached somewhere
            else:
                n = 10_000 + i
                seen.append(n)
            return image_body(_image(n, 8), i)

        for t in targets:
            before = {k: _cache(c, k) for k in ("hit", "miss")}
            run = await load(t.url, 16, args.requests, body)
            hits = _cache(c, "hit") - before["hit"]
            misses = _cache(c, "miss") - before["miss"]
            print(
                f"  {t.name:>11}: {run.rps:6.0f} req/s, encoder cache hit rate "
                f"{hits / max(1, hits + misses):.0%} ({hits:.0f} hits, {misses:.0f} misses)"
            )
    finally:
        c.stop()


def _first(errors: dict[str, int]) -> dict[str, int]:
    return dict(list(errors.items())[:2])


def _cache(c: LocalCluster, result: str) -> float:
    return sum(
        c.metrics(p).get(f"epd_sim_encoder_cache_total{{result={result}}}", 0.0)
        for p in c.sims("encoder")
    )


SECTIONS = {"text": text, "images": images, "overload": overload, "affinity": affinity}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", help="git revision whose router to run side by side")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--requests", type=int, default=400, help="requests per run (at least 4 x c)")
    p.add_argument("--levels", default="1,16,64,256")
    p.add_argument("--image-kib", type=int, default=256)
    p.add_argument("--preprocess-ms", type=float, default=5.0)
    p.add_argument("--encode-ms", type=float, default=5.0)
    p.add_argument("--overload-s", type=float, default=60.0)
    p.add_argument("--quick", action="store_true", help="1 rep, fewer requests, 10 s overload")
    args = p.parse_args()
    args.levels = tuple(int(x) for x in args.levels.split(","))
    if args.quick:
        args.reps, args.requests, args.overload_s = 1, 100, 10.0
    workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    for name in args.only.split(","):
        asyncio.run(SECTIONS[name](args, workdir))
        pin_all()


def pin_all() -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


if __name__ == "__main__":
    main()
