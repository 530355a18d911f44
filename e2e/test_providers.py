"""Unit tests of the cluster-provider plumbing and the binary installer's refusals (no cluster)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from e2e.providers import (
    GPU_RESOURCE,
    INSTALL_SCRIPT,
    RDMA_RESOURCE,
    ProviderError,
    fake_gpu_node,
    free_ports,
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
