"""Operator benchmark on the local control plane (kwok): N EPDClusters at once.

    .venv/bin/python bench/operator_bench.py [--clusters 100] [--nodes 200] [--resync 60]
                                             [--idle 120] [--workers 8] [--load-threads 8]
                                             [--no-pin]

Brings up its own kwok cluster (same provider as the tests) with an apiserver audit log limited
to the operator's ServiceAccount, at least `--nodes` fake 8-GPU nodes, installs the chart
(CRDs, RBAC, ServiceAccount; `replicas=0`) and runs the operator as a local process with that
ServiceAccount's token, creates N copies of the minimal sample at once (direct API requests,
`--load-threads` in flight over one keep-alive pool: bench/kube_load.py) and prints:

- create wave: p50 / p99 / total from each EPDCluster's creation (its ADDED watch event) to all
  its children applied (the router Service, the last object render emits, appears) and to
  Ready=True; API requests of the operator per object (audit log: reads and writes); operator
  CPU seconds per object;
- idle: API requests (audit log) and operator CPU seconds during `--idle` seconds with nothing
  to do (resync passes included), and writes during one full no-op resync pass (must be 0);
- update wave: every spec changed at once; CPU seconds and requests per object;
- operator RSS (now and peak).

On a machine with two or more CPUs the operator is pinned to the last CPU and the bench's own
threads (load generator, watches) to the first, so the load generator does not take the
operator's CPU (`--no-pin` leaves both to the scheduler); the control plane is not pinned.

A benchmark, not a test: it prints figures and asserts nothing but the run's sanity.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.kube_load import StreamWatch, api_client, create_all, patch_all, pin  # noqa: E402
from e2e.operator_proc import OperatorProcess, serviceaccount_kubeconfig  # noqa: E402
from e2e.providers import KwokProvider, fake_gpu_node  # noqa: E402

NS = "bench"
OP_NS = "bench-system"
RELEASE = "epd"
SA = "epd-epd-operator"
OP_USER = f"system:serviceaccount:{OP_NS}:{SA}"
# Only the operator's requests are logged, at Metadata level (verb, resource, time).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OP_USER]}, {"level": "None"}],
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Audit:
    """The operator's requests from the apiserver audit log, by the time each was received."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def requests(self, since: float, until: float) -> collections.Counter[str]:
        """(verb resource) -> requests received in [since, until) (Unix time); a watch counts
        once, when it starts."""
        seen: dict[str, str] = {}
        with self.path.open() as f:
            for line in f:
                ev = json.loads(line)
                if (ev.get("user") or {}).get("username") != OP_USER:
                    continue
                t = datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
                if since <= t < until:
                    ref = ev.get("objectRef") or {}
                    res = ref.get("resource", "?") + (
                        f"/{ref['subresource']}" if ref.get("subresource") else ""
                    )
                    seen[ev["auditID"]] = f"{ev['verb']} {res}"
        return collections.Counter(seen.values())

    def lines(self, since: float, until: float) -> list[str]:
        """Each of the operator's requests received in [since, until): seconds after `since`,
        verb, request URI (what says which watch renewed, or which read happened)."""
        seen: dict[str, tuple[float, str]] = {}
        with self.path.open() as f:
            for line in f:
                ev = json.loads(line)
                if (ev.get("user") or {}).get("username") != OP_USER:
                    continue
                t = datetime.fromisoformat(ev["requestReceivedTimestamp"]).timestamp()
                if since <= t < until:
                    seen[ev["auditID"]] = (t - since, f"{ev['verb']} {ev.get('requestURI')}")
        return [f"+{t:6.1f}s {what}" for t, what in sorted(seen.values())]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


def split(counts: collections.Counter[str]) -> tuple[int, int]:
    """(reads, writes) of a request count."""
    reads = sum(n for k, n in counts.items() if k.split()[0] in ("get", "list", "watch"))
    return reads, sum(counts.values()) - reads


def fmt(counts: collections.Counter[str]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in counts.most_common()) or "none"


