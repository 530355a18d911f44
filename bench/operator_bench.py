"""Operator benchmark on the local control plane (kwok): N EPDClusters at once.

    .venv/bin/python bench/operator_bench.py [--clusters 200] [--resync 30] [--workers 8]

Brings up its own kwok cluster (same provider as the tests) with enough fake GPU nodes,
installs the CRD, runs the operator as a local process, creates N copies of the minimal
sample in one `kubectl apply` and prints:

- p50 / p99 from each EPDCluster's creation (its ADDED watch event) to all its children
  applied (the router Service, the last object render emits, appears) and to Ready=True;
- total API writes of the operator (its own counter, which counts every write call);
- writes during one no-op resync pass over every cluster (must be 0), by the operator's
  counter and by the apiserver's own request counter for our resource kinds;
- operator RSS.

A benchmark, not a test: it prints figures and asserts nothing but the run's sanity.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from e2e.operator_proc import OperatorProcess  # noqa: E402
from e2e.providers import Cluster, KwokProvider, fake_gpu_node, json_objects  # noqa: E402

NS = "bench"
KINDS = ("configmaps", "services", "statefulsets", "deployments", "epdclusters")


class Watch:
    """`kubectl get -w --output-watch-events -o json`, timestamping each event on arrival."""

    def __init__(self, cluster: Cluster, *args: str) -> None:
        cmd = [str(cluster.bin_dir / "kubectl"), "-n", NS, "get", *args, "-w",
               "--output-watch-events", "-o", "json"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=cluster.env)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for ev in json_objects(self.proc.stdout):
            self.events.append((time.monotonic(), ev))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def apiserver_writes(cluster: Cluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    total = 0.0
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") in ("POST", "PUT", "PATCH", "APPLY", "DELETE") and labels.get(
                    "resource") in KINDS:
                total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--resync", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    # Tear the cluster down on SIGTERM too (the finally below), not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    work = Path(tempfile.mkdtemp(prefix="epd-bench-"))
    provider = KwokProvider(f"epd-bench-{int(time.time())}", work / "c")
    cluster = provider.up()
    op: OperatorProcess | None = None
    try:
        sample = yaml.safe_load((REPO / "crds" / "samples" / "minimal-epd.yaml").read_text())
        gpus = 0
        for role in sample["spec"]["roles"].values():
            par = (role or {}).get("parallelism") or {}
            gpus += (role or {}).get("replicas", 1) * par.get("tensor", 1) * par.get(
                "pipeline", 1) * par.get("data", 1)
        nodes = [fake_gpu_node(f"bench-node-{i}", "zone-a")
                 for i in range(args.clusters * gpus // 8 + 2)]
        cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": nodes}))
        cluster.kubectl("apply", "--server-side", "-f",
                        str(REPO / "crds" / "epd-operator.io_epdclusters.yaml"))
        cluster.kubectl("wait", "--for=condition=Established",
                        "crd/epdclusters.epd-operator.io", "--timeout=60s")
        cluster.kubectl("create", "namespace", NS)
        op = OperatorProcess(cluster.kubeconfig, [NS], args.resync, work / "operator.log",
                             workers=args.workers)
        op.start()
        op.wait_healthy()

        clusters_w = Watch(cluster, "epdc")
        routers_w = Watch(cluster, "services", "-l", "app.kubernetes.io/component=router")
        time.sleep(1.0)  # both watches established
        items = []
        for i in range(args.clusters):
            obj = json.loads(json.dumps(sample))
            obj["metadata"] = {"name": f"bench-{i:04d}"}
            items.append(obj)
        t_apply = time.monotonic()
        cluster.kubectl("-n", NS, "apply", "-f", "-", timeout=300, input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": items}))
        apply_s = time.monotonic() - t_apply

        created: dict[str, float] = {}
        ready: dict[str, float] = {}
        applied: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            for t, ev in list(clusters_w.events):
                obj = ev["object"]
                name = obj["metadata"]["name"]
                created.setdefault(name, t) if ev["type"] == "ADDED" else None
                conds = {c["type"]: c["status"]
                         for c in (obj.get("status") or {}).get("conditions") or []}
                if conds.get("Ready") == "True":
                    ready.setdefault(name, t)
            for t, ev in list(routers_w.events):
                inst = ev["object"]["metadata"]["labels"].get("app.kubernetes.io/instance")
                applied.setdefault(inst, t)
            if len(ready) >= args.clusters:
                break
            time.sleep(0.5)
        clusters_w.stop()
        routers_w.stop()
        if len(ready) < args.clusters:
            print(f"only {len(ready)}/{args.clusters} Ready after {args.timeout}s; "
                  f"see {op.log_path}", file=sys.stderr)
            return 1
        to_applied = [applied[n] - created[n] for n in created if n in applied]
        to_ready = [ready[n] - created[n] for n in created if n in ready]
        total_s = max(ready.values()) - min(created.values())

        # Quiesce, then one full resync pass with nothing to do.
        def settled() -> bool:
            before = op.writes() if op else 0
            time.sleep(2.0)
            return (op.writes() if op else 0) == before

        while not settled():
            pass
        writes_total = op.writes()
        ours, server = op.writes(), apiserver_writes(cluster)
        passes = op.reconciles("resync")
        while op.reconciles("resync") - passes < args.clusters:
            time.sleep(1.0)
        resync_ours = op.writes() - ours
        resync_server = apiserver_writes(cluster) - server
        rss = op.rss_bytes()

        print(f"operator benchmark: {args.clusters} EPDClusters (minimal sample, "
              f"{len(sample['spec']['roles'])} roles + router), kwok, workers={args.workers}")
        print(f"  kubectl apply of all {args.clusters}: {apply_s:.2f}s; "
              f"first create -> last Ready: {total_s:.2f}s")
        print(f"  create -> all children applied: p50 {pct(to_applied, .5):.2f}s  "
              f"p99 {pct(to_applied, .99):.2f}s  (mean {statistics.mean(to_applied):.2f}s)")
        print(f"  create -> Ready:                 p50 {pct(to_ready, .5):.2f}s  "
              f"p99 {pct(to_ready, .99):.2f}s  (mean {statistics.mean(to_ready):.2f}s)")
        print(f"  API writes by the operator, total: {writes_total:.0f} "
              f"({writes_total / args.clusters:.1f} per cluster)")
        print(f"  writes during one no-op resync of all {args.clusters}: operator "
              f"{resync_ours:.0f}, apiserver (our kinds) {resync_server:.0f}")
        print(f"  operator RSS: {rss / 2**20:.1f} MiB")
        return 0 if resync_ours == 0 else 1
    finally:
        if op is not None:
            op.stop()
        provider.down()


if __name__ == "__main__":
    sys.exit(main())
