"""reconcile.kube: the HTTP requests it makes (the chart's RBAC is written against these).

A recording transport stands in for the apiserver here; e2e/test_operator.py runs the same
calls against a real one with the chart's ServiceAccount.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from api_samples import load, valid_samples

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.reconcile.kube import CHILD_KINDS, LIST_PAGE, Kube, KubeError, kind_of
from epd_operator.render import render_cluster


class Recorder:
    def __init__(self, status: int = 200, body: Any = None) -> None:
        self.calls: list[tuple[str, str, dict[str, list[str]], dict[str, str], Any]] = []
        self.status = status
        self.body = {} if body is None else body

    def __call__(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
        url = urlsplit(path)
        self.calls.append((method, url.path, parse_qs(url.query), dict(headers), body))
        return self.status, json.dumps(self.body).encode()


CM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "demo-launch", "namespace": "ns", "uid": "u1"},
}
STS = {
    "apiVersion": "apps/v1",
    "kind": "StatefulSet",
    "metadata": {"name": "demo-decode", "namespace": "ns"},
}


def test_apply_is_a_forced_server_side_apply_by_our_field_manager() -> None:
    rec = Recorder(body={"kind": "StatefulSet"})
    kube = Kube(rec)
    assert kube.apply(STS) == {"kind": "StatefulSet"}
    ((method, path, query, headers, body),) = rec.calls
    assert method == "PATCH"
    assert path == "/apis/apps/v1/namespaces/ns/statefulsets/demo-decode"
    assert query == {"fieldManager": ["epd-operator"], "force": ["true"]}
    assert headers["Content-Type"] == "application/apply-patch+yaml"
    assert body == STS
    assert kube.writes.snapshot() == {("StatefulSet", "apply"): 1}


def test_delete_is_background_and_pinned_to_the_uid_and_tolerates_404() -> None:
    rec = Recorder(status=404, body={"message": "not found"})
    kube = Kube(rec)
    kube.delete(CM)
    ((method, path, _, _, body),) = rec.calls
    assert (method, path) == ("DELETE", "/api/v1/namespaces/ns/configmaps/demo-launch")
    assert body == {"propagationPolicy": "Background", "preconditions": {"uid": "u1"}}
    assert kube.writes.snapshot() == {("ConfigMap", "delete"): 1}


def test_list_children_asks_every_child_kind_by_our_labels() -> None:
    rec = Recorder(body={"items": [{"metadata": {"name": "x"}}]})
    kube = Kube(rec)
    out = kube.list_children("ns", "demo")
    assert [c[1] for c in rec.calls] == [k.base("ns") for k in CHILD_KINDS]
    for _, _, query, _, _ in rec.calls:
        assert query == {
            "labelSelector": [
                "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=epd-operator"
            ]
        }
    # List items lack apiVersion/kind; plan needs them.
    assert [(o["apiVersion"], o["kind"]) for o in out] == [
        (k.api_version, k.kind) for k in CHILD_KINDS
    ]
    assert kube.writes.total() == 0  # reads are not writes


def test_status_and_events() -> None:
    rec = Recorder()
    kube = Kube(rec)
    kube.apply_status("ns", "demo", {"observedGeneration": 3})
    owner = {
        "apiVersion": "epd-operator.io/v1alpha1",
        "kind": "EPDCluster",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "u9"},
    }
    kube.create_event(owner, "Warning", "SpecInvalid", "spec.x: bad")
    (m1, p1, q1, h1, b1), (m2, p2, _, _, b2) = rec.calls
    assert (m1, p1) == (
        "PATCH",
        "/apis/epd-operator.io/v1alpha1/namespaces/ns/epdclusters/demo/status",
    )
    assert q1["fieldManager"] == ["epd-operator"]
    assert h1["Content-Type"] == "application/apply-patch+yaml"
    assert b1["status"] == {"observedGeneration": 3}
    assert (m2, p2) == ("POST", "/api/v1/namespaces/ns/events")
    assert b2["involvedObject"]["uid"] == "u9"
    assert (b2["type"], b2["reason"], b2["message"]) == ("Warning", "SpecInvalid", "spec.x: bad")
    assert kube.writes.snapshot() == {("EPDCluster", "apply-status"): 1, ("Event", "create"): 1}


# (HTTP status, apiserver message, fragment of the raised error)
ERRORS = [
    (403, 'configmaps "x" is forbidden: cannot create', "HTTP 403: configmaps"),
    (422, "spec.replicas: Invalid value", "HTTP 422"),
    (500, "etcdserver: request timed out", "etcdserver"),
]


@pytest.mark.parametrize(("status", "message", "fragment"), ERRORS)
def test_errors_name_the_call_and_the_apiserver_message(
    status: int, message: str, fragment: str
) -> None:
    kube = Kube(Recorder(status=status, body={"kind": "Status", "message": message}))
    with pytest.raises(KubeError, match=fragment) as err:
        kube.apply(CM)
    assert "apply ConfigMap ns/demo-launch" in str(err.value)
    assert err.value.status == status


def test_connection_errors_become_kube_errors() -> None:
    def down(*_: Any) -> tuple[int, bytes]:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(KubeError, match="HTTP 0: connection refused"):
        Kube(down).list_nodes()


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported kind batch/v1/Job"):
        kind_of({"apiVersion": "batch/v1", "kind": "Job"})


@pytest.mark.parametrize("sample", valid_samples(), ids=lambda p: p.stem)
def test_render_emits_only_kinds_observe_lists(sample: Path) -> None:
    # prune can only see what observe lists: a rendered kind outside CHILD_KINDS would never
    # be pruned (nor be compared for the no-op check).
    obj = load(sample)
    obj["metadata"].update(namespace="ns", uid="00000000-0000-4000-8000-000000000000")
    manifests = render_cluster(parse(obj), OperatorConfig.from_env({}))
    assert manifests
    for m in manifests:
        kind_of(m)


def test_scale_is_a_merge_patch_of_the_scale_subresource_as_hpa_writes() -> None:
    rec = Recorder()
    kube = Kube(rec)
    kube.scale("ns", "demo-decode", 3)
    ((method, path, query, headers, body),) = rec.calls
    assert (method, path) == (
        "PATCH",
        "/apis/epd-operator.io/v1alpha1/namespaces/ns/epdrolescalers/demo-decode/scale",
    )
    # An update, not an apply: our apply of the object never owns spec.replicas.
    assert query == {"fieldManager": ["epd-operator"]}
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert body == {"spec": {"replicas": 3}}
    kube.apply_scaler_status("ns", "demo-decode", {"replicas": 1})
    method, path, query, headers, body = rec.calls[1]
    assert path.endswith("/epdrolescalers/demo-decode/status")
    assert query == {"fieldManager": ["epd-operator"], "force": ["true"]}
    assert body["kind"] == "EPDRoleScaler"
    assert body["status"] == {"replicas": 1}
    assert kube.writes.snapshot() == {
        ("EPDRoleScaler", "scale"): 1,
        ("EPDRoleScaler", "apply-status"): 1,
    }


class MissingScalerCRD(Recorder):
    """An apiserver without the EPDRoleScaler CRD (an operator upgraded by `helm upgrade`)."""

    def __call__(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
        if "/epdrolescalers" in path:
            self.calls.append((method, path, {}, dict(headers), body))
            return 404, json.dumps(
                {"message": "the server could not find the requested resource"}
            ).encode()
        return super().__call__(method, path, headers, body)


def test_list_children_without_the_scaler_crd_lists_the_rest() -> None:
    rec = MissingScalerCRD(body={"items": [{"metadata": {"name": "x"}}]})
    out = Kube(rec).list_children("ns", "demo")
    assert [o["kind"] for o in out] == [
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
    ]
    with pytest.raises(KubeError) as info:
        Kube(rec).apply(
            {
                "apiVersion": "epd-operator.io/v1alpha1",
                "kind": "EPDRoleScaler",
                "metadata": {"name": "demo-decode", "namespace": "ns"},
            }
        )
    assert info.value.not_found


def test_list_kind_and_watch_kind_ask_for_a_resumable_watch_with_bookmarks() -> None:
    svc = next(k for k in CHILD_KINDS if k.kind == "Service")
    rec = Recorder(
        body={"metadata": {"resourceVersion": "41"}, "items": [{"metadata": {"name": "x"}}]}
    )
    streamed: list[tuple[str, float]] = []
    lines = [
        json.dumps({"type": "ADDED", "object": {"metadata": {"name": "y"}}}),
        "",
        json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "50"}}}),
        json.dumps({"type": "ERROR", "object": {"code": 410, "message": "too old"}}),
    ]

    def streamer(path: str, headers: Any, timeout: float) -> tuple[int, Any]:
        streamed.append((path, timeout))
        return 200, iter(lines)

    kube = Kube(rec, streamer=streamer)
    listing = kube.list_kind(svc, None, "a=b")
    assert listing.resource_version == "41"
    assert listing.items == [{"metadata": {"name": "x"}, "apiVersion": "v1", "kind": "Service"}]
    ((_, path, query, _, _),) = rec.calls
    assert path == "/api/v1/services"  # all namespaces
    assert query == {"labelSelector": ["a=b"], "limit": [str(LIST_PAGE)]}
    got: list[Any] = []
    with pytest.raises(KubeError) as err:
        got.extend(kube.watch_kind(svc, "ns", "a=b", "41", 600))
    assert err.value.status == 410  # the caller re-lists
    ((wpath, timeout),) = streamed
    url = urlsplit(wpath)
    assert url.path == "/api/v1/namespaces/ns/services"
    assert parse_qs(url.query) == {
        "watch": ["1"],
        "allowWatchBookmarks": ["true"],
        "resourceVersion": ["41"],
        "timeoutSeconds": ["600"],
        "labelSelector": ["a=b"],
    }
    assert timeout > 600  # the client waits longer than the apiserver's own timeout
    # The events before the error were delivered (blank keep-alive lines skipped).
    assert [e["type"] for e in got] == ["ADDED", "BOOKMARK"]
    assert kube.reads.snapshot() == {("Service", "list"): 1, ("Service", "watch"): 1}


def test_watch_kind_yields_events_with_their_kind_and_refuses_a_failed_request() -> None:
    svc = next(k for k in CHILD_KINDS if k.kind == "Service")
    ev = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "y"}}})
    kube = Kube(Recorder(), streamer=lambda p, h, t: (200, iter([ev])))
    (event,) = list(kube.watch_kind(svc, "ns", "", "1", 60))
    assert event["object"]["kind"] == "Service"
    denied = Kube(
        Recorder(),
        streamer=lambda p, h, t: (403, iter([json.dumps({"message": "services is forbidden"})])),
    )
    with pytest.raises(KubeError, match="HTTP 403: services is forbidden"):
        list(denied.watch_kind(svc, "ns", "", "1", 60))


class Pages:
    """A transport answering a LIST in pages: each call the next page, by continue token."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.queries: list[dict[str, list[str]]] = []

    def __call__(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(path).query)
        self.queries.append(query)
        i = int(query.get("continue", ["0"])[0])
        meta = {"resourceVersion": "77"}
        if i + 1 < len(self.pages):
            meta["continue"] = str(i + 1)
        items = [{"metadata": {"name": n}, "spec": {"big": "x" * 100}} for n in self.pages[i]]
        return 200, json.dumps({"metadata": meta, "items": items}).encode()