class Seen:
    """What the bench's watches have shown so far, read incrementally (a 1,000-object run has
    tens of thousands of events): each EPDCluster's creation (its ADDED event), Ready=True and
    all children applied (its router Service, the last object render emits, appears), each its
    first arrival time; and each EPDCluster's latest generation / observedGeneration."""

    def __init__(self, clusters: StreamWatch, routers: StreamWatch) -> None:
        self.clusters, self.routers = clusters, routers
        self.created: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.applied: dict[str, float] = {}
        self.latest: dict[str, tuple[int, int]] = {}
        # Latest state: Ready=True and Progressing=False (nothing rolling), by name.
        self.settled: dict[str, bool] = {}
        self._at = [0, 0]

    def catch_up(self) -> None:
        new_c = self.clusters.events[self._at[0] :]
        new_r = self.routers.events[self._at[1] :]
        self._at = [self._at[0] + len(new_c), self._at[1] + len(new_r)]
        for t, ev in new_c:
            obj, name = ev["object"], ev["object"]["metadata"]["name"]
            if ev["type"] == "ADDED":
                self.created.setdefault(name, t)
            status = obj.get("status") or {}
            conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if conds.get("Ready") == "True":
                self.ready.setdefault(name, t)
            self.settled[name] = (
                conds.get("Ready") == "True" and conds.get("Progressing") == "False"
            )
            gen = (obj["metadata"].get("generation", 0), status.get("observedGeneration", 0))
            self.latest[name] = gen
        for t, ev in new_r:
            inst = ev["object"]["metadata"]["labels"].get("app.kubernetes.io/instance")
            self.applied.setdefault(inst, t)

    def rolled_since(self, first_event: int) -> int:
        """EPDClusters changed after event `first_event` whose latest state has that change
        observed and rolled out (Ready, not Progressing)."""
        changed = {ev["object"]["metadata"]["name"] for _, ev in self.clusters.events[first_event:]}
        return sum(1 for n in changed if self.latest[n][0] == self.latest[n][1] and self.settled[n])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument(
        "--nodes",
        type=int,
        default=200,
        help="at least this many fake 8-GPU nodes (more when N needs them)",
    )
    ap.add_argument("--resync", type=float, default=60.0)
    ap.add_argument("--idle", type=float, default=120.0, help="seconds of idle measured")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument(
        "--load-threads", type=int, default=8, help="create / patch requests in flight at once"
    )
    ap.add_argument(
        "--no-pin", action="store_true", help="pin neither the operator nor the load generator"
    )
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument(
        "--update-timeout",
        type=float,
        default=1800.0,
        help="cut the update wave off after this many seconds and report what rolled out",
    )
    args = ap.parse_args()
    # Tear the cluster down on SIGTERM too (the finally below), not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    work = Path(tempfile.mkdtemp(prefix="epd-bench-"))
    policy = work / "audit-policy.yaml"
    policy.write_text(json.dumps(AUDIT_POLICY))
    provider = KwokProvider(
        f"epd-bench-{int(time.time())}",
        work / "c",
        audit_policy=policy,
        service_cidr="10.96.0.0/16",
    )
    cluster = provider.up()
    op: OperatorProcess | None = None
    watches: list[StreamWatch] = []
    try:
        log_path = provider.audit_log()
        if log_path is None:
            print(f"no audit log under {work}", file=sys.stderr)
            return 1
        audit = Audit(log_path)
        sample = yaml.safe_load((REPO / "crds" / "samples" / "minimal-epd.yaml").read_text())
        gpus = 0
        for role in sample["spec"]["roles"].values():
            par = (role or {}).get("parallelism") or {}
            gpus += (
                (role or {}).get("replicas", 1)
                * par.get("tensor", 1)
                * par.get("pipeline", 1)
                * par.get("data", 1)
            )
        n_nodes = max(args.nodes, args.clusters * gpus // 8 + 2)
        nodes = [fake_gpu_node(f"bench-node-{i}", "zone-a") for i in range(n_nodes)]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            timeout=300,
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        cluster.kubectl("create", "namespace", NS)
        cluster.run(
            "helm",
            "install",
            RELEASE,
            str(REPO / "charts" / "epd-operator"),
            "--namespace",
            OP_NS,
            "--create-namespace",
            "--set",
            "replicas=0",
            "--set",
            "webhook.enabled=false",
            "--set-json",
            f'watchNamespaces=["{NS}"]',
            timeout=180,
        )
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/epdclusters.epd-operator.io",
            "--timeout=60s",
        )
        kubeconfig = serviceaccount_kubeconfig(cluster, OP_NS, SA, work / "operator.kubeconfig")
        op = OperatorProcess(
            kubeconfig, [NS], args.resync, work / "operator.log", workers=args.workers
        )
        op.start()
        op.wait_healthy()
        assert op.proc is not None
        pid = op.proc.pid

        def settle(quiet_s: float = 3.0, until: float = float("inf")) -> float:
            """Wait until the operator's write counter stops moving (or the monotonic time
            `until`); its last-move time."""
            last, t_last = op.writes() if op else 0, time.time()
            while time.time() - t_last < quiet_s and time.monotonic() < until:
                time.sleep(0.5)
                now = op.writes() if op else 0
                if now != last:
                    last, t_last = now, time.time()
            return t_last

        api = api_client(cluster.kubeconfig, args.load_threads + 4)
        if not args.no_pin and (os.cpu_count() or 1) >= 2:
            last = (os.cpu_count() or 2) - 1
            pin(pid, {last})
            pin(os.getpid(), {0})
            print(f"pinned: operator to CPU {last}, bench (load + watches) to CPU 0", flush=True)
        clusters_w = StreamWatch(api, NS, "epdc")
        routers_w = StreamWatch(api, NS, "services", "app.kubernetes.io/component=router")
        watches += [clusters_w, routers_w]
        for w in watches:
            w.established.wait(30)
        time.sleep(0.5)
        items = []
        for i in range(args.clusters):
            obj = json.loads(json.dumps(sample))
            obj["metadata"] = {"name": f"bench-{i:04d}"}
            items.append(obj)
        cpu0, wall0, writes0 = cpu_seconds(pid), time.time(), op.writes()
        t_apply = time.monotonic()
        create_all(api, NS, items, args.load_threads)
        apply_s = time.monotonic() - t_apply

        seen = Seen(clusters_w, routers_w)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            seen.catch_up()
            if len(seen.ready) >= args.clusters:
                break
            time.sleep(0.5)
        created, ready, applied = seen.created, seen.ready, seen.applied
        if len(ready) < args.clusters:
            print(
                f"only {len(ready)}/{args.clusters} Ready after {args.timeout}s "
                f"({len(applied)} with all children); see {op.log_path}",
                file=sys.stderr,
            )
            return 1
        to_applied = [applied[n] - created[n] for n in created if n in applied]
        to_ready = [ready[n] - created[n] for n in created if n in ready]
        applied_total = max(applied.values()) - min(created.values())
        total_s = max(ready.values()) - min(created.values())
        wall1 = settle()
        cpu_create = cpu_seconds(pid) - cpu0
        writes_create = op.writes() - writes0
        time.sleep(1.0)  # the audit log catches up
        create_req = audit.requests(wall0, wall1 + 0.5)
        n = args.clusters
        cr, cw = split(create_req)
        print(
            f"operator benchmark: {n} EPDClusters (minimal sample, "
            f"{len(sample['spec']['roles'])} roles + router), kwok with {n_nodes} nodes, "
            f"workers={args.workers}, resync={args.resync:g}s"
        )
        print(
            f"  create requests for all {n}: {apply_s:.2f}s; first create -> last Ready: "
            f"{total_s:.2f}s; first create -> last children applied: {applied_total:.2f}s"
        )
        print(
            f"  create -> all children applied: p50 {pct(to_applied, 0.5):.2f}s  "
            f"p99 {pct(to_applied, 0.99):.2f}s  (mean {statistics.mean(to_applied):.2f}s)"
        )
        print(
            f"  create -> Ready:                 p50 {pct(to_ready, 0.5):.2f}s  "
            f"p99 {pct(to_ready, 0.99):.2f}s  (mean {statistics.mean(to_ready):.2f}s)"
        )
        print(
            f"  create wave: operator CPU {cpu_create:.1f}s ({cpu_create / n:.3f}s/object); "
            f"API requests {cr + cw} ({(cr + cw) / n:.1f}/object: {cr / n:.1f} reads, "
            f"{cw / n:.1f} writes); operator's write counter {writes_create:.0f}"
        )
        print(f"    by verb: {fmt(create_req)}")
        print(f"  operator RSS after the create wave: {op.rss_bytes() / 2**20:.1f} MiB", flush=True)

        # Idle: nothing changes for `--idle` seconds; resync passes run meanwhile.
        cpu0, wall0, passes0 = cpu_seconds(pid), time.time(), op.reconciles("resync")
        writes0 = op.writes()
        time.sleep(args.idle)
        cpu_idle, wall1 = cpu_seconds(pid) - cpu0, time.time()
        idle_passes = op.reconciles("resync") - passes0
        idle_writes = op.writes() - writes0
        time.sleep(1.0)
        idle_req = audit.requests(wall0, wall1)
        idle_lines = audit.lines(wall0, wall1)
        ir, iw = split(idle_req)
        print(
            f"  idle {args.idle:g}s ({idle_passes:.0f} resync passes): operator CPU "
            f"{cpu_idle:.2f}s; API requests {ir + iw} ({ir} reads, {iw} writes); operator's "
            f"write counter {idle_writes:.0f}"
        )
        print(f"    by verb: {fmt(idle_req)}")
        for line in idle_lines:
            print(f"      {line}")
        sys.stdout.flush()

        # Update wave: every spec changes (the model name), one merge patch each.
        model = sample["spec"]["model"]["name"] + "-FP8"
        patches = {o["metadata"]["name"]: {"spec": {"model": {"name": model}}} for o in items}
        cpu0, wall0, writes0 = cpu_seconds(pid), time.time(), op.writes()
        create_wave_events = len(clusters_w.events)
        patch_all(api, NS, patches, args.load_threads)

        # Every new spec reconciled and rolled out (seen on the bench's own watch), then
        # quiet; or cut off at --update-timeout, counting what rolled out by then.
        deadline = time.monotonic() + args.update_timeout
        rolled = 0
        while time.monotonic() < deadline:
            seen.catch_up()
            rolled = seen.rolled_since(create_wave_events)
            if rolled >= n:
                break
            time.sleep(1.0)
        wall1 = settle(5.0, until=deadline)
        seen.catch_up()
        rolled = seen.rolled_since(create_wave_events)
        cpu_update = cpu_seconds(pid) - cpu0
        writes_update = op.writes() - writes0
        time.sleep(1.0)
        update_req = audit.requests(wall0, wall1 + 0.5)
        rss, rss_peak = op.rss_bytes(), peak_rss(pid)
        ur, uw = split(update_req)
        if rolled < n:
            print(
                f"  update wave CUT OFF after {args.update_timeout:g}s: {rolled} of {n} rolled "
                f"out; the figures below are for that part (per object: per EPDCluster patched)"
            )
        else:
            print(f"  update wave: all {n} rolled out in {wall1 - wall0:.1f}s")
        print(
            f"  update wave: operator CPU {cpu_update:.1f}s ({cpu_update / n:.3f}s/object); "
            f"API requests {ur + uw} ({(ur + uw) / n:.1f}/object: {ur / n:.1f} reads, "
            f"{uw / n:.1f} writes); operator's write counter {writes_update:.0f}"
        )
        print(f"    by verb: {fmt(update_req)}")
        print(f"  operator RSS: {rss / 2**20:.1f} MiB now, {rss_peak / 2**20:.1f} MiB peak")
        return 0 if idle_writes == 0 else 1
    finally:
        # Each step on its own: a failed one must not leave the operator or the cluster up.
        for w in watches:
            w.stop()
        try:
            if op is not None:
                op.stop()
        finally:
            provider.down()


if __name__ == "__main__":
    sys.exit(main())
