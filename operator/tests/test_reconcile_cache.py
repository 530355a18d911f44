"""reconcile.cache: what the watch-fed caches hold after listings, events, re-lists and our own
writes, and whom they tell.

A scripted Kube (listings and watch streams given by each test) drives the reflectors here;
operator/tests/test_cache_integration.py runs the same caches against a real apiserver
(watch re-list after a broken watch, a child deleted and seen only through the watch).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from epd_connector.launch.preflight import (
    INIT_CONTAINER,
    REPORT_VERSION,
    parse_report,
    report_text,
)
from epd_operator.api import constants as c
from epd_operator.api.layout import VOLUME_LAUNCH_CONFIG
from epd_operator.reconcile import capacity, partitions, revisions
from epd_operator.reconcile.cache import (
    CHILD_SELECTOR,
    POD_SELECTOR,
    WATCH_TIMEOUT_S,
    Caches,
    ChildCache,
    NodeCache,
    PodCache,
    Reflector,
    newer,
)
from epd_operator.reconcile.kube import CHILD_KINDS, NODE, Kind, Kube, KubeError, Listing
from epd_operator.reconcile.transport import pod_report

CM = next(k for k in CHILD_KINDS if k.kind == "ConfigMap")
SVC = next(k for k in CHILD_KINDS if k.kind == "Service")


def child(
    kind: Kind, name: str, owner: str, rv: int, ns: str = "ns", **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "labels": {c.LABEL_INSTANCE: owner, c.LABEL_MANAGED_BY: c.MANAGED_BY},
            "managedFields": [{"manager": "epd-operator"}],
        },
        **extra,
    }


def node(name: str, gpus: str, rv: int, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": str(rv), "labels": labels},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "8", "nvidia.com/gpu": gpus},
            "conditions": [{"type": "Ready", "lastHeartbeatTime": str(rv)}],
        },
    }


class Scripted(Kube):
    """Listings and watch streams chosen by the test, per kind; every call recorded."""

    def __init__(self) -> None:
        super().__init__(lambda *a: (500, b"{}"))
        self.listings: dict[str, list[Listing | KubeError]] = {}
        self.streams: dict[str, list[list[dict[str, Any] | KubeError]]] = {}
        self.calls: list[tuple[str, str, str]] = []

    def list_kind(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str = "",
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Listing:
        self.calls.append(("list", kind.kind, selector))
        todo = self.listings.get(kind.kind) or [Listing([], "1")]
        got = todo.pop(0) if len(todo) > 1 else todo[0]
        if isinstance(got, KubeError):
            raise got
        items = [dict(o) for o in got.items]
        return Listing([keep(o) for o in items] if keep else items, got.resource_version)

    def watch_kind(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_s: int,
    ) -> Iterator[dict[str, Any]]:
        self.calls.append(("watch", kind.kind, resource_version))
        streams = self.streams.get(kind.kind) or []
        events = streams.pop(0) if streams else []
        for ev in events:
            if isinstance(ev, KubeError):
                raise ev
            yield ev


def run_once(kube: Kube, kind: Kind, sink: Any, ns: str | None = "ns") -> Reflector:
    r = Reflector(kube, kind, ns, "sel", sink)
    r.stop()  # one listing and one watch stream, then return
    r.run_once()
    return r


class Told:
    def __init__(self) -> None:
        self.owners: list[tuple[str, str]] = []

    def __call__(self, ns: str, inst: str) -> None:
        self.owners.append((ns, inst))


def synced_children(kube: Scripted, told: Told | None = None) -> ChildCache:
    cache = ChildCache(kube, ["ns"], told)
    for r in cache.reflectors:
        r.stop()
        r.run_once()
    return cache


def test_children_come_from_the_listing_by_owner_without_managed_fields() -> None:
    kube = Scripted()
    kube.listings["ConfigMap"] = [
        Listing([child(CM, "a-launch", "a", 5), child(CM, "b-launch", "b", 6)], "6")
    ]
    kube.listings["Service"] = [Listing([child(SVC, "a-router", "a", 7)], "7")]
    told = Told()
    cache = synced_children(kube, told)
    got = cache.children("ns", "a")
    assert got is not None
    assert sorted(o["metadata"]["name"] for o in got) == ["a-launch", "a-router"]
    assert all("managedFields" not in o["metadata"] for o in got)
    assert cache.children("ns", "nobody") == []
    assert sorted(set(told.owners)) == [("ns", "a"), ("ns", "b")]
    # One listing per kind, each followed by a watch from the listing's resourceVersion.
    assert [x for x in kube.calls if x[1] == "ConfigMap"] == [
        ("list", "ConfigMap", CHILD_SELECTOR),
        ("watch", "ConfigMap", "6"),
    ]


def test_children_are_kept_compressed_and_come_back_whole() -> None:
    # Each kind's first object is its dictionary: the others of the kind (same shape, other
    # names) shrink to a fraction of their JSON, and every one decodes to what was listed.
    data = {"launch.json": json.dumps({"model": "m", "args": ["--x"] * 50})}
    listed = [child(CM, f"c{i}-launch", f"c{i}", 10 + i, data=data) for i in range(20)]
    kube = Scripted()
    kube.listings["ConfigMap"] = [Listing(copy.deepcopy(listed), "40")]
    cache = synced_children(kube, Told())
    for i, want in enumerate(listed):
        want["metadata"].pop("managedFields")
        assert cache.children("ns", f"c{i}") == [want]
        size = len(json.dumps(want, separators=(",", ":")))
        kept = cache._objs[("ConfigMap", "ns", f"c{i}-launch")].packed
        assert len(kept) < (size if i == 0 else size / 4), (i, len(kept), size)


def test_children_is_none_until_every_kind_has_listed() -> None:
    kube = Scripted()
    cache = ChildCache(kube, ["ns"])
    for r in cache.reflectors[:-1]:
        r.stop()
        r.run_once()
    assert cache.children("ns", "a") is None  # the caller lists from the API then
    cache.reflectors[-1].stop()
    cache.reflectors[-1].run_once()
    assert cache.children("ns", "a") == []


def test_watch_events_update_delete_and_tell_the_owner() -> None:
    kube = Scripted()
    kube.listings["Service"] = [Listing([child(SVC, "a-router", "a", 7)], "7")]
    kube.streams["Service"] = [
        [
            {"type": "MODIFIED", "object": child(SVC, "a-router", "a", 8, spec={"x": 1})},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            {"type": "ADDED", "object": child(SVC, "a-other", "a", 10)},
            {"type": "DELETED", "object": child(SVC, "a-router", "a", 11)},
        ]
    ]
    told = Told()
    cache = synced_children(kube, told)
    got = cache.children("ns", "a") or []
    assert [o["metadata"]["name"] for o in got] == ["a-other"]
    # The listing, the MODIFIED, the ADDED and the DELETED are news for owner a; the
    # bookmark is not.
    assert told.owners.count(("ns", "a")) == 4


def test_a_relist_drops_what_was_deleted_while_nobody_watched() -> None:
    kube = Scripted()
    kube.listings["Service"] = [
        Listing([child(SVC, "a-router", "a", 7), child(SVC, "b-router", "b", 8)], "8"),
        Listing([child(SVC, "b-router", "b", 8)], "12"),
    ]
    told = Told()
    cache = synced_children(kube, told)
    assert len(cache.children("ns", "a") or []) == 1
    told.owners.clear()
    # The watch broke; its DELETED event for a-router was never delivered. The re-list:
    svc = next(r for r in cache.reflectors if r.kind.kind == "Service")
    svc.run_once()
    assert cache.children("ns", "a") == []
    assert told.owners == [("ns", "a")]  # the owner of the vanished child, and nobody else
    assert [x for x in kube.calls if x[1] == "Service"][-2:] == [
        ("list", "Service", CHILD_SELECTOR),
        ("watch", "Service", "12"),
    ]


def test_a_410_relists_and_other_watch_errors_mark_the_cache_stale() -> None:
    kube = Scripted()
    kube.streams["Service"] = [[KubeError("watch", "services", 410, "too old")]]
    cache = synced_children(kube)
    # 410: run_once returns (the reflector re-lists at once); stale until then.
    assert cache.children("ns", "a") is None
    kube.streams["Service"] = [[KubeError("watch", "services", 0, "connection reset")]]
    svc = next(r for r in cache.reflectors if r.kind.kind == "Service")
    with pytest.raises(KubeError, match="connection reset"):
        svc.run_once()


def test_the_reflector_thread_relists_after_a_broken_watch() -> None:
    kube = Scripted()
    kube.listings["ConfigMap"] = [Listing([child(CM, "a-launch", "a", 5)], "5"), Listing([], "9")]
    release = threading.Event()

    def broken() -> Iterator[dict[str, Any]]:
        release.wait(5)
        raise KubeError("watch", "configmaps", 0, "connection reset")
        yield {}  # a generator

    class Breaks(Scripted):
        first = True

        def watch_kind(
            self,
            kind: Kind,
            namespace: str | None,
            selector: str,
            resource_version: str,
            timeout_s: int,
        ) -> Iterator[dict[str, Any]]:
            if kind.kind == "ConfigMap" and self.first:
                self.first = False
                return broken()
            return iter(())

    kube2 = Breaks()
    kube2.listings = kube.listings
    cache = ChildCache(kube2, ["ns"])
    cm = next(r for r in cache.reflectors if r.kind.kind == "ConfigMap")
    cm.start()
    wait(lambda: cache.synced([cm.scope]))
    assert len(cache._objs) == 1
    release.set()  # the watch breaks; a-launch was deleted meanwhile (the second listing)
    wait(lambda: cm.lists >= 2 and cache.synced([cm.scope]))
    cm.stop()
    assert cache._objs == {}


def wait(pred: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_our_own_write_is_held_at_once_and_its_echo_is_no_news() -> None:
    kube = Scripted()
    told = Told()
    cache = synced_children(kube, told)
    told.owners.clear()
    written = child(SVC, "a-router", "a", 20, spec={"port": 1})
    cache.note(written)
    assert [o["metadata"]["name"] for o in cache.children("ns", "a") or []] == ["a-router"]
    assert told.owners == []  # our own write triggers nothing
    cache.event("ADDED", child(SVC, "a-router", "a", 20, spec={"port": 1}))  # the echo
    cache.event("MODIFIED", child(SVC, "a-router", "a", 19, spec={"port": 0}))  # older
    assert told.owners == []
    assert (cache.children("ns", "a") or [])[0]["spec"] == {"port": 1}
    cache.event("MODIFIED", child(SVC, "a-router", "a", 21, spec={"port": 2}))  # a hand edit
    assert told.owners == [("ns", "a")]
    cache.note_deleted(written)
    assert cache.children("ns", "a") == []


def test_an_event_at_the_held_version_or_older_is_not_even_packed() -> None:
    kube = Scripted()
    cache = synced_children(kube)
    cache.note(child(SVC, "a-router", "a", 20, spec={"port": 1}))
    packed: list[str] = []
    keep = cache.keep

    def counting(obj: Any) -> Any:
        packed.append(obj["metadata"]["resourceVersion"])
        return keep(obj)

    cache.keep = counting  # type: ignore[method-assign]
    cache.event("MODIFIED", child(SVC, "a-router", "a", 20, spec={"port": 1}))  # the echo
    cache.event("MODIFIED", child(SVC, "a-router", "a", 19, spec={"port": 0}))  # older
    cache.event("DELETED", child(SVC, "a-router", "a", 18))  # older still: stays
    assert packed == []
    cache.event("MODIFIED", child(SVC, "a-router", "a", 21, spec={"port": 2}))
    assert packed == ["21"]
    assert (cache.children("ns", "a") or [])[0]["spec"] == {"port": 2}
    cache.event("DELETED", child(SVC, "a-router", "a", 22))
    assert packed == ["21"]
    assert cache.children("ns", "a") == []


def test_a_child_relabelled_to_another_owner_moves() -> None:
    kube = Scripted()
    cache = synced_children(kube)
    cache.event("ADDED", child(CM, "x", "a", 3))
    cache.event("MODIFIED", child(CM, "x", "b", 4))
    assert cache.children("ns", "a") == []
    assert [o["metadata"]["name"] for o in cache.children("ns", "b") or []] == ["x"]


@pytest.mark.parametrize(
    ("incoming", "held", "expected"),
    [
        ("5", "4", True),
        ("4", "4", True),
        ("3", "4", False),
        ("x", "4", True),
        ("5", None, True),
    ],
)
def test_newer(incoming: str, held: str | None, expected: bool) -> None:
    held_obj = None if held is None else {"metadata": {"resourceVersion": held}}
    assert newer({"metadata": {"resourceVersion": incoming}}, held_obj) is expected


def test_the_node_index_ignores_heartbeats_and_follows_capacity_changes() -> None:
    kube = Scripted()
    kube.listings["Node"] = [Listing([node("n1", "8", 1), node("n2", "4", 2, pool="b")], "2")]
    nodes = NodeCache(kube)
    run_once(kube, NODE, nodes, ns=None)
    cap = nodes.capacity()
    assert cap is not None
    assert cap.largest("nvidia.com/gpu", None) == 8
    assert cap.largest("nvidia.com/gpu", {"pool": "b"}) == 4
    nodes.event("MODIFIED", node("n1", "8", 3))  # a heartbeat: same capacity
    assert nodes.capacity() is cap
    nodes.event("MODIFIED", node("n1", "2", 4))  # a GPU went away
    cap2 = nodes.capacity()
    assert cap2 is not cap
    assert cap2 is not None
    assert cap2.largest("nvidia.com/gpu", None) == 4
    nodes.event("DELETED", node("n2", "4", 5, pool="b"))
    assert (nodes.capacity() or cap).largest("nvidia.com/gpu", {"pool": "b"}) == 0
    # What the index keeps of a node is what the check reads, nothing more.
    assert set(nodes._objs[("Node", "", "n1")]["status"]["allocatable"]) == {"nvidia.com/gpu"}


def test_capacity_answers_like_the_plain_check() -> None:
    ns = [
        node("n1", "8", 1),
        node("n2", "4", 2, pool="b"),
        {**node("n3", "16", 3), "spec": {"unschedulable": True}},
    ]
    want = [
        {
            "kind": "StatefulSet",
            "metadata": {"name": "x-decode"},
            "spec": {
                "replicas": 1,
                "template": {
                    "spec": {
                        "nodeSelector": {"pool": "b"},
                        "containers": [{"resources": {"limits": {"nvidia.com/gpu": 8}}}],
                    }
                },
            },
        }
    ]
    plain = capacity.check(want, ns)
    assert plain == capacity.check(want, capacity.Capacity(capacity.slim(n) for n in ns))
    assert "largest: 4" in plain[0].message


def test_a_missing_optional_crd_lists_as_empty() -> None:
    kube = Scripted()
    kube.listings[c.SCALER_KIND] = [KubeError("list", "epdrolescalers", 404, "not found")]
    caches = Caches(kube, ["ns"])
    scaler = next(r for r in caches.children.reflectors if r.kind.kind == c.SCALER_KIND)
    with pytest.raises(KubeError):
        scaler.run_once()
    scaler.start()  # the thread treats it as "none exist" and looks again later
    wait(lambda: caches.children.synced([scaler.scope]))
    scaler.stop()


def pod(
    name: str,
    owner: str,
    rv: int,
    *,
    report: str | None = None,
    phase: str = "Pending",
    role: str = "decode",
    ready: bool | None = None,
    revision: str = "c",
    mounts: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A full pod as the apiserver returns it (the fields a pass reads and many it does not)."""
    init: dict[str, Any] = {
        "name": INIT_CONTAINER,
        "image": "img",
        "ready": False,
        "state": {"running": {"startedAt": "t"}},
    }
    if report is not None:
        init["state"] = {"terminated": {"exitCode": 0, "message": report, "finishedAt": "t"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {
                c.LABEL_INSTANCE: owner,
                c.LABEL_ROLE: role,
                c.LABEL_NAME: c.APP_NAME,
                "pod-template-hash": "x",
                "controller-revision-hash": revision,
            },
            "managedFields": [{"manager": "kubelet"}],
            **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {}),
        },
        "spec": {
            "containers": [{"name": "engine", "image": "img"}],
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                *(
                    [{"name": VOLUME_LAUNCH_CONFIG, "configMap": {"name": mounts}}]
                    if mounts
                    else []
                ),
            ],
        },
        "status": {
            "phase": phase,
            "podIP": "10.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t"},
                *(
                    [{"type": "Ready", "status": str(ready), "lastTransitionTime": "t"}]
                    if ready is not None
                    else []
                ),
            ],
            "initContainerStatuses": [
                init,
                {"name": "other-init", "state": {"terminated": {"message": "x"}}},
            ],
        },
    }


