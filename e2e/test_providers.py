"""Unit tests of the cluster-provider plumbing and the binary installer's refusals (no cluster)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e.paths import REPO
from e2e.providers import (
    GPU_RESOURCE,
    INSTALL_SCRIPT,
    KIND_CONFIG,
    NODE_IMAGE_REPOSITORY,
    RDMA_RESOURCE,
    ProviderError,
    fake_gpu_node,
    free_ports,
    kind_config,
    make_provider,
    tool_env,
)


def test_unknown_provider_is_named() -> None:
    expected = r"EPD_CLUSTER_PROVIDER='minikube'.*kwok, kind, existing"
    with pytest.raises(ProviderError, match=expected):
        make_provider("minikube", "x", Path("/tmp/unused"))


def test_existing_provider_needs_kubeconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(ProviderError, match="KUBECONFIG"):
        make_provider("existing", "x", Path("/tmp/unused"))


def test_fake_node_advertises_gpus_and_rdma_as_capacity_and_allocatable() -> None:
    node = fake_gpu_node("gpu-node-7", "zone-b")
    status = node["status"]
    assert isinstance(status, dict)
    for key in ("capacity", "allocatable"):
        assert status[key][GPU_RESOURCE] == "8"
        assert status[key][RDMA_RESOURCE] == "1000"
    meta = node["metadata"]
    assert isinstance(meta, dict)
    assert meta["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert meta["labels"]["kubernetes.io/hostname"] == "gpu-node-7"
    assert meta["labels"]["topology.kubernetes.io/zone"] == "zone-b"


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(0 < p < 65536 for p in ports)


def test_tool_env_puts_pinned_binaries_first(tmp_path: Path) -> None:
    env = tool_env(tmp_path / "kc", tmp_path / "bin", EXTRA="1")
    assert env["KUBECONFIG"] == str(tmp_path / "kc")
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "bin")
    assert env["EXTRA"] == "1"


@pytest.mark.process
@pytest.mark.parametrize(
    ("env_change", "message"),
    [
        ({"PATH": "/usr/bin:/bin"}, "the Go toolchain ('go') is missing"),
        ({"GOPROXY": "off"}, "GOPROXY is 'off'"),
    ],
)
def test_installer_names_what_is_missing(
    tmp_path: Path, env_change: dict[str, str], message: str
) -> None:
    # An empty cache so the installer has to build, and stops before doing anything.
    env = dict(os.environ, EPD_CACHE_DIR=str(tmp_path), **env_change)
    if "PATH" in env_change and any(
        (Path(d) / "go").exists() for d in env_change["PATH"].split(os.pathsep)
    ):
        pytest.fail("this check needs a PATH without go; /usr/bin or /bin holds one here")
    proc = subprocess.run(
        ["/bin/bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not list(tmp_path.rglob("kube-apiserver"))


# (offline node image, cgroup v1 host) -> the kubeadm config patches kind_config adds.
KIND_CONFIG_CASES = [
    (False, False, []),
    (True, False, [{"kind": "ClusterConfiguration", "imageRepository": NODE_IMAGE_REPOSITORY}]),
    (False, True, [{"kind": "KubeletConfiguration", "failCgroupV1": False}]),
    (
        True,
        True,
        [
            {"kind": "ClusterConfiguration", "imageRepository": NODE_IMAGE_REPOSITORY},
            {"kind": "KubeletConfiguration", "failCgroupV1": False},
        ],
    ),
]


@pytest.mark.parametrize(("offline", "cgroup_v1", "patches"), KIND_CONFIG_CASES)
def test_kind_config_adds_what_the_host_and_node_image_need(
    offline: bool, cgroup_v1: bool, patches: list[dict[str, object]]
) -> None:
    base = yaml.safe_load(KIND_CONFIG.read_text())
    out = kind_config(base, offline_node_image=offline, cgroup_v1=cgroup_v1)
    assert [yaml.safe_load(p) for p in out.get("kubeadmConfigPatches", [])] == patches
    assert out["nodes"] == base["nodes"]
    assert "kubeadmConfigPatches" not in base  # the file itself is left as it is


def test_kind_config_is_two_nodes_both_labelled_as_gpu_rdma_servers() -> None:
    nodes = yaml.safe_load(KIND_CONFIG.read_text())["nodes"]
    assert [n["role"] for n in nodes] == ["control-plane", "worker"]
    for node in nodes:
        assert node["labels"]["nvidia.com/gpu.present"] == "true"
        assert node["labels"]["feature.node.kubernetes.io/rdma.available"] == "true"


def test_kind_cni_manifest_is_templated_by_kind_with_the_pod_subnet() -> None:
    # kind templates /kind/manifests/default-cni.yaml only when it holds this sentence.
    text = (REPO / "e2e" / "kind-cni.yaml").read_text()
    assert "would you kindly template this file" in text
    assert "{{ .PodSubnet }}" in text
    docs = list(yaml.safe_load_all(text))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"{NODE_IMAGE_REPOSITORY}/node-tools:")
