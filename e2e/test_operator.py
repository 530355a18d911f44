"""The operator on a real control plane: the chart installed by `helm install`, the operator
running with the chart's ServiceAccount token, EPDClusters driven through their life.

On the kwok provider pods are simulated, so the chart's operator Deployment runs with
`replicas=0` (no container runtime could start its image) and the operator runs as a local
process (e2e/operator_proc.py) with a token of the chart's ServiceAccount: the RBAC the chart
grants is exactly what it has. On kind (EPD_CLUSTER_PROVIDER=kind: podman or Docker) the
control-plane image is built (hack/build-images.sh) and loaded, the operator runs in-cluster as
the chart's Deployment and engine pods run the simulator; the same tests follow.

Tests are numbered in the order they run (file order); they share one namespace and one
operator process.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.argocd_health import health
from e2e.in_cluster import static_volume
from e2e.operator_proc import (
    InClusterOperator,
    OperatorProcess,
    build_and_load_images,
    image_tagged,
    in_cluster_values,
    in_every_node,
    serviceaccount_kubeconfig,
)
from e2e.paths import REPO
from e2e.paths import SAMPLES as SAMPLE_DIR
from e2e.providers import GPU_RESOURCE, Cluster, fake_gpu_node, json_objects
from epd_operator.api import constants as c
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.render import render_cluster

pytestmark = pytest.mark.e2e

NS = "epd-e2e"
OP_NS = "epd-system"
RELEASE = "epd"
SA = f"{RELEASE}-epd-operator"
RESYNC = 3.0
SAMPLES = sorted(SAMPLE_DIR.glob("*.yaml"))
EXTRA_NODES = 8  # 20 clusters at once (test 5) need more GPUs than the provider's 4 nodes
WATCHED = f"configmaps,services,statefulsets,deployments,poddisruptionbudgets,{c.SCALER_PLURAL}"


@dataclass
class Env:
    cluster: Cluster
    op: OperatorProcess | InClusterOperator
    notes: str
    # kind: our image, loaded into every node (engine pods run it as the simulator).
    loaded_image: str | None = None

    def image_with_tag(self, tag: str) -> str:
        """The engine image under `tag`, as a reference pods can start from: on kind a second
        tag of the loaded image in every node (`tag_in_nodes`), so rolled pods really start;
        on kwok, where pods are simulated, any reference."""
        image = self.loaded_image or "registry.example/epd-engine:latest"
        return image_tagged(self.cluster, image, tag)

    def fitted(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` as this cluster can run it. kind's two nodes are this machine (a few CPUs, no
        GPU product labels) and pull nothing: the roles' resource requests and node selectors
        go, and so does the sample's image (the operator's default, the loaded image, runs).
        kwok's fake GPU servers take the samples as they are."""
        if self.loaded_image is None:
            return obj
        out = copy.deepcopy(obj)
        out["spec"].pop("image", None)
        for role in (out["spec"].get("roles") or {}).values():
            for key in ("resources", "nodeSelector"):
                role.pop(key, None)
        host_path = ((out["spec"]["model"].get("source") or {}).get("hostPath") or {}).get("path")
        if host_path:  # weights the admin put on every server: a directory there, at least
            in_every_node(self.cluster, "mkdir", "-p", host_path)
        return out

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl("-n", NS, *args, input=input, check=check).stdout

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
        )

    def get(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", "epdc", name, "-o", "json"))
        return out

    def children(self, name: str | None = None) -> list[dict[str, Any]]:
        sel = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
        if name:
            sel += f",{c.LABEL_INSTANCE}={name}"
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", WATCHED, "-l", sel, "-o", "json")
        )["items"]
        return items


def claim_names(value: Any) -> set[str]:
    """Every `claimName` anywhere in a sample (model weights, EC shared storage)."""
    if isinstance(value, dict):
        found = {str(value["claimName"])} if "claimName" in value else set()
        for v in value.values():
            found |= claim_names(v)
        return found
    if isinstance(value, list):
        return set().union(*(claim_names(v) for v in value)) if value else set()
    return set()