def test_the_pod_cache_keeps_the_reports_and_tells_the_owner_only_when_one_changes() -> None:
    kube = Scripted()
    kube.listings["Pod"] = [Listing([pod("a-decode-0", "a", 5)], "5")]
    report = report_text({"v": REPORT_VERSION, "transport": "rdma", "reason": "RDMA"})
    kube.streams["Pod"] = [
        [
            {"type": "MODIFIED", "object": pod("a-decode-0", "a", 6, phase="Running")},
            {"type": "MODIFIED", "object": pod("a-decode-0", "a", 7, report=report)},
            {
                "type": "MODIFIED",
                "object": pod("a-decode-0", "a", 8, report=report, phase="Running"),
            },
        ]
    ]
    told = Told()
    cache = PodCache(kube, ["ns"], told)
    (r,) = cache.reflectors
    r.stop()
    r.run_once()
    got = cache._objs[("Pod", "ns", "a-decode-0")]
    # Slim: name, owner / role / revision labels, readiness, the launch ConfigMap mounted
    # (none here), the preflight container's termination message.
    assert got == {
        "kind": "Pod",
        "metadata": {
            "name": "a-decode-0",
            "namespace": "ns",
            "resourceVersion": "8",
            "labels": {
                c.LABEL_INSTANCE: "a",
                c.LABEL_ROLE: "decode",
                "controller-revision-hash": "c",
            },
        },
        "spec": {"volumes": []},
        "status": {
            "conditions": [],
            "initContainerStatuses": [
                {"name": INIT_CONTAINER, "state": {"terminated": {"message": report}}}
            ],
        },
    }
    assert pod_report(got) == parse_report(report)
    # The listing and the report are news; a phase change before or after is not.
    assert told.owners == [("ns", "a"), ("ns", "a")]
    assert [x for x in kube.calls if x[1] == "Pod"] == [
        ("list", "Pod", POD_SELECTOR),
        ("watch", "Pod", "5"),
    ]


