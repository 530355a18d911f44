"""The watch-fed caches against a real kube-apiserver (kwok): a pass that finds nothing to do
reads nothing, a child deleted by hand is seen only through the watch and restored, a
watch that breaks (its events lost) re-lists and still sees what happened meanwhile, an idle
watch shows signs of life (bookmarks) and one whose credentials are gone fails the liveness
judge, the engine pods' preflight reports come from the pod cache, and so do the pods a
rollout steps on and the launch ConfigMap prune reads.

The only thing injected is the broken connection (`Flaky` drops the Service watch at the
test's word, swallowing the event in flight, as a reset connection would); the listing, the
watches, the resourceVersions and the apply are the apiserver's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from api_samples import sample

from e2e.operator_proc import operator_config, serviceaccount_kubeconfig
from e2e.providers import Cluster
from epd_connector.launch.preflight import REPORT_VERSION, report_text
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.reconcile.cache import Caches
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.health import watch_problems
from epd_operator.reconcile.kube import CHILD_KINDS, NODE, Kind, Kube, KubeError
from epd_operator.render.names import router_name

pytestmark = pytest.mark.integration

NS = "epd-cache"
NAME = "cached"


class Flaky(Kube):
    """The real client, whose Service watch can be cut: `cut.set()`, and the next Service
    event is lost with the connection."""

    cut = threading.Event()
    cuts = 0

    def watch_kind(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_s: int,
    ) -> Iterator[dict[str, Any]]:
        for event in super().watch_kind(kind, namespace, selector, resource_version, timeout_s):
            if kind.kind == "Service" and self.cut.is_set():
                self.cut.clear()
                Flaky.cuts += 1
                raise KubeError("watch", "services", 0, "connection reset (injected)")
            yield event


@dataclass
class Env:
    cluster: Cluster
    kube: Flaky
    caches: Caches
    cfg: OperatorConfig
    told: list[tuple[str, str]] = field(default_factory=list)
    memory: StatusMemory = field(default_factory=StatusMemory)

    def kubectl(self, *args: str) -> Any:
        return self.cluster.kubectl("-n", NS, *args)

    def reconcile(self) -> tuple[int, int, list[str]]:
        """One pass over the live EPDCluster: (writes, reads from the API, what it applied)."""
        obj = json.loads(self.kubectl("get", "epdc", NAME, "-o", "json").stdout)
        reads = self.kube.reads.total()
        out = reconcile(self.kube, obj, self.cfg, self.memory, cache=self.caches)
        assert not out.problems, out.problems
        return out.writes, self.kube.reads.total() - reads, out.applied

    def cached(self) -> set[str]:
        """ "Kind/name" of each child the cache holds."""
        return {
            f"{o['kind']}/{o['metadata']['name']}"
            for o in self.caches.children.children(NS, NAME) or []
        }


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def env(cluster: Cluster) -> Iterator[Env]:
    for path in (
        crdgen.targets(crdgen.repo_root())[0],
        crdgen.targets(crdgen.repo_root(), c.SCALER_CRD_FILENAME)[0],
    ):
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=epd-cache-tests",
            "-f",
            str(path),
        )
    for crd in (c.CRD_NAME, c.SCALER_CRD_NAME):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    cluster.kubectl("create", "namespace", NS)
    obj = sample("minimal-epd")
    obj["metadata"] = {"name": NAME, "namespace": NS}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kube = Flaky.from_environment(kubeconfig=str(cluster.kubeconfig))
    assert isinstance(kube, Flaky)
    told: list[tuple[str, str]] = []
    caches = Caches(kube, [NS], on_change=lambda ns, inst: told.append((ns, inst)))
    caches.start()
    e = Env(cluster, kube, caches, operator_config(cluster), told)
    try:
        wait_for(
            "the caches' first listings",
            lambda: (
                caches.children.children(NS, NAME) is not None
                and caches.nodes.capacity() is not None
            ),
        )
        yield e
    finally:
        caches.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_a_pass_with_nothing_to_do_reads_nothing_from_the_api(env: Env) -> None:
    writes, reads, applied = env.reconcile()
    assert writes > 0
    assert reads == 0  # children and nodes came from the caches
    # What we applied is in the cache at once (our write's answer), before any watch event.
    assert set(applied) <= env.cached()
    for _ in range(5):  # status follows the workloads' status; then nothing more to do
        writes, reads, _ = env.reconcile()
        assert reads == 0
        if writes == 0:
            break
    assert writes == 0


def test_a_child_deleted_by_hand_is_seen_through_the_watch_and_restored(env: Env) -> None:
    router = f"Service/{router_name(NAME)}"
    wait_for("the router Service in the cache", lambda: router in env.cached())
    env.told.clear()
    env.kubectl("delete", router.lower())
    wait_for("the watch to drop the Service", lambda: router not in env.cached())
    assert (NS, NAME) in env.told  # the owner is told: the handlers run its pass
    _, reads, applied = env.reconcile()
    assert applied == [router]
    assert reads == 0
    assert json.loads(env.kubectl("get", router.lower(), "-o", "json").stdout)


def test_a_broken_watch_relists_and_sees_the_deletion_it_missed(env: Env) -> None:
    router = f"Service/{router_name(NAME)}"
    svc = next(r for r in env.caches.children.reflectors if r.kind.kind == "Service")
    lists, cuts = svc.lists, Flaky.cuts
    wait_for("the router Service in the cache", lambda: router in env.cached())
    env.told.clear()
    env.kube.cut.set()
    env.kubectl("delete", router.lower())  # its DELETED event is lost with the watch
    wait_for("the re-list after the broken watch", lambda: svc.lists > lists)
    assert Flaky.cuts == cuts + 1
    wait_for("the cache current again", lambda: env.caches.children.children(NS, NAME) is not None)
    assert router not in env.cached()
    assert (NS, NAME) in env.told
    _, reads, applied = env.reconcile()
    assert applied == [router]
    assert reads == 0


def test_a_pass_on_a_stale_cache_reads_the_api(env: Env) -> None:
    svc = next(r for r in env.caches.children.reflectors if r.kind.kind == "Service")
    env.caches.children.set_synced(svc.scope, False)  # what a broken watch does until re-list
    try:
        writes, reads, _ = env.reconcile()
        assert writes == 0
        assert reads == len(env.caches.children.reflectors)  # one LIST per child kind
    finally:
        env.caches.children.set_synced(svc.scope, True)


def test_a_live_idle_watch_is_healthy_and_a_stuck_one_is_not(env: Env) -> None:
    """A minute and more of nothing: no request, the same streams (bookmarks keep them
    current), healthy; the judge calls a stream stuck only once it outlived its timeout."""
    wait_for("a quiet moment", env.caches.synced)
    before = {s.name: s for s in env.caches.states()}
    reads = env.kube.reads.total()
    bookmarks = sum(r.bookmarks for r in env.caches.children.reflectors)
    wait_for(
        "bookmarks on the idle streams",
        lambda: sum(r.bookmarks for r in env.caches.children.reflectors) > bookmarks,
        timeout=75,
    )
    now = time.monotonic()
    states = env.caches.states()
    assert env.kube.reads.total() == reads  # no re-list, no renewal: the same streams
    assert [s.deadline for s in states] == [before[s.name].deadline for s in states]
    assert watch_problems(states, now) == []
    stuck_at = max(s.deadline or 0 for s in states) + 1
    assert len(watch_problems(states, stuck_at)) == len(states)


def test_a_watch_whose_credentials_are_gone_fails_the_liveness_check(
    env: Env, tmp_path: Path
) -> None:
    """Caches running as a ServiceAccount that is then deleted: the open streams go on (the
    apiserver authenticated them once), the next renewal is refused, and the probe's judge
    names the watch. Renewals every 3 s here (30-60 min in the operator)."""
    sa = "epd-cache-probe"
    rules = [
        {
            "apiGroups": [k.api_version.rpartition("/")[0]],
            "resources": [k.plural],
            "verbs": ["list", "watch"],
        }
        for k in (*CHILD_KINDS, NODE)
    ]
    env.cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": sa, "namespace": NS},
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRole",
                        "metadata": {"name": sa},
                        "rules": rules,
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": sa},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": sa,
                        },
                        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}],
                    },
                ],
            }
        ),
    )
    kc = serviceaccount_kubeconfig(env.cluster, NS, sa, tmp_path / "sa.kubeconfig")
    kube = Kube.from_environment(kubeconfig=str(kc))
    caches = Caches(kube, [NS], watch_timeout_s=(3, 3))
    caches.start()
    try:
        wait_for("the first listings", caches.synced)
        renewals = kube.reads.snapshot().get(("Service", "watch"), 0)
        wait_for(
            "a renewal",
            lambda: kube.reads.snapshot().get(("Service", "watch"), 0) > renewals,
            timeout=15,
        )
        assert watch_problems(caches.states(), time.monotonic()) == []
        env.cluster.kubectl("-n", NS, "delete", "serviceaccount", sa)
        problems = wait_for(
            "the judge to name the refused watches",
            lambda: [
                p
                for p in watch_problems(caches.states(), time.monotonic())
                if "refused our credentials (HTTP 401)" in p
            ],
            timeout=30,
        )
        assert any(p.startswith(f"services in {NS}:") for p in problems), problems
        assert kube.unauthorized is not None  # what the runtime's probe also fails on
        assert kube.unauthorized.status == 401
    finally:
        caches.stop()
        env.cluster.kubectl("delete", "clusterrolebinding,clusterrole", sa, check=False)


def test_the_engine_pods_come_from_the_pod_cache(env: Env) -> None:
    """An RDMA cluster: the first pass starts the pod cache (and lists once meanwhile); a
    preflight report put into a pod's status reaches the cache through the watch, tells the
    owner, and the next pass turns it into TransportReady without listing pods."""
    name = "cached-rdma"
    obj = sample("minimal-epd")
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["rdma"] = {"enabled": True, "resourceName": "rdma/hca", "count": 1}
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    live = json.loads(env.kubectl("get", "epdc", name, "-o", "json").stdout)
    out = reconcile(env.kube, live, env.cfg, env.memory, cache=env.caches)
    assert out.applied
    assert env.caches.pods.started
    pod = f"{name}-decode-0"

    def pod_exists() -> bool:
        got = env.kubectl("get", "pod", pod, "--ignore-not-found", "-o", "name")
        return bool(got.stdout.strip())

    wait_for("the StatefulSet's pod", pod_exists)
    wait_for(
        "the pod in the cache",
        lambda: pod in {p["metadata"]["name"] for p in env.caches.pods.pods(NS, name) or []},
    )
    report = report_text(
        {
            "v": REPORT_VERSION,
            "transport": "tcp",
            "reason": "NoRDMADevice",
            "message": "no RDMA device",
        }
    )
    init = json.loads(env.kubectl("get", "pod", pod, "-o", "json").stdout)["spec"][
        "initContainers"
    ][0]
    env.told.clear()
    t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    env.kubectl(
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
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
                                    "startedAt": t,
                                    "finishedAt": t,
                                }
                            },
                        }
                    ]
                }
            }
        ),
    )
    wait_for("the owner to be told of the report", lambda: (NS, name) in env.told)
    reads = env.kube.reads.total()
    live = json.loads(env.kubectl("get", "epdc", name, "-o", "json").stdout)
    out = reconcile(env.kube, live, env.cfg, env.memory, cache=env.caches)
    assert env.kube.reads.total() == reads  # pods (and children, nodes) from the caches
    assert out.conditions["TransportReady"] == "False"
    status = json.loads(env.kubectl("get", "epdc", name, "-o", "json").stdout)["status"]
    cond = next(x for x in status["conditions"] if x["type"] == "TransportReady")
    assert (cond["reason"], pod in cond["message"]) == ("NoRDMADevice", True)


def test_a_rollout_steps_and_prunes_on_the_pod_cache(env: Env) -> None:
    """2 pods per role, a model change (new pod templates and launch ConfigMaps): every pass
    of the rollout reads its pods (readiness for the planner, mounted ConfigMaps for the
    prune) from the pod cache, none from the API, and the rollout still completes with the
    real StatefulSet controller replacing the pods."""
    name = "cached-roll"
    obj = sample("minimal-epd")
    obj["metadata"] = {"name": name, "namespace": NS}
    obj["spec"]["roles"] = {role: {"replicas": 2} for role in obj["spec"]["roles"]}
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    env.caches.pods.want()
    wait_for("the pod cache's listing", lambda: env.caches.pods.pods(NS, name) is not None)

    def passes_until(what: str, done: Callable[[dict[str, Any]], bool]) -> list[int]:
        """Reconcile until `done(status)`; the API reads of each pass."""
        reads: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            live = json.loads(env.kubectl("get", "epdc", name, "-o", "json").stdout)
            before = env.kube.reads.total()
            out = reconcile(env.kube, live, env.cfg, env.memory, cache=env.caches)
            assert not out.problems, out.problems
            reads.append(env.kube.reads.total() - before)
            status = json.loads(env.kubectl("get", "epdc", name, "-o", "json").stdout)["status"]
            if done(status):
                return reads
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def ready(status: dict[str, Any]) -> bool:
        return bool(status.get("phase") == "Ready")

    passes_until("the first rollout", ready)
    env.kubectl(
        "patch", "epdc", name, "--type=merge", "-p", json.dumps({"spec": {"model": {"name": "m2"}}})
    )
    rolled: list[dict[str, Any]] = []

    def rolled_out(status: dict[str, Any]) -> bool:
        rolled.append(status.get("rollout") or {})
        return ready(status) and rolled[-1] == {"step": 0, "steps": 0, "paused": False}

    reads = passes_until("the model rollout", rolled_out)
    assert any(r.get("steps") == 2 for r in rolled), rolled  # it did roll, in two steps
    assert reads == [0] * len(reads)  # pods, children and nodes from the caches
    sets = json.loads(
        env.kubectl("get", "statefulsets", "-l", f"{c.LABEL_INSTANCE}={name}", "-o", "json").stdout
    )["items"]
    assert {s["status"].get("updatedReplicas") for s in sets} == {2}