def load(path: Path) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    return obj


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 90, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_condition(
    env: Env, name: str, ctype: str, status: str = "True", timeout: float = 90
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = env.get(name)
        gen = obj["metadata"]["generation"]
        cond = condition(obj, ctype)
        current = (obj.get("status") or {}).get("observedGeneration") == gen
        return obj if current and cond.get("status") == status else None

    try:
        result: dict[str, Any] = wait_for(f"{name} {ctype}={status}", check, timeout)
    except AssertionError:
        print(env.op.log_tail())
        raise
    return result


def printer_columns(table: str) -> dict[str, str]:
    """`kubectl get` output (one object) -> {COLUMN: value}; cut at the header's column starts
    because an empty cell leaves no token to split on."""
    header, row = table.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def expected_keys(obj: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every child render produces for the object as the cluster holds it."""
    return {
        (m["kind"], m["metadata"]["name"])
        for m in render_cluster(parse(obj), OperatorConfig.from_env({}))
    }


def keys(children: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in children)


@pytest.fixture(scope="module")
def env(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("operator")
    if cluster.provider == "kwok":
        # Fake servers only where kwok runs them; kind advertises more per worker instead
        # (providers.KIND_GPUS_PER_NODE), and an existing cluster is never given fake nodes.
        nodes = [fake_gpu_node(f"gpu-node-e2e-{i}", "zone-a") for i in range(EXTRA_NODES)]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
    cluster.kubectl("create", "namespace", NS)
    claims = sorted(set().union(*(claim_names(load(p)) for p in SAMPLES)))
    # A kind node holds no such directory (kwok mounts nothing): made on first use.
    volumes = [o for claim in claims for o in static_volume(NS, claim, f"/tmp/{NS}-{claim}")]
    if volumes:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": volumes}),
        )
    # kwok simulates pods (no container runtime): the chart's operator Deployment stays at 0
    # replicas and the operator runs here, as the chart's ServiceAccount. kind runs images:
    # build and load the control-plane image, run the operator in-cluster, and let engine
    # pods run the simulator from the same image.
    in_cluster = cluster.provider == "kind"
    placement = ["--set", "replicas=0"]
    loaded: dict[str, str] = {}
    if in_cluster:
        loaded["loaded_image"] = build_and_load_images(cluster)
        placement = [
            *in_cluster_values(loaded["loaded_image"]),
            # Tests 6 and 8 drive the second line (SpecInvalid for an object the
            # webhook did not see); operator/tests/test_webhook_integration.py tests
            # the webhook with the chart's own configuration.
            "--set",
            "webhook.enabled=false",
        ]
    install = cluster.run(
        "helm",
        "install",
        RELEASE,
        str(REPO / "charts" / "epd-operator"),
        "--namespace",
        OP_NS,
        "--create-namespace",
        *placement,
        "--set-json",
        f'watchNamespaces=["{NS}"]',
        "--set-json",
        f"resyncSeconds={RESYNC:g}",
        timeout=180,
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{c.CRD_NAME}", "--timeout=60s")
    op: OperatorProcess | InClusterOperator
    if in_cluster:
        op = InClusterOperator(cluster, OP_NS, SA)
    else:
        kubeconfig = serviceaccount_kubeconfig(cluster, OP_NS, SA, tmp / "operator.kubeconfig")
        op = OperatorProcess(kubeconfig, [NS], RESYNC, tmp / "operator.log")
    op.start()
    try:
        op.wait_healthy()
        yield Env(cluster, op, install.stdout, **loaded)
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        cluster.run("helm", "uninstall", RELEASE, "--namespace", OP_NS, check=False)


def test_chart_installed_with_next_steps(env: Env) -> None:
    assert "kubectl wait epdc/<name> --for=condition=Ready" in env.notes
    dep = json.loads(env.cluster.kubectl("-n", OP_NS, "get", "deploy", SA, "-o", "json").stdout)
    if isinstance(env.op, OperatorProcess):
        assert "replicas=0: no operator pod runs" in env.notes
        assert dep["spec"]["replicas"] == 0
    else:
        assert "rollout status deployment/" in env.notes
        assert dep["status"]["readyReplicas"] == 1


# (verb, resource, namespace, allowed?) for the chart's ServiceAccount, in Role mode.
CAN_I = [
    ("patch", "statefulsets.apps", NS, True),
    ("create", "events", NS, True),
    ("list", "nodes", None, True),
    ("patch", "epdclusters.epd-operator.io/status", NS, True),
    ("patch", "statefulsets.apps", "default", False),  # only the watched namespace
    ("list", "secrets", NS, False),
    ("create", "pods", NS, False),
    ("list", "pods", NS, True),  # read-only: the transport preflight reports
    ("get", "pods", NS, False),
    ("update", "statefulsets.apps", NS, False),
    ("create", "configmaps", NS, True),  # server-side apply that creates needs it
    ("get", "configmaps", NS, False),
    ("delete", "epdclusters.epd-operator.io", NS, False),
    ("patch", "nodes", None, False),
    ("patch", f"{c.SCALER_PLURAL}.{c.GROUP}/scale", NS, True),  # seed / revert, as HPA does
    ("patch", f"{c.SCALER_PLURAL}.{c.GROUP}/status", NS, True),
    ("update", f"{c.SCALER_PLURAL}.{c.GROUP}", NS, False),
]


def test_rbac_is_least_privilege(env: Env) -> None:
    who = f"system:serviceaccount:{OP_NS}:{SA}"
    for verb, resource, ns, allowed in CAN_I:
        args = ["auth", "can-i", verb, resource, f"--as={who}"]
        args += ["-n", ns] if ns else []
        out = env.cluster.kubectl(*args, check=False).stdout.strip()
        assert out == ("yes" if allowed else "no"), (verb, resource, ns, out)


def test_1_every_valid_sample_becomes_ready(env: Env) -> None:
    objs = [env.fitted(load(p)) for p in SAMPLES]
    assert len(objs) >= 4
    env.apply(*objs)
    gpus = gpu_nodes(env)
    for obj in objs:
        name = obj["metadata"]["name"]
        live = wait_condition(env, name, "Ready")
        assert condition(live, "Degraded")["status"] == "False"
        assert keys(env.children(name)) == sorted(expected_keys(live))
        pods = json.loads(
            env.kubectl("get", "pods", "-l", f"{c.LABEL_INSTANCE}={name}", "-o", "json")
        )["items"]
        want = sum(
            int(s["spec"]["replicas"])
            for s in env.children(name)
            if s["kind"] in ("StatefulSet", "Deployment")
        )
        assert len(pods) == want
        for pod in pods:
            assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
            assert pod["spec"]["nodeName"] in gpus, pod["metadata"]["name"]
        cols = printer_columns(env.kubectl("get", "epdc", name))
        assert cols["READY"] == "True"
        assert cols["PHASE"] == "Ready"
        for role in ("ENCODER", "DECODE"):
            assert re.fullmatch(r"\d+/\d+", cols[role]), cols
        has_prefill = "prefill" in obj["spec"]["roles"]
        assert bool(re.fullmatch(r"\d+/\d+", cols["PREFILL"])) == has_prefill, cols
        assert health(live)["status"] == "Healthy"


def test_zero_writes_on_a_resync_with_nothing_to_do(env: Env) -> None:
    clusters = json.loads(env.kubectl("get", "epdc", "-o", "json"))["items"]
    assert clusters, "test 1 leaves Ready clusters behind"

    def apiserver_writes() -> float:
        text = env.cluster.kubectl("get", "--raw", "/metrics").stdout
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") in ("POST", "PUT", "PATCH", "APPLY", "DELETE") and labels.get(
                "resource"
            ) in (
                "configmaps",
                "services",
                "statefulsets",
                "deployments",
                c.PLURAL,
                c.SCALER_PLURAL,
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def settled() -> bool:
        before = env.op.writes()
        time.sleep(1.0)
        return env.op.writes() == before

    wait_for("the operator to stop writing", settled, timeout=30)
    ours, server, resyncs = env.op.writes(), apiserver_writes(), env.op.reconciles("resync")
    time.sleep(2 * RESYNC + 1)
    assert env.op.reconciles("resync") - resyncs >= len(clusters), "resync timers did not run"
    assert env.op.writes() - ours == 0
    assert apiserver_writes() - server == 0


def minimal(name: str) -> dict[str, Any]:
    obj = load(SAMPLE_DIR / "minimal-epd.yaml")
    obj["metadata"] = {"name": name}
    return obj


def watch(env: Env, name: str) -> subprocess.Popen[str]:
    # A watch on the list (not on the name), so it can start before the object exists.
    cmd = [
        str(env.cluster.bin_dir / "kubectl"),
        "-n",
        NS,
        "get",
        "epdc",
        "-w",
        "-o",
        "json",
        f"--field-selector=metadata.name={name}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env.cluster.env)


def gpu_nodes(env: Env) -> set[str]:
    """The nodes that offer GPUs: kwok's fake GPU nodes, kind's nodes with fake capacity."""
    nodes = json.loads(env.kubectl("get", "nodes", "-o", "json"))["items"]
    return {
        n["metadata"]["name"]
        for n in nodes
        if int((n["status"].get("allocatable") or {}).get(GPU_RESOURCE, 0)) > 0
    }


def collect(
    proc: subprocess.Popen[str], until: Callable[[dict[str, Any]], bool], timeout: float = 90
) -> list[dict[str, Any]]:
    """Objects from a `kubectl get -w -o json` stream until `until(obj)` (then stop it)."""
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    # readline() blocks while the watch is silent (a rollout that never progresses, as on kind
    # with an image tag that does not exist), so the deadline kills the stream rather than
    # being checked between lines: a hang becomes this function's AssertionError.
    killer = threading.Timer(timeout, proc.kill)
    killer.start()

    def lines() -> Iterator[str]:
        assert proc.stdout is not None
        while line := proc.stdout.readline():
            yield line

    try:
        for obj in json_objects(lines()):
            seen.append(obj)
            if until(obj):
                return seen
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()
    raise AssertionError(
        f"watch ended (or {timeout:.0f}s passed) without the awaited state; "
        f"saw {len(seen)} versions"
    )


def test_collect_ends_a_silent_watch_at_its_deadline() -> None:
    # A stream that never prints (a rollout that never progresses): an error, not a hang
    # (pytest's timeout would be the only bound otherwise).
    proc = subprocess.Popen(["sleep", "600"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(AssertionError, match="without the awaited state; saw 0 versions"):
        collect(proc, lambda _: True, timeout=1)
    assert proc.returncode is not None


def ready_at(gen: int) -> Callable[[dict[str, Any]], bool]:
    """Generation `gen` rolled out: Ready, and no longer Progressing (Ready alone stays True
    while a change rolls out within its bound)."""
    return lambda o: (
        (o.get("status") or {}).get("observedGeneration") == gen
        and condition(o, "Ready").get("status") == "True"
        and condition(o, "Progressing").get("status") == "False"
    )


def wait_rolled_out(env: Env, name: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until `name`'s current generation is rolled out (see ready_at)."""

    def check() -> dict[str, Any] | None:
        obj = env.get(name)
        return obj if ready_at(obj["metadata"]["generation"])(obj) else None

    result: dict[str, Any] = wait_for(f"{name} rolled out", check, timeout)
    return result


def test_2_scale_and_image_change_roll_out(env: Env) -> None:
    name = "qwen-vl"  # minimal-epd.yaml, Ready after test 1
    before = env.get(name)
    gen = before["metadata"]["generation"]
    canary = env.image_with_tag("canary")
    stream = watch(env, name)
    patch = {
        "spec": {
            "roles": {"decode": {"replicas": 2}},
            "image": {"ref": canary},
        }
    }
    env.kubectl("patch", "epdc", name, "--type=merge", "-p", json.dumps(patch))
    seen = collect(stream, ready_at(gen + 1))
    states = [
        (
            (o.get("status") or {}).get("observedGeneration"),
            condition(o, "Progressing").get("status"),
            condition(o, "Ready").get("status"),
        )
        for o in seen
    ]
    # Progressing while it rolls (Ready may stay True: the decode role keeps a serving pod).
    progressing = [i for i, s in enumerate(states) if s[:2] == (gen + 1, "True")]
    assert progressing, states
    assert states[-1] == (gen + 1, "False", "True")
    assert progressing[0] < len(states) - 1
    # Argo CD's view of the very objects the operator wrote along the way.
    assert health(seen[progressing[0]])["status"] == "Progressing"
    assert health(seen[-1])["status"] == "Healthy"
    decode = json.loads(env.kubectl("get", "sts", f"{name}-decode", "-o", "json"))
    assert decode["spec"]["replicas"] == 2
    images = {ctr["image"] for ctr in decode["spec"]["template"]["spec"]["containers"]}
    assert canary in images
    assert seen[-1]["status"]["roles"]["decode"]["readyReplicas"] == 2


def test_3_deleted_or_edited_children_are_restored(env: Env) -> None:
    name = "qwen-vl"
    sts = f"{name}-decode"
    old_uid = json.loads(env.kubectl("get", "sts", sts, "-o", "json"))["metadata"]["uid"]
    env.kubectl("delete", "sts", sts, "--wait=false")

    def recreated() -> bool:
        out = env.kubectl("get", "sts", sts, "-o", "json", "--ignore-not-found")
        return bool(out.strip()) and json.loads(out)["metadata"]["uid"] != old_uid

    wait_for("the deleted StatefulSet to come back", recreated, timeout=RESYNC + 10)
    env.kubectl("scale", "sts", sts, "--replicas=5")
    wait_for(
        "the scaled StatefulSet to be reverted",
        lambda: json.loads(env.kubectl("get", "sts", sts, "-o", "json"))["spec"]["replicas"] == 2,
        timeout=RESYNC + 10,
    )
    # Services and ConfigMaps are not watched: the resync timer brings them back.
    svc = f"{name}-encoder"
    env.kubectl("delete", "svc", svc)
    started = time.monotonic()
    wait_for(
        "the deleted Service to come back",
        lambda: env.kubectl("get", "svc", svc, "--ignore-not-found").strip(),
        timeout=RESYNC + 10,
        interval=0.2,
    )
    assert time.monotonic() - started <= RESYNC + 5
    cm = next(o for o in env.children(name) if o["kind"] == "ConfigMap")
    key, text = next(iter(cm["data"].items()))
    # The launch ConfigMap of a revision is immutable: a hand edit is refused outright...
    edit = env.cluster.kubectl(
        "-n",
        NS,
        "patch",
        "cm",
        cm["metadata"]["name"],
        "--type=merge",
        "-p",
        json.dumps({"data": {key: "{}"}}),
        check=False,
    )
    assert edit.returncode != 0
    assert "immutable" in edit.stderr
    # ...and a deleted one comes back, the same, with the resync.
    env.kubectl("delete", "cm", cm["metadata"]["name"])
    wait_for(
        "the deleted ConfigMap to be restored",
        lambda: (
            (
                out := env.kubectl(
                    "get", "cm", cm["metadata"]["name"], "-o", "json", "--ignore-not-found"
                ).strip()
            )
            and json.loads(out)["data"][key] == text
        ),
        timeout=RESYNC + 10,
    )
    wait_condition(env, name, "Ready")


def test_3b_a_hand_edited_status_heals_within_one_resync(env: Env) -> None:
    name = "qwen-vl"
    wait_condition(env, name, "Ready")
    forged = {
        "status": {
            "phase": "Degraded",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Forged",
                    "message": "hand-edited",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    out = env.kubectl(
        "patch", "epdc", name, "--subresource=status", "--type=merge", "-p", json.dumps(forged)
    )
    # The patch took (the operator may already have healed it by the time anyone reads it back:
    # with the watch-fed caches the status event itself can start a pass).
    assert "patched" in out

    def healed() -> bool:
        obj = env.get(name)
        return (
            obj["status"]["phase"] == "Ready"
            and condition(obj, "Ready").get("status") == "True"
            and condition(obj, "Degraded").get("status") == "False"
        )

    # Nothing but the resync notices a status edit (no spec change, no child event).
    wait_for("the forged status to be corrected", healed, timeout=RESYNC + 15)


def test_4_deleting_an_epdcluster_garbage_collects_its_children(env: Env) -> None:
    names = [load(p)["metadata"]["name"] for p in SAMPLES]
    assert env.children(names[0])
    env.kubectl("delete", "epdc", *names, "--wait=false")
    wait_for(
        "the EPDClusters to go",
        lambda: not json.loads(env.kubectl("get", "epdc", "-o", "json"))["items"],
        timeout=60,
    )
    # The garbage collector, not the operator, removes them; its first pass over a freshly
    # installed CRD's dependents can take up to its discovery period (about 30s).
    wait_for("their children to be garbage-collected", lambda: not env.children(), timeout=90)


def test_5_sigkill_mid_reconcile_then_restart_converges(env: Env) -> None:
    names = [f"kill-{i:02d}" for i in range(20)]
    env.apply(*(minimal(n) for n in names))
    # Kill as soon as the operator has started creating children, long before 20 are done.
    wait_for("the first child", env.children, timeout=30, interval=0.05)
    env.op.kill()
    ready_at_kill = sum(
        condition(o, "Ready").get("status") == "True"
        for o in json.loads(env.kubectl("get", "epdc", "-o", "json"))["items"]
    )
    assert ready_at_kill < len(names), "the kill came too late to interrupt anything"
    env.op.start()
    env.op.wait_healthy()
    for n in names:
        live = wait_condition(env, n, "Ready", timeout=120)
        assert keys(env.children(n)) == sorted(expected_keys(live)), n
    # After the restart every cluster was picked up again: as `resume` if kopf had recorded it
    # as handled before the kill, as `create` if the kill interrupted its first pass.
    assert env.op.reconciles("resume") + env.op.reconciles("create") >= len(names)
    # No orphans: everything we label is controlled by an EPDCluster that exists.
    uids = {
        o["metadata"]["uid"] for o in json.loads(env.kubectl("get", "epdc", "-o", "json"))["items"]
    }
    everything = env.children()
    assert len(everything) == len({(o["kind"], o["metadata"]["name"]) for o in everything})
    for obj in everything:
        owners = [
            r["uid"] for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")
        ]
        assert owners, obj["metadata"]["name"]
        assert owners[0] in uids, obj["metadata"]["name"]
    env.kubectl("delete", "epdc", *names, "--wait=false")
    wait_for("the 20 clusters' children to go", lambda: not env.children(), timeout=120)


def set_spec(env: Env, name: str, spec: dict[str, Any]) -> None:
    """Replace the whole spec (a JSON patch: no resourceVersion race with status writes)."""
    env.kubectl(
        "patch",
        "epdc",
        name,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec", "value": spec}]),
    )


def operator_invalid_sample() -> tuple[dict[str, Any], str, str]:
    for path in sorted((SAMPLE_DIR / "invalid").glob("*.yaml")):
        text = path.read_text()
        if "# rejected-by: operator" in text:
            fields = dict(re.findall(r"^# (path|expect): (.+)$", text, re.MULTILINE))
            return yaml.safe_load(text), fields["path"], fields["expect"]
    raise AssertionError("no sample in crds/samples/invalid is rejected by the operator")


def test_6_invalid_spec_is_degraded_with_an_event_and_others_unaffected(env: Env) -> None:
    bad, path, expect = operator_invalid_sample()
    name = bad["metadata"]["name"]
    env.apply(bad, minimal("good-neighbour"))
    live = wait_condition(env, name, "Degraded")
    degraded = condition(live, "Degraded")
    assert degraded["reason"] == c.REASON_SPEC_INVALID
    assert path in degraded["message"]
    assert expect in degraded["message"]
    assert condition(live, "Ready")["status"] == "False"
    assert env.children(name) == []
    assert health(live)["status"] == "Degraded"
    events = json.loads(
        env.kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name},reason={c.REASON_SPEC_INVALID}",
            "-o",
            "json",
        )
    )["items"]
    assert events, "no SpecInvalid Event"
    assert path in events[0]["message"]
    assert events[0]["type"] == "Warning"
    wait_condition(env, "good-neighbour", "Ready")
    # Fixing the spec heals it.
    set_spec(env, name, minimal(name)["spec"])
    wait_condition(env, name, "Ready")
    env.kubectl("delete", "epdc", name, "good-neighbour", "--wait=false")


def test_7_absent_rdma_resource_is_insufficient_resources(env: Env) -> None:
    obj = copy.deepcopy(load(SAMPLE_DIR / "full-epd-rdma.yaml"))
    obj["metadata"] = {"name": "no-rdma-here"}
    obj["spec"].setdefault("rdma", {})["resourceName"] = "rdma/absent_hca"
    env.apply(obj)
    live = wait_condition(env, "no-rdma-here", "Degraded")
    degraded = condition(live, "Degraded")
    assert degraded["reason"] == c.REASON_INSUFFICIENT_RESOURCES
    assert "rdma/absent_hca" in degraded["message"]
    assert health(live)["status"] == "Degraded"
    env.kubectl("delete", "epdc", "no-rdma-here", "--wait=false")


def report_preflight_as_the_kubelet(env: Env, name: str, pod: str, tmp_path: Path) -> None:
    """kwok: run the real preflight here on the launch config `pod` mounts, and put its report
    into the pod status as the init container's termination message (the kubelet's part)."""
    # The immutable launch ConfigMap of the revision the prefill pods mount.
    sts = json.loads(env.kubectl("get", "statefulset", f"{name}-prefill", "-o", "json"))
    (mounted,) = [
        v["configMap"]["name"]
        for v in sts["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "launch-config"
    ]
    cm = json.loads(env.kubectl("get", "configmap", mounted, "-o", "json"))
    launch = tmp_path / f"{name}-launch.json"
    launch.write_text(cm["data"]["launch.json"], encoding="utf-8")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "epd-engine"), "--preflight"],
        env={
            **os.environ,
            "EPD_LAUNCH_CONFIG": str(launch),
            "EPD_ROLE": "prefill",
            "EPD_PREFLIGHT_OUT": str(launch.with_suffix(".report")),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = done.stdout.strip().splitlines()[-1]
    assert json.loads(report)["reason"] == "NoRDMADevice"
    spec = json.loads(env.kubectl("get", "pod", pod, "-o", "json"))["spec"]
    (init,) = spec["initContainers"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "initContainerStatuses": [
            {
                "name": init["name"],
                "image": init["image"],
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": report,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ]
    }
    env.kubectl(
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_7b_a_pod_that_can_only_do_tcp_shows_transport_not_ready(env: Env, tmp_path: Path) -> None:
    """rdma.enabled, but the pod sees no RDMA device (this machine has none): the real
    preflight says so, and the operator turns it into TransportReady=False + an Event. On kind
    the preflight init container runs in the pod and the kubelet reports its termination
    message. kwok runs no containers, so there the test does the kubelet's one part: it puts
    the init container's termination message (the preflight's real output here) into the pod
    status."""
    obj = env.fitted(copy.deepcopy(load(SAMPLE_DIR / "full-epd-rdma.yaml")))
    name = "rdma-fallback"
    obj["metadata"] = {"name": name}
    env.apply(obj)
    pod = f"{name}-prefill-0"
    if env.cluster.provider == "kwok":
        live = wait_condition(env, name, "Ready")
        assert condition(live, "TransportReady")["status"] == "Unknown"  # nothing reported yet
        report_preflight_as_the_kubelet(env, name, pod, tmp_path)
    wait_condition(env, name, "TransportReady", status="False")
    live = wait_condition(env, name, "Ready")  # slower, still serving
    cond = condition(live, "TransportReady")
    assert cond["status"] == "False"
    assert cond["reason"] == "NoRDMADevice"
    assert pod in cond["message"]
    events = wait_for(
        "NoRDMADevice Event",
        lambda: json.loads(
            env.kubectl(
                "get",
                "events",
                "--field-selector",
                f"involvedObject.name={name},reason=NoRDMADevice",
                "-o",
                "json",
            )
        )["items"],
    )
    assert events[0]["type"] == "Warning"
    env.kubectl("delete", "epdc", name, "--wait=false")


def test_8_argocd_health_follows_a_real_lifecycle(env: Env) -> None:
    name = "argo-life"
    stream = watch(env, name)
    env.apply(minimal(name))
    seen = collect(stream, ready_at(1))
    verdicts = [health(o)["status"] for o in seen]
    assert verdicts[0] == "Progressing"  # no status yet, then rolling out
    assert "Healthy" not in verdicts[:-1]
    assert verdicts[-1] == "Healthy"
    # Break it after the fact: an invalid spec the apiserver admits.
    bad, _, _ = operator_invalid_sample()
    set_spec(env, name, bad["spec"])
    assert health(wait_condition(env, name, "Degraded"))["status"] == "Degraded"
    env.kubectl("delete", "epdc", name, "--wait=false")


class ScaleClient:
    """The /scale subresource of one EPDRoleScaler as HPA's scale client uses it: GET the
    autoscaling/v1 Scale, PUT it back with spec.replicas changed (admin credentials)."""

    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.path = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{NS}/{c.SCALER_PLURAL}/{name}/scale"

    def get(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.env.kubectl("get", "--raw", self.path))
        return out

    def put(self, scale: dict[str, Any]) -> None:
        self.env.kubectl("replace", "--raw", self.path, "-f", "-", input=json.dumps(scale))


def sts_of(env: Env, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(env.kubectl("get", "sts", name, "-o", "json"))
    return out


def scaler_of(env: Env, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(env.kubectl("get", c.SCALER_PLURAL, name, "-o", "json"))
    return out


def pod_uids(env: Env, cluster: str, role: str) -> dict[str, str]:
    items = json.loads(
        env.kubectl(
            "get", "pods", "-l", f"{c.LABEL_INSTANCE}={cluster},{c.LABEL_ROLE}={role}", "-o", "json"
        )
    )["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in items}


SCALING_TIMELINE = REPO / "artifacts" / "scaling-timeline.txt"


def test_8b_per_role_scaling_through_the_role_scalers(env: Env) -> None:
    name = "scaled"
    enc, dec = f"{name}-encoder", f"{name}-decode"
    obj = minimal(name)
    obj["spec"]["roles"]["decode"] = {"replicasFrom": "Scaler", "maxReplicas": 4}
    env.apply(obj)
    wait_condition(env, name, "Ready")
    # One scaler per role, seeded from the spec, with the /scale subresource HPA reads.
    assert scaler_of(env, enc)["spec"]["replicas"] == 1
    assert scaler_of(env, dec)["spec"]["replicas"] == 1
    api = ScaleClient(env, dec)
    scale = api.get()
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"]["replicas"] == 1
    assert scale["status"]["replicas"] == 1
    sel = dict(kv.split("=") for kv in scale["status"]["selector"].split(","))
    assert sel[c.LABEL_INSTANCE] == name
    assert sel[c.LABEL_ROLE] == "decode"
    enc_gen = sts_of(env, enc)["metadata"]["generation"]
    timeline: list[str] = []

    def step(what: str, t0: float, cond: Callable[[], bool]) -> None:
        wait_for(what, cond, timeout=RESYNC + 30, interval=0.05)
        timeline.append(f"  +{time.monotonic() - t0:6.2f}s  {what}")

    # Scale-up with the real kubectl: only the decode StatefulSet follows, and stays.
    t0 = time.monotonic()
    timeline.append("scale-up: kubectl scale epdrs/scaled-decode --replicas=3")
    env.kubectl("scale", c.SCALER_PLURAL, dec, "--replicas=3")
    step(
        "decode StatefulSet spec.replicas = 3",
        t0,
        lambda: sts_of(env, dec)["spec"]["replicas"] == 3,
    )
    step("3 decode pods exist", t0, lambda: len(pod_uids(env, name, "decode")) == 3)
    step(
        "scaler status.readyReplicas = 3 (/scale status.replicas = 3)",
        t0,
        lambda: scaler_of(env, dec).get("status", {}).get("readyReplicas") == 3,
    )
    step(
        "EPDCluster Ready, status.roles.decode 3/3",
        t0,
        lambda: (
            (o := env.get(name))["status"]["roles"]["decode"].get("ready") == "3/3"
            and condition(o, "Ready").get("status") == "True"
        ),
    )
    time.sleep(RESYNC + 1)  # a resync later: not reverted
    assert scaler_of(env, dec)["spec"]["replicas"] == 3
    assert sts_of(env, dec)["spec"]["replicas"] == 3
    assert sts_of(env, enc)["metadata"]["generation"] == enc_gen
    assert sts_of(env, enc)["spec"]["replicas"] == 1
    roles = env.get(name)["status"]["roles"]
    assert roles["decode"]["replicasFrom"] == "Scaler"
    assert roles["decode"]["desiredReplicas"] == 3
    assert roles["encoder"]["replicasFrom"] == "Spec"

    # Scale-down exactly as HPA writes: read the Scale, PUT it back with a new spec.replicas.
    t0 = time.monotonic()
    timeline.append("scale-down: PUT /scale (autoscaling/v1 Scale) spec.replicas=1, as HPA")
    scale = api.get()
    scale["spec"]["replicas"] = 1
    api.put(scale)
    step(
        "decode StatefulSet spec.replicas = 1",
        t0,
        lambda: sts_of(env, dec)["spec"]["replicas"] == 1,
    )
    step("1 decode pod left", t0, lambda: len(pod_uids(env, name, "decode")) == 1)
    step(
        "/scale status.replicas = 1",
        t0,
        lambda: api.get()["status"]["replicas"] == 1,
    )
    SCALING_TIMELINE.parent.mkdir(exist_ok=True)
    SCALING_TIMELINE.write_text("\n".join(timeline) + "\n")
    print("\n".join(timeline))

    # Clamp: maxReplicas 4 holds, and says so in status and in one Event.
    env.kubectl("scale", c.SCALER_PLURAL, dec, "--replicas=9")
    wait_for(
        "the clamped count", lambda: sts_of(env, dec)["spec"]["replicas"] == 4, timeout=RESYNC + 10
    )
    wait_for(
        "the clamp in status",
        lambda: (
            "maxReplicas 4" in (env.get(name)["status"]["roles"]["decode"].get("clamped") or "")
        ),
        timeout=RESYNC + 10,
    )
    assert scaler_of(env, dec)["spec"]["replicas"] == 9  # the autoscaler's number is kept
    wait_for(
        "the scaler's status to show the clamp",
        lambda: scaler_of(env, dec).get("status", {}).get("desiredReplicas") == 4,
        timeout=RESYNC + 10,
    )
    cols = printer_columns(env.kubectl("get", c.SCALER_PLURAL, dec))
    assert (cols["ROLE"], cols["OWNER"], cols["WANTED"], cols["DESIRED"]) == (
        "decode",
        "Scaler",
        "9",
        "4",
    )
    events = json.loads(
        env.kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name},reason={c.REASON_REPLICAS_CLAMPED}",
            "-o",
            "json",
        )
    )["items"]
    assert [e["message"] for e in events] == ["decode: lowered from 9 to maxReplicas 4"]

    # A role whose number the spec owns: a hand scale of its scaler is put back.
    env.kubectl("scale", c.SCALER_PLURAL, enc, "--replicas=3")
    wait_for(
        "the spec-owned scaler to be reverted",
        lambda: scaler_of(env, enc)["spec"]["replicas"] == 1,
        timeout=RESYNC + 10,
    )
    assert sts_of(env, enc)["metadata"]["generation"] == enc_gen

    # Switching the owner back to the spec restarts no pod: same pods, same template.
    wait_condition(env, name, "Ready")
    pods = pod_uids(env, name, "decode")
    dec_gen = sts_of(env, dec)["metadata"]["generation"]
    spec = env.get(name)["spec"]
    spec["roles"]["decode"] = {"replicasFrom": "Spec", "replicas": 4}
    set_spec(env, name, spec)
    live = wait_condition(env, name, "Ready")
    assert live["status"]["roles"]["decode"]["replicasFrom"] == "Spec"
    assert pod_uids(env, name, "decode") == pods
    assert sts_of(env, dec)["metadata"]["generation"] == dec_gen
    wait_for(
        "the scaler to follow the spec",
        lambda: scaler_of(env, dec)["spec"]["replicas"] == 4,
        timeout=RESYNC + 10,
    )
    env.kubectl("delete", "epdc", name, "--wait=false")


def partitions_of(env: Env, name: str) -> dict[str, int]:
    sets = json.loads(env.kubectl("get", "sts", "-l", f"{c.LABEL_INSTANCE}={name}", "-o", "json"))[
        "items"
    ]
    return {
        o["metadata"]["labels"][c.LABEL_ROLE]: o["spec"]["updateStrategy"]["rollingUpdate"][
            "partition"
        ]
        for o in sets
    }


def test_8c_a_coordinated_rollout_survives_an_operator_kill(env: Env) -> None:
    """2E/2P/2D, image change: the operator lowers every role's partition to 1 (step 1),
    is SIGKILLed there, and the restarted operator finishes the rollout from the live
    StatefulSets (the planner keeps no state of its own)."""
    name = "roll-kill"
    obj = minimal(name)
    obj["spec"]["roles"] = {r: {"replicas": 2} for r in ("encoder", "prefill", "decode")}
    env.apply(obj)
    wait_condition(env, name, "Ready", timeout=120)
    assert set(partitions_of(env, name).values()) == {0}
    env.image_with_tag("rolled")  # on kind: a tag the nodes hold
    env.kubectl(
        "patch",
        "epdc",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"image": {"tag": "rolled"}}}),
    )
    wait_for(
        "step 1 on every role",
        lambda: set(partitions_of(env, name).values()) == {1},
        timeout=60,
        interval=0.05,
    )
    env.op.kill()
    held = partitions_of(env, name)
    time.sleep(3)
    assert partitions_of(env, name) == held  # nobody moves the rollout while it is down
    env.op.start()
    env.op.wait_healthy()
    live = wait_rolled_out(env, name, timeout=180)
    assert set(partitions_of(env, name).values()) == {0}
    assert live["status"]["rollout"] == {"step": 0, "steps": 0, "paused": False}
    for sts in json.loads(
        env.kubectl("get", "sts", "-l", f"{c.LABEL_INSTANCE}={name}", "-o", "json")
    )["items"]:
        (ctr,) = sts["spec"]["template"]["spec"]["containers"]
        assert ctr["image"].endswith(":rolled")
        assert sts["status"]["updatedReplicas"] == 2
    env.kubectl("delete", "epdc", name, "--wait=false")


def test_9_healthz_fails_once_the_credentials_are_gone(env: Env) -> None:
    # Last: it leaves the operator without credentials (what `helm uninstall` does to it).
    op = env.op
    if not isinstance(op, OperatorProcess):
        pytest.skip("the in-cluster operator's pod goes with its ServiceAccount")
    name = "healthz-probe"
    env.apply(minimal(name))
    wait_condition(env, name, "Ready")
    assert op.healthz() == 200
    env.cluster.kubectl("-n", OP_NS, "delete", "serviceaccount", SA)
    # The apiserver refuses the token once its authenticator has seen the deletion.
    wait_for(
        "the operator's token to be refused",
        lambda: (
            env.cluster.kubectl(
                "--kubeconfig", str(op.kubeconfig), "get", "--raw", "/api", check=False
            ).returncode
            != 0
        ),
        timeout=30,
        interval=0.5,
    )
    # The probe asks the API nothing, and the open watches keep streaming (the apiserver
    # authenticated them when they started): the first request after this is refused. A
    # child deleted by hand is seen through the watch; restoring it is that request.
    env.kubectl("delete", "svc", f"{name}-encoder")
    # kopf caches probe results for 10 s.
    wait_for("/healthz to fail", lambda: op.healthz() == 500, timeout=60, interval=1)
