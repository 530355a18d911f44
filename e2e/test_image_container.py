"""The control-plane image as a container (tier `kind`): built by hack/build-images.sh from the
root Dockerfile on our offline Debian base, then run with podman against the session's cluster.

Proves what operator/tests/test_chart_image.py can only check on paper: the default entry point
is the operator, it runs as the non-root user the chart's securityContext names, it serves
/healthz and /metrics on the ports the chart probes, and the router and simulator entry points
the engine pods use are installed and start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.operator_proc import free_port, parse_metrics
from e2e.paths import REPO
from e2e.providers import Cluster, build_images, kind_engine

pytestmark = pytest.mark.kind

CHART = REPO / "charts" / "epd-operator"


def podman(
    *args: str, env: dict[str, str], timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    if shutil.which("podman") is None:
        pytest.fail("the kind tier needs podman (hack/build-images.sh installs it as root)")
    engine = kind_engine()
    assert engine is not None
    return {**os.environ, **engine.env}


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str]) -> str:
    archive, ref = build_images()["epd"]
    assert archive.stat().st_size > 0
    if podman("image", "exists", ref, env=podman_env, check=False).returncode != 0:
        podman("load", "-q", "-i", str(archive), env=podman_env, timeout=300)
    return ref


def test_image_config_matches_what_the_chart_expects(
    image: str, podman_env: dict[str, str]
) -> None:
    info = json.loads(podman("image", "inspect", image, env=podman_env).stdout)[0]
    config = info["Config"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert config["Cmd"] == ["epd-operator"]
    assert config["User"].split(":")[0] == "10001"
    ports = set(config.get("ExposedPorts", {}))
    assert {f"{values['metrics']['port']}/tcp", f"{values['healthPort']}/tcp"} <= ports
    assert "EPD_ENGINE=sim" in config["Env"]


# (argv, what its output holds): the entry points the chart and the engine pods run, the
# transfer engine the simulator's data plane uses (every shared library it links resolves),
# and the user every process runs as.
ENTRY_POINTS = [
    (["epd-router", "--help"], "usage"),
    (["epd-engine", "--help"], "usage"),
    (["epdctl", "--help"], "usage"),
    (
        ["python3", "-c", "from mooncake.engine import TransferEngine; print(TransferEngine)"],
        "TransferEngine",
    ),
    (["id", "-u"], "10001"),
]


@pytest.mark.parametrize(("argv", "expected"), ENTRY_POINTS)
def test_entry_points_run_as_the_non_root_user(
    image: str, podman_env: dict[str, str], argv: list[str], expected: str
) -> None:
    proc = podman("run", "--rm", "--network=none", image, *argv, env=podman_env)
    assert expected in proc.stdout, proc.stdout


@pytest.fixture
def operator_container(
    image: str, podman_env: dict[str, str], cluster: Cluster, tmp_path: Path
) -> Iterator[tuple[str, int, int]]:
    # A self-contained kubeconfig the container's user (10001) can read; host network so the
    # container reaches the session cluster's API server as this machine does.
    view = cluster.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout
    kc = tmp_path / "kubeconfig"
    kc.write_text(view)
    kc.chmod(0o644)
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
    metrics_port, health_port = free_port(), free_port()
    name = f"epd-image-test-{metrics_port}"
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network=host",
        "-v",
        f"{kc}:/kube/config:ro",
        "-e",
        "KUBECONFIG=/kube/config",
        image,
        "epd-operator",
        f"--metrics-port={metrics_port}",
        f"--health-port={health_port}",
        "--bind-address=127.0.0.1",
        "--namespace=epd-image-test",
        env=podman_env,
    )
    try:
        yield name, metrics_port, health_port
    finally:
        logs = podman("logs", "--tail", "30", name, env=podman_env, check=False)
        print(logs.stdout + logs.stderr)
        podman("rm", "-f", "-t", "2", name, env=podman_env, check=False)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_operator_container_serves_health_and_metrics(
    operator_container: tuple[str, int, int], podman_env: dict[str, str]
) -> None:
    name, metrics_port, health_port = operator_container
    deadline = time.monotonic() + 90
    status = 0
    while time.monotonic() < deadline:
        try:
            status, _ = get(f"http://127.0.0.1:{health_port}/healthz")
        except OSError:
            status = 0
        if status == 200:
            break
        running = podman("inspect", "-f", "{{.State.Running}}", name, env=podman_env)
        assert running.stdout.strip() == "true", "the operator container exited"
        time.sleep(1)
    assert status == 200, "no /healthz 200 within 90s"
    status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    # The operator's own registry (not a default one): its families are declared at start.
    assert "# TYPE epd_operator_reconcile_duration_seconds histogram" in text
    # And it is reading the cluster: its watches started (the reads counter has samples).
    assert any(k.startswith("epd_operator_api_reads_total{") for k in parse_metrics(text)), text
    # As the host sees it: uid 10001 (the image names it epd; the host has no such user).
    user = podman("top", name, "huser", env=podman_env).stdout.split()
    assert set(user[1:]) == {"10001"}, user