def test_a_listing_is_read_in_pages_each_item_kept_as_its_page_arrives() -> None:
    pages = Pages([["a", "b"], ["c"], ["d"]])
    kept_at: list[tuple[str, int]] = []

    def keep(obj: dict[str, Any]) -> dict[str, Any]:
        kept_at.append((obj["metadata"]["name"], len(pages.queries)))
        return {"kind": obj["kind"], "metadata": {"name": obj["metadata"]["name"]}}

    kube = Kube(pages)
    svc = next(k for k in CHILD_KINDS if k.kind == "Service")
    listing = kube.list_kind(svc, "ns", "a=b", keep=keep)
    assert listing.resource_version == "77"
    assert [o["metadata"]["name"] for o in listing.items] == ["a", "b", "c", "d"]
    assert all("spec" not in o for o in listing.items)  # only what `keep` returned is held
    # Each item is kept before the next page is asked for.
    assert kept_at == [("a", 1), ("b", 1), ("c", 2), ("d", 3)]
    assert [q.get("continue") for q in pages.queries] == [None, ["1"], ["2"]]
    assert all(
        q["limit"] == [str(LIST_PAGE)] and q["labelSelector"] == ["a=b"] for q in pages.queries
    )
    assert kube.reads.snapshot() == {("Service", "list"): 3}  # every page is a request