def test_pods_start_watching_on_first_use_and_answer_none_until_listed() -> None:
    kube = Scripted()
    kube.listings["Pod"] = [Listing([pod("a-decode-0", "a", 5), pod("b-decode-0", "b", 6)], "6")]
    caches = Caches(kube, ["ns"])
    assert not caches.pods.started
    assert all(s.name != "pods in ns" for s in caches.states())
    first = caches.pods.pods("ns", "a")  # wanted now: the reflector starts
    assert caches.pods.started
    wait(lambda: caches.pods.pods("ns", "a") is not None)
    assert first is None or first  # None when asked before the listing came back
    assert [p["metadata"]["name"] for p in caches.pods.pods("ns", "a") or []] == ["a-decode-0"]
    assert any(s.name == "pods in ns" for s in caches.states())
    caches.stop()


def test_a_reflector_reports_bookmarks_deadlines_and_refusals() -> None:
    kube = Scripted()
    kube.streams["Service"] = [
        [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]
    ]
    sink = ChildCache(kube, ["ns"])
    r = run_once(kube, SVC, sink)
    st = r.state()
    assert (r.bookmarks, st.error_status, st.running) == (1, None, False)  # stopped
    assert st.alive_at is not None
    assert st.deadline is not None
    assert st.deadline - st.alive_at > WATCH_TIMEOUT_S[0]

    kube.listings["Service"] = [KubeError("list", "services", 401, "Unauthorized")]
    refused = Reflector(kube, SVC, "ns", "sel", sink)
    refused.start()
    wait(lambda: refused.state().error_status == 401)
    assert refused.state().running
    assert refused.state().deadline is None
    refused.stop()


