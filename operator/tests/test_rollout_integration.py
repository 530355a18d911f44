"""Rollouts on the real control plane (kwok: real kube-apiserver and kube-controller-manager,
simulated pods): revision-named launch ConfigMaps followed step by step.

The reconcile passes run here, in this process, with admin credentials, exactly as the
operator's handlers run them; the StatefulSet controller is the real one, so pods are
replaced from the templates the operator writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from api_samples import sample

from e2e.operator_proc import image_tagged, operator_config
from e2e.providers import Cluster
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.kube import Kube
from epd_operator.reconcile.revisions import LAUNCH_HISTORY, mounted_launch_config

pytestmark = pytest.mark.integration

NS = "epd-rollout"
NAME = "roll"
ROLES = ("encoder", "prefill", "decode")


@dataclass
class Env:
    cluster: Cluster
    kube: Kube
    cfg: OperatorConfig
    memory: StatusMemory = field(default_factory=StatusMemory)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", NS, *args, input=input, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def reconcile(self) -> int:
        out = reconcile(self.kube, self.get("epdc", NAME), self.cfg, self.memory)
        assert not out.problems, out.problems
        return out.writes

    def patch(self, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "epdc", NAME, "--type=merge", "-p", json.dumps({"spec": spec}))

    def image_tag(self, tag: str) -> str:
        """Patch spec.image.tag to `tag`; the engine image pods will then run."""
        image = image_tagged(self.cluster, self.cfg.engine_image, tag)
        self.patch({"image": {"tag": tag}})
        return image

    def launch_configmaps(self) -> set[str]:
        items = self.get(
            "configmaps",
            "-l",
            f"{c.LABEL_INSTANCE}={NAME},{c.LABEL_COMPONENT}={c.COMPONENT_CONFIG}",
        )
        return {i["metadata"]["name"] for i in items["items"]}

    def mounts(self) -> dict[str, str | None]:
        """workload name -> the launch ConfigMap its template mounts."""
        out: dict[str, str | None] = {}
        for kind in ("statefulsets", "deployments"):
            for o in self.get(kind, "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]:
                out[o["metadata"]["name"]] = mounted_launch_config(o["spec"]["template"]["spec"])
        return out

    def pod_mounts(self) -> dict[str, str | None]:
        pods = self.get("pods", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
        return {p["metadata"]["name"]: mounted_launch_config(p["spec"]) for p in pods}

    def ready(self) -> bool:
        phase = (self.get("epdc", NAME).get("status") or {}).get("phase")
        return bool(phase == "Ready")


def follow(env: Env, what: str, done: Callable[[], bool], timeout: float = 180) -> int:
    """Reconcile until `done`, checking at every step that every pod's launch ConfigMap
    exists (an old one outlives its last pod); returns the number of steps."""
    deadline = time.monotonic() + timeout
    steps = 0
    while time.monotonic() < deadline:
        env.reconcile()
        steps += 1
        present = env.launch_configmaps()
        for pod, cm in env.pod_mounts().items():
            assert cm in present, f"step {steps}: pod {pod} mounts {cm}, gone ({present})"
        if done():
            return steps
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def env(cluster: Cluster) -> Iterator[Env]:
    path = crdgen.targets(crdgen.repo_root())[0]
    scaler = crdgen.targets(crdgen.repo_root(), c.SCALER_CRD_FILENAME)[0]
    for p in (path, scaler):
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=epd-rollout-tests",
            "-f",
            str(p),
        )
    for crd in (c.CRD_NAME, c.SCALER_CRD_NAME):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    cluster.kubectl("create", "namespace", NS)
    obj = sample("minimal-epd")
    obj["metadata"] = {"name": NAME, "namespace": NS}
    obj["spec"]["roles"] = {role: {"replicas": 2} for role in ROLES}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kube = Kube.from_environment(kubeconfig=str(cluster.kubeconfig))
    e = Env(cluster, kube, operator_config(cluster))
    follow(e, "the first rollout", e.ready)
    try:
        yield e
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_launch_configmaps_are_per_revision_and_outlive_their_pods(env: Env) -> None:
    (first,) = env.launch_configmaps()
    assert env.get("configmap", first)["immutable"] is True
    pdbs = env.get("pdb", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
    assert {p["metadata"]["name"]: p["spec"]["maxUnavailable"] for p in pdbs} == {
        f"{NAME}-{role}": 1 for role in ROLES
    }
    # The disruption controller counts the role's pods through the budget's selector.
    follow(
        env,
        "the budgets observed",
        lambda: all(
            (p.get("status") or {}).get("expectedPods") == 2
            for p in env.get("pdb", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
        ),
    )
    assert set(env.mounts().values()) == {first}

    # A setting only decode reads: decode (and the router, which reads every role) move to
    # a new revision; encoder and prefill keep the old ConfigMap and are not restarted.
    pods_before = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in env.get("pods", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
    }
    env.patch({"roles": {"decode": {"extraArgs": ["--enforce-eager"]}}})
    follow(env, "decode on a new revision", env.ready)
    (second,) = env.launch_configmaps() - {first}
    mounts = env.mounts()
    assert mounts == {
        f"{NAME}-encoder": first,
        f"{NAME}-prefill": first,
        f"{NAME}-decode": second,
        f"{NAME}-router": second,
    }
    pods_after = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in env.get("pods", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
    }
    for role in ("encoder", "prefill"):
        for i in range(2):
            pod = f"{NAME}-{role}-{i}"
            assert pods_after[pod] == pods_before[pod], f"{pod} was restarted"
    assert first in env.launch_configmaps()  # encoder and prefill pods still mount it

    # Wiring every role reads, twice: everything moves together; once no pod mounts the old
    # revisions, only the newest LAUNCH_HISTORY unreferenced ones are kept.
    for port in (16000, 16001):
        env.patch({"ecTransfer": {"controlPort": port}})
        follow(env, f"every role on controlPort {port}", env.ready)
    current = set(env.mounts().values())
    assert len(current) == 1
    assert set(env.pod_mounts().values()) == current
    follow(
        env,
        "old launch ConfigMaps pruned",
        lambda: len(env.launch_configmaps()) == 1 + LAUNCH_HISTORY,
    )
    left = env.launch_configmaps()
    assert first not in left  # the oldest unreferenced revision went
    assert second in left
    assert current <= left
    assert env.reconcile() == 0  # and a pass with nothing to do writes nothing


def observe(env: Env) -> dict[str, Any]:
    """One look at the rollout: per-role partition, updated pods and images; the status."""
    sets = {
        o["metadata"]["labels"][c.LABEL_ROLE]: o
        for o in env.get("statefulsets", "-l", f"{c.LABEL_INSTANCE}={NAME}")["items"]
    }
    status = env.get("epdc", NAME).get("status") or {}
    progressing: dict[str, Any] = next(
        (x for x in status.get("conditions") or [] if x["type"] == c.CONDITION_PROGRESSING), {}
    )
    return {
        "partition": {
            r: s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] for r, s in sets.items()
        },
        "updated": {r: (s.get("status") or {}).get("updatedReplicas", 0) for r, s in sets.items()},
        "image": {
            r: s["spec"]["template"]["spec"]["containers"][0]["image"] for r, s in sets.items()
        },
        "rollout": status.get("rollout"),
        "progressing": (
            progressing.get("status"),
            progressing.get("reason"),
            progressing.get("message", ""),
        ),
        "phase": status.get("phase"),
    }


def test_an_image_change_rolls_every_role_in_lock_step(env: Env) -> None:
    """2E/2P/2D, maxUnavailable 1: two steps, one pod of every role per step; the launch
    ConfigMaps do not change (the image is not in the launch config); an operator restart
    mid-rollout (a fresh StatusMemory) resumes from the live objects."""
    configmaps = env.launch_configmaps()
    v2 = env.image_tag("v2")
    trace: list[dict[str, Any]] = []

    def step() -> bool:  # `follow` has just run one reconcile pass
        seen = observe(env)
        trace.append(seen)
        if len(trace) == 3:
            env.memory = StatusMemory()  # the operator restarts: no state but the cluster's
        return bool(seen["phase"] == "Ready" and set(seen["image"].values()) == {v2})

    follow(env, "the image rollout", step)
    partitions = [tuple(sorted(t["partition"].values())) for t in trace]
    passes = "\n".join(f"pass {i}: {t}" for i, t in enumerate(trace))
    # Lock-step: every role has the same partition at every pass (2 pods each), and the
    # partitions only go down: 1 (step 1: pod 1 of each role), then 0 (step 2).
    assert all(len(set(p)) == 1 for p in partitions), passes
    seq = [p[0] for p in partitions]
    assert seq == sorted(seq, reverse=True)
    assert seq[0] == 1
    assert seq[-1] == 0
    active = [t for t in trace if t["rollout"] and t["rollout"]["steps"]]
    assert active, trace
    assert {t["rollout"]["steps"] for t in active} == {2}
    assert [t["rollout"]["step"] for t in active] == sorted(t["rollout"]["step"] for t in active)
    for t in active:
        status_, _, message = t["progressing"]
        if status_ == "True":
            assert message.startswith(f"step {t['rollout']['step']}/2: "), message
    # The new revision's share never differs by a whole pod between roles.
    for t in trace:
        assert max(t["updated"].values()) - min(t["updated"].values()) <= 1, trace
    assert trace[-1]["rollout"] == {"step": 0, "steps": 0, "paused": False}
    assert env.launch_configmaps() == configmaps


def test_paused_stops_a_rollout_mid_way_and_resumes(env: Env) -> None:
    env.image_tag("v3")
    env.reconcile()  # step 1 is applied: partition 1 everywhere
    env.patch({"paused": True})
    follow(env, "the held step", lambda: bool((observe(env)["rollout"] or {}).get("paused")))
    held = observe(env)
    assert set(held["partition"].values()) == {1}, held
    # A further change while paused waits too: templates keep v3.
    v4 = env.image_tag("v4")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        env.reconcile()
        seen = observe(env)
        assert seen["partition"] == held["partition"], seen
        assert set(seen["image"].values()) == set(held["image"].values())
        time.sleep(0.5)
    assert seen["rollout"]["paused"] is True
    assert seen["progressing"][:2] == ("True", c.REASON_ROLLOUT_PAUSED)
    env.patch({"paused": False})
    follow(
        env,
        "the resumed rollout",
        lambda: bool(
            observe(env)["phase"] == "Ready" and set(observe(env)["image"].values()) == {v4}
        ),
    )
    assert set(observe(env)["partition"].values()) == {0}
