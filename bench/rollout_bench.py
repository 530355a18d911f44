"""Coordinated rollout benchmark on the local control plane (kwok): an image change per shape.

    .venv/bin/python bench/rollout_bench.py [--shapes 2/2/2,1/2/4,2/3,3/3/3:2]

A shape is `E/P/D` or `E/D` pod counts, optionally `:<maxUnavailable>`. For each shape it
creates the EPDCluster, runs reconcile passes in this process (as the operator's handlers
do; the StatefulSet controller is the real one, pods are kwok's) until Ready, changes the
image tag and keeps reconciling until every role runs it, and prints:

- steps (status.rollout.steps) and the rollout's duration;
- the per-role new-revision counts the planner asked for at each step;
- the largest difference between two roles' shares of pods on the new revision (StatefulSet
  status), at step boundaries (the planner's bound 1/min(R) applies) and within a step (the
  roles' controllers replace their batch at slightly different moments);
- the fewest ready pods any role had during the rollout (its floor is R - maxUnavailable).

A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.paths import REPO
from e2e.providers import KwokProvider
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.kube import Kube

NS = "rollout-bench"
CFG = OperatorConfig.from_env({})


def shape_spec(shape: str) -> tuple[dict[str, int], int]:
    counts, _, unavailable = shape.partition(":")
    numbers = [int(n) for n in counts.split("/")]
    names = ("encoder", "prefill", "decode") if len(numbers) == 3 else ("encoder", "decode")
    return dict(zip(names, numbers, strict=True)), int(unavailable or 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="2/2/2,1/2/4,2/3,3/3/3:2")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="epd-rollout-bench-"))
    provider = KwokProvider(f"epd-rbench-{int(time.time())}", work / "c")
    cluster = provider.up()
    try:
        for kind in (c.CRD_FILENAME, c.SCALER_CRD_FILENAME):
            cluster.kubectl(
                "apply", "--server-side", "-f", str(crdgen.targets(crdgen.repo_root(), kind)[0])
            )
        for crd in (c.CRD_NAME, c.SCALER_CRD_NAME):
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        cluster.kubectl("create", "namespace", NS)
        kube = Kube.from_environment(kubeconfig=str(cluster.kubeconfig))
        for i, shape in enumerate(args.shapes.split(",")):
            run_shape(cluster, kube, f"shape-{i}", shape, args.timeout)
    finally:
        provider.down()


def get(cluster: Any, *what: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("-n", NS, "get", *what, "-o", "json").stdout)
    return out


def run_shape(cluster: Any, kube: Kube, name: str, shape: str, timeout: float) -> None:
    replicas, unavailable = shape_spec(shape)
    obj = yaml.safe_load((REPO / "crds" / "samples" / "minimal-epd.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["roles"] = {
        r: {"replicas": n, "rollout": {"maxUnavailable": unavailable}} for r, n in replicas.items()
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    memory = StatusMemory()

    def settle_until(done: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reconcile(kube, get(cluster, "epdc", name), CFG, memory)
            sets = {
                o["metadata"]["labels"][c.LABEL_ROLE]: o
                for o in get(cluster, "sts", "-l", f"{c.LABEL_INSTANCE}={name}")["items"]
            }
            status = get(cluster, "epdc", name).get("status") or {}
            seen.append({"t": time.monotonic(), "sets": sets, "status": status})
            if done(sets, status):
                return seen
            time.sleep(0.2)
        raise SystemExit(f"{name}: timed out")

    def ready(sets: dict[str, Any], status: dict[str, Any]) -> bool:
        return bool(status.get("phase") == "Ready")

    settle_until(ready)
    cluster.kubectl(
        "-n",
        NS,
        "patch",
        "epdc",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"image": {"tag": "bench-2"}}}),
    )
    started = time.monotonic()

    def rolled(sets: dict[str, Any], status: dict[str, Any]) -> bool:
        images = {s["spec"]["template"]["spec"]["containers"][0]["image"] for s in sets.values()}
        return ready(sets, status) and all(i.endswith(":bench-2") for i in images)

    seen = settle_until(rolled)
    took = seen[-1]["t"] - started
    steps = max((s["status"].get("rollout") or {}).get("steps", 0) for s in seen)
    targets: list[dict[str, int]] = []
    worst = {"at step boundaries": Fraction(0), "within a step": Fraction(0)}
    floor = dict(replicas)
    for s in seen:
        want = {
            r: replicas[r] - o["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
            for r, o in s["sets"].items()
        }
        if not targets or want != targets[-1]:
            targets.append(want)
        st = {r: o.get("status") or {} for r, o in s["sets"].items()}
        updated = {r: int(st[r].get("updatedReplicas") or 0) for r in replicas}
        share = {r: Fraction(updated[r], replicas[r]) for r in replicas}
        # At a step boundary every role has reached the planner's target; in between, the
        # roles' controllers replace their pods at slightly different moments.
        when = "at step boundaries" if updated == want else "within a step"
        worst[when] = max(worst[when], max(share.values()) - min(share.values()))
        for r in replicas:
            floor[r] = min(floor[r], int(st[r].get("readyReplicas") or 0))
    bound = Fraction(1, min(replicas.values()))
    print(
        f"{name} {'/'.join(map(str, replicas.values()))} maxUnavailable={unavailable}: "
        f"{steps} steps in {took:.1f}s over {len(seen)} passes"
    )
    print(f"  planner targets per step: {targets}")
    for when, value in worst.items():
        print(
            f"  largest share difference between roles {when}: {float(value):.3f}"
            f" (planner bound < {float(bound):.3f})"
        )
    print(
        f"  fewest ready pods per role: {floor} "
        f"(floor R - maxUnavailable: { {r: n - unavailable for r, n in replicas.items()} })"
    )
    cluster.kubectl("-n", NS, "delete", "epdc", name, "--wait=false")


if __name__ == "__main__":
    main()
