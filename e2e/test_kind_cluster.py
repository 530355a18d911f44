"""An EPDCluster served for real on kind (tier `kind`: a kind cluster of its own, in `make test`).

What kwok cannot show: the chart's operator Deployment running in-cluster from our image under
its ServiceAccount; the engine pods running that image's simulator on two different nodes;
encoder outputs moving as real bytes over Mooncake TCP across the pod network; and the router
Service answering an image chat completion from a pod inside the cluster (cluster DNS, Service
IP, kube-proxy).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.engines import image_part, png, text_part
from e2e.in_cluster import install_operator, node_names, post_from_pod, wait_ready
from e2e.operator_proc import build_and_load_images, in_cluster_values, parse_metrics
from e2e.providers import Cluster
from epd_operator.api import constants as c

pytestmark = pytest.mark.kind

NS = "epd-kind"
OP_NS = "epd-kind-system"
RELEASE = "epd-kind"
NAME = "kind-epd"
ENGINE_PORT = 8000


@pytest.fixture(scope="module")
def image(kind: Cluster) -> str:
    return build_and_load_images(kind)


@pytest.fixture(scope="module")
def operator(kind: Cluster, image: str) -> Iterator[str]:
    kind.kubectl("create", "namespace", NS)
    install_operator(kind, RELEASE, OP_NS, NS, in_cluster_values(image))
    try:
        yield f"{RELEASE}-epd-operator"
    finally:
        kind.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        kind.run("helm", "uninstall", RELEASE, "--namespace", OP_NS, check=False)


def test_operator_runs_in_cluster_under_its_serviceaccount(kind: Cluster, operator: str) -> None:
    pods = json.loads(
        kind.kubectl(
            "-n", OP_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator", "-o", "json"
        ).stdout
    )["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == operator
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    uid = kind.kubectl("-n", OP_NS, "exec", pod["metadata"]["name"], "--", "id", "-u").stdout
    assert uid.strip() == "10001"


def epd_cluster(encoder_node: str, decode_node: str) -> dict[str, Any]:
    """E/PD with encoder outputs over Mooncake TCP, the two roles pinned to different nodes."""

    def on(node: str) -> dict[str, Any]:
        return {"replicas": 1, "nodeSelector": {"kubernetes.io/hostname": node}}

    return {
        "apiVersion": "epd-operator.io/v1alpha1",
        "kind": "EPDCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"name": "Qwen/Qwen3-VL-8B-Instruct"},
            "ecTransfer": {"protocol": "tcp"},
            "roles": {"encoder": on(encoder_node), "decode": on(decode_node)},
        },
    }


def pod_metrics(cluster: Cluster, pod: str) -> dict[str, float]:
    path = f"/api/v1/namespaces/{NS}/pods/{pod}:{ENGINE_PORT}/proxy/metrics"
    return parse_metrics(cluster.kubectl("get", "--raw", path).stdout)


def test_image_chat_through_the_router_moves_encoder_outputs_across_nodes(
    kind: Cluster, operator: str, image: str
) -> None:
    nodes = node_names(kind)
    assert len(nodes) == 2, nodes
    kind.kubectl("apply", "-f", "-", input=json.dumps(epd_cluster(nodes[0], nodes[1])))
    wait_ready(kind, NS, NAME, timeout=300)
    pods = json.loads(
        kind.kubectl(
            "-n", NS, "get", "pods", "-l", f"{c.LABEL_INSTANCE}={NAME}", "-o", "json"
        ).stdout
    )["items"]
    by_role = {p["metadata"]["labels"].get(c.LABEL_ROLE): p for p in pods}
    encoder, decode = by_role["encoder"], by_role["decode"]
    assert encoder["spec"]["nodeName"] != decode["spec"]["nodeName"]
    for pod in pods:
        assert pod["status"]["phase"] == "Running", pod["metadata"]["name"]
    before = pod_metrics(kind, decode["metadata"]["name"]).get(
        "epd_sim_ec_bytes_verified_total", 0.0
    )

    body = {
        "model": "Qwen/Qwen3-VL-8B-Instruct",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    image_part(png(64, 64, (200, 30, 30), seed=1)),
                    text_part("What is in the image?"),
                ],
            }
        ],
    }
    url = f"http://{NAME}-router.{NS}.svc.cluster.local:{ENGINE_PORT}/v1/chat/completions"
    status, answer = post_from_pod(kind, NS, image, url, body)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"]

    # The decode pod verified the encoder's outputs it received over Mooncake TCP from the
    # other node: real bytes, checked against what the encoder computed.
    after = pod_metrics(kind, decode["metadata"]["name"])
    assert after.get("epd_sim_ec_bytes_verified_total", 0.0) > before, after
    assert sum(v for k, v in after.items() if k.startswith("epd_sim_ec_failures_total")) == 0
    pushed = pod_metrics(kind, encoder["metadata"]["name"]).get("epd_sim_ec_push_bytes_total", 0)
    assert pushed > 0
