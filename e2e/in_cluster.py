"""Helpers for what runs inside a cluster: the nodes, an EPDCluster's Ready condition, a claim
bound to a static volume, and an HTTP request made from a pod (cluster DNS, Service IP,
kube-proxy)."""

from __future__ import annotations

import json
import time
from typing import Any

from e2e.paths import REPO
from e2e.providers import Cluster

# Runs inside the cluster: POST stdin to the URL, print the status and the body.
CLIENT = (
    "import sys, urllib.request, urllib.error\n"
    "req = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(),"
    " headers={'Content-Type': 'application/json'})\n"
    "try:\n"
    "    r = urllib.request.urlopen(req, timeout=float(sys.argv[2]))\n"
    "    print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
)


def node_names(cluster: Cluster) -> list[str]:
    names = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").stdout
    return sorted(names.split())


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """The EPDCluster once its Ready condition is True for its current generation; raises with
    its status and the namespace's pods after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = json.loads(cluster.kubectl("-n", namespace, "get", "epdc", name, "-o", "json").stdout)
        status = obj.get("status") or {}
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        if (
            ready
            and ready[0]["status"] == "True"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        ):
            return obj
        time.sleep(2)
    pods = cluster.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout
    raise AssertionError(f"{name} not Ready after {timeout:.0f}s: {obj.get('status')}\n{pods}")


def post_from_pod(
    cluster: Cluster,
    namespace: str,
    image: str,
    url: str,
    body: dict[str, Any],
    *,
    timeout: float = 120,
) -> tuple[int, Any]:
    """POST `body` as JSON to `url` from a pod of `image` (never pulled) in `namespace`; the
    status and the decoded JSON answer (the raw text when it is not JSON)."""
    out = cluster.kubectl(
        "-n",
        namespace,
        "run",
        "http-client",
        "--rm",
        "-i",
        "--restart=Never",
        f"--image={image}",
        "--image-pull-policy=Never",
        "--quiet",
        "--command",
        "--",
        "python3",
        "-c",
        CLIENT,
        url,
        str(timeout),
        input=json.dumps(body),
        timeout=timeout + 120,
    ).stdout
    status, _, text = out.strip().partition("\n")
    try:
        return int(status), json.loads(text)
    except ValueError:
        return int(status) if status.isdigit() else 0, out


def static_volume(
    namespace: str, claim: str, node_dir: str, *, node: str | None = None, size: str = "1Gi"
) -> list[dict[str, Any]]:
    """A static PV (the directory `node_dir` on the node, made on first use; pinned to `node`
    when given) and the claim `claim` bound to it, as an admin would provide them: an
    EPDCluster names claims, never host paths."""
    pv_name = f"{namespace}-{claim}"
    spec: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": ["ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": "",
        "hostPath": {"path": node_dir, "type": "DirectoryOrCreate"},
        "claimRef": {"namespace": namespace, "name": claim},
    }
    if node is not None:
        on_node = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
        terms = [{"matchExpressions": [on_node]}]
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": terms}}
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": spec,
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": size}},
        },
    }
    return [pv, pvc]


def install_operator(
    cluster: Cluster, release: str, namespace: str, watch: str, values: list[str]
) -> None:
    """`helm install` of our chart as `release` in `namespace`, watching the namespace `watch`
    (which exists first: the chart makes a Role in it), with helm `values` arguments (later
    ones win); waits for the operator Deployment."""
    cluster.run(
        "helm",
        "install",
        release,
        str(REPO / "charts" / "epd-operator"),
        "--namespace",
        namespace,
        "--create-namespace",
        *values,
        "--set-json",
        f'watchNamespaces=["{watch}"]',
        "--wait",
        "--timeout",
        "240s",
        timeout=300,
    )