# (ready, controller-revision-hash, deleting, mounted ConfigMap) of the new-revision pod.
SLIM_CASES = [
    (True, "u", False, "launch-b"),
    (False, "u", False, "launch-b"),
    (None, "u", False, None),
    (True, "u", True, "launch-b"),
    (True, "c", False, "launch-a"),
]


@pytest.mark.parametrize(("ready", "revision", "deleting", "mounts"), SLIM_CASES)
def test_slim_pods_answer_the_planner_the_prune_and_the_transport_check_as_full_pods(
    ready: bool | None, revision: str, deleting: bool, mounts: str | None
) -> None:
    """What the pod cache keeps is enough: the rollout planner, the launch ConfigMap prune and
    TransportReady decide the same on the cached pods as on the listed ones."""
    report = report_text({"v": REPORT_VERSION, "transport": "tcp", "reason": "NoDevice"})
    full = [
        pod("demo-decode-0", "demo", 1, ready=True, revision="c", mounts="launch-a"),
        pod(
            "demo-decode-1",
            "demo",
            2,
            ready=ready,
            revision=revision,
            deleting=deleting,
            mounts=mounts,
            report=report,
        ),
    ]
    cache = PodCache(Scripted(), ["ns"])
    slim = [cache.keep(p) for p in full]
    mid = {"updatedReplicas": 1, "currentRevision": "c", "updateRevision": "u", "readyReplicas": 1}
    live = [rollout_sts("b", **mid)]
    want = [rollout_sts("b")]

    def partition(pods: list[dict[str, Any]]) -> int:
        (d,) = partitions.drive(want, live, {}, paused=False, pods=pods).desired
        return int(d["spec"]["updateStrategy"]["rollingUpdate"]["partition"])

    assert partition(slim) == partition(full)
    candidates = [launch_cm(n) for n in ("launch-a", "launch-b", "launch-z")]
    assert revisions.retained_launch_configs(
        candidates, [], [], slim, history=0
    ) == revisions.retained_launch_configs(candidates, [], [], full, history=0)
    assert [pod_report(p) for p in slim] == [pod_report(p) for p in full]


