"""The shared encoder cache: 2 simulated encoders, 50 % repeated images, round robin, with the
Mooncake Store (a real `mooncake_master`, real Store clients over TCP) vs without.

Per mode it starts a loopback cluster (2 encoder sims, 1 PD sim), then sends N encoder
requests with one image each straight to the encoders in round-robin order (encoder i % 2),
C at a time. Image k is new with probability 1 - repeat, else a repeat of an earlier image
chosen uniformly, so about half of the repeats land on the other encoder. Encoding is the
simulator's: `--encode-delay-s` of waiting (a stand-in for GPU time) plus building the 1 MiB
output (CPU). Prints throughput, encodes done and avoided, hit rate, encoder CPU seconds per
request (both encoder processes, from /proc) and Store GET latency p50 / p99 (interpolated
from the encoders' histogram). All processes share this machine's cores, the load generator
included: compare the two rows of one run.

    .venv/bin/python bench/shared_cache_bench.py [--requests N] [--concurrency C]
        [--repeat 0.5] [--encode-delay-s 0.02] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import tempfile
import time
from pathlib import Path

import aiohttp

from epd_connector.sim.localcluster import LocalCluster, Proc


def workload(n: int, repeat: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    seen: list[str] = []
    out = []
    for i in range(n):
        if seen and rng.random() < repeat:
            out.append(rng.choice(seen))
        else:
            seen.append(f"image-{seed}-{i}")
            out.append(seen[-1])
    return out


def body(seed: str) -> dict[str, object]:
    url = "data:image/png;base64," + base64.b64encode(f"pixels:{seed}".encode() * 64).decode()
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 1, "stream": False}


def cpu_seconds(proc: Proc) -> float:
    fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(urls: list[str], images: list[str], concurrency: int) -> float:
    queue = list(enumerate(images))
    async with aiohttp.ClientSession() as http:

        async def worker() -> None:
            while queue:
                i, image = queue.pop(0)
                async with http.post(
                    urls[i % len(urls)] + "/v1/chat/completions", json=body(image)
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Linear interpolation in a cumulative Prometheus histogram [(le, count), ...]."""
    total = buckets[-1][1]
    target = q * total
    lo_edge, lo_count = 0.0, 0.0
    for edge, count in buckets:
        if count >= target:
            if edge == float("inf"):
                return lo_edge
            frac = 0.0 if count == lo_count else (target - lo_count) / (count - lo_count)
            return lo_edge + frac * (edge - lo_edge)
        lo_edge, lo_count = edge, count
    return lo_edge


def run(store: bool, args: argparse.Namespace, images: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shared-cache-bench-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            encoders=2,
            decodes=1,
            shared_store=store,
            sim_args={"encoder": ["--encode-delay-s", str(args.encode_delay_s)]},
        )
        with cluster:
            encoders = cluster.sims("encoder")
            cpu0 = sum(cpu_seconds(p) for p in encoders)
            wall = asyncio.run(drive([p.url for p in encoders], images, args.concurrency))
            cpu = sum(cpu_seconds(p) for p in encoders) - cpu0
            samples = [cluster.metrics(p) for p in encoders]

    def total(name: str) -> float:
        return sum(v for m in samples for k, v in m.items() if k == name)

    edges = sorted(
        {
            float(k.split("le=")[1].rstrip("}"))
            for m in samples
            for k in m
            if k.startswith("epd_sim_store_get_seconds_bucket")
        }
    )
    buckets = [
        (e, sum(m.get(f"epd_sim_store_get_seconds_bucket{{le={_le(e)}}}", 0) for m in samples))
        for e in edges
    ]
    hits = total("epd_sim_store_lookups_total{outcome=hit}")
    misses = total("epd_sim_store_lookups_total{outcome=miss}")
    encodes = total("epd_sim_encoded_items_total")
    return {
        "req_s": len(images) / wall,
        "encodes": encodes,
        "avoided": len(images) - encodes,
        "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "cpu_ms_per_req": 1000 * cpu / len(images),
        "get_p50_ms": 1000 * quantile(buckets, 0.5) if buckets and buckets[-1][1] else 0.0,
        "get_p99_ms": 1000 * quantile(buckets, 0.99) if buckets and buckets[-1][1] else 0.0,
    }


def _le(edge: float) -> str:
    return "+Inf" if edge == float("inf") else repr(edge)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--repeat", type=float, default=0.5, help="share of repeated images")
    p.add_argument("--encode-delay-s", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    images = workload(args.requests, args.repeat, args.seed)
    repeats = len(images) - len(set(images))
    print(
        f"{args.requests} requests, {repeats} repeats ({repeats / len(images):.0%}), "
        f"2 encoders round robin, concurrency {args.concurrency}, "
        f"encode delay {args.encode_delay_s * 1000:g} ms, 1 MiB output per image"
    )
    print(
        f"{'mode':<10}{'req/s':>8}{'encodes':>9}{'avoided':>9}{'hit rate':>10}"
        f"{'CPU ms/req':>12}{'GET p50 ms':>12}{'GET p99 ms':>12}"
    )
    for store in (False, True):
        r = run(store, args, images)
        print(
            f"{'store' if store else 'no store':<10}{r['req_s']:>8.1f}{r['encodes']:>9.0f}"
            f"{r['avoided']:>9.0f}{r['hit_rate']:>10.1%}{r['cpu_ms_per_req']:>12.2f}"
            f"{r['get_p50_ms']:>12.2f}{r['get_p99_ms']:>12.2f}"
        )


if __name__ == "__main__":
    main()
