"""Proof that the local control plane is a real Kubernetes control plane (integration tier).

Each test exercises a component the operator relies on: the apiserver's schema + CEL validation,
the StatefulSet controller and scheduler honouring GPU/RDMA capacity, the garbage collector, and
server-side apply field ownership. If kwok ever faked one of these, a test here fails.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from e2e.operator_proc import build_and_load_images
from e2e.providers import GPU_RESOURCE, RDMA_RESOURCE, Cluster, wait_for

pytestmark = pytest.mark.integration

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.epd-operator.io"},
    "spec": {
        "group": "test.epd-operator.io",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "minReplicas": {"type": "integer"},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        30,
        f"ServiceAccount {name}/default",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def gpus_by_node(cluster: Cluster) -> dict[str, int]:
    """Node name -> allocatable GPUs (kwok's fake servers, or kind's advertised capacity)."""
    nodes = cluster.get_json("nodes")["items"]
    assert isinstance(nodes, list)
    return {
        n["metadata"]["name"]: int(n["status"].get("allocatable", {}).get(GPU_RESOURCE, "0"))
        for n in nodes
    }


def idle_container(cluster: Cluster) -> dict[str, object]:
    """A container that starts and keeps running: on kind our loaded image (nodes pull
    nothing), sleeping; on kwok, where pods are simulated, any image."""
    if cluster.provider != "kind":
        return {"image": "engine:test"}
    image = build_and_load_images(cluster)
    return {"image": image, "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}


def widget(name: str, lo: int, hi: int) -> str:
    return json.dumps(
        {
            "apiVersion": "test.epd-operator.io/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"minReplicas": lo, "maxReplicas": hi},
        }
    )


def test_cel_rule_rejects_and_accepts(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.test.epd-operator.io", "--timeout=30s"
    )
    bad = cluster.kubectl("apply", "-n", ns, "-f", "-", input=widget("bad", 5, 2), check=False)
    assert bad.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in bad.stderr
    ok = cluster.kubectl("apply", "-n", ns, "-f", "-", input=widget("good", 1, 3), check=False)
    assert ok.returncode == 0, ok.stderr
    got = cluster.get_json("widget", "good", "-n", ns)
    assert got["spec"] == {"minReplicas": 1, "maxReplicas": 3}


def test_statefulset_with_gpu_and_rdma_goes_ready(cluster: Cluster, ns: str) -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "gpu"},
        "spec": {
            "replicas": 2,
            "serviceName": "gpu",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "gpu"}},
            "template": {
                "metadata": {"labels": {"app": "gpu"}},
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            **idle_container(cluster),
                            "resources": {
                                "requests": {GPU_RESOURCE: "1", RDMA_RESOURCE: "1"},
                                "limits": {GPU_RESOURCE: "1", RDMA_RESOURCE: "1"},
                            },
                        }
                    ]
                },
            },
        },
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(sts))

    def two_ready() -> bool:
        st = cluster.get_json("statefulset", "gpu", "-n", ns).get("status", {})
        assert isinstance(st, dict)
        return st.get("readyReplicas") == 2

    wait_for(two_ready, 60, "StatefulSet gpu to report 2 ready replicas")
    pods = cluster.get_json("pods", "-n", ns, "-l", "app=gpu")["items"]
    assert isinstance(pods, list)
    assert len(pods) == 2
    gpus = gpus_by_node(cluster)
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert gpus[pod["spec"]["nodeName"]] > 0  # the scheduler placed it where GPUs are
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"


def test_pod_wanting_more_gpus_than_any_node_stays_pending(cluster: Cluster, ns: str) -> None:
    too_many = str(max(gpus_by_node(cluster).values()) + 1)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "greedy"},
        "spec": {
            "containers": [
                {
                    "name": "engine",
                    **idle_container(cluster),
                    "resources": {
                        "requests": {GPU_RESOURCE: too_many},
                        "limits": {GPU_RESOURCE: too_many},
                    },
                }
            ]
        },
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))

    def unschedulable() -> bool:
        st = cluster.get_json("pod", "greedy", "-n", ns)["status"]
        assert isinstance(st, dict)
        conds = {c["type"]: c for c in st.get("conditions", [])}
        sched = conds.get("PodScheduled")
        return sched is not None and sched.get("reason") == "Unschedulable"

    wait_for(unschedulable, 30, "pod greedy to be marked Unschedulable")
    st = cluster.get_json("pod", "greedy", "-n", ns)["status"]
    assert isinstance(st, dict)
    assert st["phase"] == "Pending"
    sched = next(c for c in st["conditions"] if c["type"] == "PodScheduled")
    assert sched["status"] == "False"
    assert GPU_RESOURCE in sched["message"]


def test_garbage_collector_deletes_owned_children(cluster: Cluster, ns: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", ns)
    owner = cluster.get_json("configmap", "owner", "-n", ns)["metadata"]
    assert isinstance(owner, dict)
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["uid"]}
            ],
        },
        "data": {"k": "v"},
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(child))
    cluster.kubectl("delete", "configmap", "owner", "-n", ns)
    wait_for(
        lambda: cluster.kubectl("get", "configmap", "child", "-n", ns, check=False).returncode != 0,
        60,
        "the garbage collector to delete configmap child",
    )
    gone = cluster.kubectl("get", "configmap", "child", "-n", ns, check=False)
    assert "NotFound" in gone.stderr


def test_server_side_apply_conflicts_and_force(cluster: Cluster, ns: str) -> None:
    def cm(value: str) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "shared"},
                "data": {"key": value},
            }
        )

    def apply(manager: str, value: str, *extra: str) -> tuple[int, str]:
        proc = cluster.kubectl(
            "apply",
            "--server-side",
            f"--field-manager={manager}",
            "-n",
            ns,
            *extra,
            "-f",
            "-",
            input=cm(value),
            check=False,
        )
        return proc.returncode, proc.stderr

    assert apply("alice", "a") == (0, "")
    rc, err = apply("bob", "b")
    assert rc != 0
    assert "conflict" in err.lower()
    assert 'manager "alice"' in err or "alice" in err
    assert cluster.get_json("configmap", "shared", "-n", ns)["data"] == {"key": "a"}

    rc, err = apply("bob", "b", "--force-conflicts")
    assert rc == 0, err
    obj = cluster.get_json("configmap", "shared", "-n", ns, "--show-managed-fields")
    assert obj["data"] == {"key": "b"}
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    owners = {
        m["manager"] for m in meta["managedFields"] if "f:key" in json.dumps(m.get("fieldsV1", {}))
    }
    assert owners == {"bob"}