def rollout_sts(revision: str, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "demo-decode", "labels": {c.LABEL_ROLE: "decode"}, "generation": 1},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {c.LABEL_REVISION: revision}}}},
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "updatedReplicas": 2,
            "updateRevision": "c",
            **status,
        },
    }


def launch_cm(name: str) -> dict[str, Any]:
    labels = {c.LABEL_COMPONENT: c.COMPONENT_CONFIG, c.LABEL_LAUNCH_REVISION: name}
    return {"kind": "ConfigMap", "metadata": {"name": name, "labels": labels}}


def test_what_the_planner_reads_of_a_pod_is_news_and_the_rest_is_not() -> None:
    """Readiness, deletion and revision changes wake the owner's pass (a rollout steps on
    them); a phase or IP change does not."""
    kube = Scripted()
    kube.listings["Pod"] = [Listing([pod("a-decode-1", "a", 5, ready=False)], "5")]
    changes = [
        pod("a-decode-1", "a", 6, ready=False, phase="Running"),  # not news
        pod("a-decode-1", "a", 7, ready=True, phase="Running"),
        pod("a-decode-1", "a", 8, ready=True, phase="Running", revision="u"),
        pod("a-decode-1", "a", 9, ready=True, revision="u", mounts="launch-b"),
        pod("a-decode-1", "a", 10, ready=True, revision="u", mounts="launch-b", deleting=True),
    ]
    kube.streams["Pod"] = [[{"type": "MODIFIED", "object": o} for o in changes]]
    told = Told()
    cache = PodCache(kube, ["ns"], told)
    (r,) = cache.reflectors
    r.stop()
    r.run_once()
    assert told.owners == [("ns", "a")] * 5  # the listing, then four of the five changes
    (got,) = cache._owned("ns", "a")
    assert got == cache.keep(changes[-1])
    assert got["metadata"]["deletionTimestamp"]
