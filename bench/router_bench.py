"""Router overhead: req/s and added latency of `epd-router` vs calling the PD simulator directly.

Starts a loopback E/PD data plane (1 encoder sim, 1 PD sim, all delays zero; real processes),
then, per concurrency level, sends the same text-only chat requests once straight to the PD sim
and once through the router, and prints req/s and p50/p99 latency of both plus the router's
added latency (router - direct). With `--images`, also the full E -> PD path through the router
(encoder call + 1 MiB Mooncake push + PD). Every process shares this machine's cores, the load
generator included, so figures are for comparing the two columns of one run.

    .venv/bin/python bench/router_bench.py [--requests-per-level N] [--images]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from epd_connector.sim.localcluster import LocalCluster

LEVELS = (1, 16, 64, 256)


def _body(i: int, image: bool) -> dict[str, object]:
    content: list[dict[str, object]] = [{"type": "text", "text": f"bench request {i}"}]
    if image:
        url = "data:image/png;base64," + base64.b64encode(f"img-{i}".encode() * 64).decode()
        content.append({"type": "image_url", "image_url": {"url": url}})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4}


async def _run_level(
    url: str, concurrency: int, total: int, image: bool
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(total))

        async def worker() -> None:
            for i in queue:
                t0 = time.perf_counter()
                async with session.post(url, json=_body(i, image)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status} from {url}")
                latencies.append(time.perf_counter() - t0)

        # warm the pools first so connection setup is not measured
        await asyncio.gather(*(worker() for _ in range(1)))
        latencies.clear()
        queue = iter(range(total))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return total / elapsed, latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def bench(cluster: LocalCluster, per_level: int, images: bool) -> None:
    pd = cluster.sims("decode")[0]
    direct, routed = pd.url + "/v1/chat/completions", cluster.url + "/v1/chat/completions"
    print(
        f"{'conc':>5} {'direct req/s':>13} {'router req/s':>13} {'ratio':>6} "
        f"{'direct p50/p99 ms':>18} {'router p50/p99 ms':>18} {'added p50/p99 ms':>17}"
    )
    for c in LEVELS:
        n = max(per_level, 4 * c)
        d_rps, d_lat = await _run_level(direct, c, n, False)
        r_rps, r_lat = await _run_level(routed, c, n, False)
        print(
            f"{c:>5} {d_rps:>13.0f} {r_rps:>13.0f} {r_rps / d_rps:>6.2f} "
            f"{_pct(d_lat, 50):>8.2f}/{_pct(d_lat, 99):<9.2f} "
            f"{_pct(r_lat, 50):>8.2f}/{_pct(r_lat, 99):<9.2f} "
            f"{_pct(r_lat, 50) - _pct(d_lat, 50):>7.2f}/{_pct(r_lat, 99) - _pct(d_lat, 99):<8.2f}"
        )
    if images:
        print("\nimage requests through the router (encoder call + 1 MiB Mooncake TCP push + PD):")
        print(f"{'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for c in LEVELS[:3]:
            rps, lat = await _run_level(routed, c, max(per_level // 2, 2 * c), True)
            print(f"{c:>5} {rps:>8.0f} {_pct(lat, 50):>8.2f} {_pct(lat, 99):>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests-per-level", type=int, default=400)
    p.add_argument("--images", action="store_true", help="also measure the E -> PD image path")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    with LocalCluster(
        workdir, encoders=1, decodes=1, router_args=["--log-level", "WARNING"]
    ) as cluster:
        asyncio.run(bench(cluster, args.requests_per_level, args.images))


if __name__ == "__main__":
    main()
