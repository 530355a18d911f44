"""reconcile.capacity: InsufficientResources when no schedulable node advertises a request."""

from __future__ import annotations

from typing import Any

import pytest

from epd_operator.reconcile.capacity import check, pod_extended_requests

GPU = "nvidia.com/gpu"
RDMA = "rdma/hca_shared_devices_a"


def node(
    name: str,
    gpus: int = 8,
    rdma: int | None = 1000,
    unschedulable: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    alloc = {"cpu": "128", GPU: str(gpus)}
    if rdma is not None:
        alloc[RDMA] = str(rdma)
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"allocatable": alloc},
    }


def workload(
    role: str,
    limits: dict[str, Any],
    replicas: int = 1,
    kind: str = "StatefulSet",
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": "engine", "resources": {"limits": limits}}]}
    if selector:
        pod["nodeSelector"] = selector
    return {
        "kind": kind,
        "metadata": {"name": f"demo-{role}", "labels": {"epd-operator.io/role": role}},
        "spec": {"replicas": replicas, "template": {"spec": pod}},
    }


def test_requests_sum_containers_and_take_the_larger_init() -> None:
    tpl = {
        "spec": {
            "containers": [
                {"resources": {"limits": {GPU: "2", "cpu": "4"}}},
                {"resources": {"requests": {GPU: 1}}},
            ],
            "initContainers": [{"resources": {"limits": {GPU: 4, RDMA: "1"}}}],
        }
    }
    assert pod_extended_requests(tpl) == {GPU: 4, RDMA: 1}


# (desired, nodes, expected problem fragments)
CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[str]]] = [
    ("fits", [workload("decode", {GPU: 8, RDMA: 1})], [node("a")], []),
    (
        "rdma absent everywhere",
        [workload("decode", {GPU: 1, RDMA: 1})],
        [node("a", rdma=None), node("b", rdma=None)],
        ["role decode (StatefulSet demo-decode) requests 1 rdma/hca_shared_devices_a"],
    ),
    (
        "too many gpus per pod",
        [workload("prefill", {GPU: 16})],
        [node("a"), node("b")],
        ["requests 16 nvidia.com/gpu per pod", "(largest: 8)"],
    ),
    (
        "only the unschedulable node has it",
        [workload("decode", {RDMA: 1})],
        [node("a", rdma=None), node("b", unschedulable=True)],
        ["rdma/hca_shared_devices_a"],
    ),
    (
        "selector excludes the node that has it",
        [workload("decode", {GPU: 1}, selector={"pool": "h200"})],
        [node("a", labels={"pool": "h100"})],
        ["matching its nodeSelector"],
    ),
    (
        "selector matches",
        [workload("decode", {GPU: 1}, selector={"pool": "h200"})],
        [node("a", labels={"pool": "h200"})],
        [],
    ),
    ("zero replicas need nothing", [workload("decode", {GPU: 64}, replicas=0)], [node("a")], []),
    ("no nodes at all", [workload("encoder", {GPU: 1})], [], ["(largest: 0)"]),
    (
        "cpu and memory are the scheduler's business",
        [workload("router", {"cpu": "999"}, kind="Deployment")],
        [node("a")],
        [],
    ),
    (
        "two roles, one short",
        [workload("encoder", {GPU: 1}), workload("decode", {RDMA: 2000})],
        [node("a")],
        ["role decode"],
    ),
]


@pytest.mark.parametrize(
    ("desired", "nodes", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check(
    desired: list[dict[str, Any]], nodes: list[dict[str, Any]], fragments: list[str]
) -> None:
    problems = check(desired, nodes)
    if not fragments:
        assert problems == []
        return
    assert len(problems) == 1
    assert problems[0].reason == "InsufficientResources"
    for frag in fragments:
        assert frag in problems[0].message
