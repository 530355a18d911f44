"""Run the operator as a local process against a cluster, as a given ServiceAccount.

On the kwok provider no container runtime exists (pods are simulated), so the chart is
installed with `replicas=0` and the operator runs here instead, authenticated with a token of
the chart's ServiceAccount: whatever that RBAC does not allow fails, exactly as in a pod.

    kc = serviceaccount_kubeconfig(cluster, "epd-system", "epd-epd-operator", path)
    op = OperatorProcess(kc, namespaces=["team-a"], resync_seconds=3, log_path=...)
    op.start(); op.wait_healthy(); ...; op.kill(); op.start(); ...; op.stop()
"""

from __future__ import annotations

import abc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from e2e.providers import Cluster, build_images, kind_engine_run
from epd_operator.api.operator_config import ENV_PREFIX, OperatorConfig

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serviceaccount_kubeconfig(
    cluster: Cluster, namespace: str, name: str, path: Path, duration: str = "2h"
) -> Path:
    """A kubeconfig for the cluster's API server that authenticates as ServiceAccount
    `namespace/name` with a bound token (`kubectl create token`)."""
    token = cluster.kubectl(
        "-n", namespace, "create", "token", name, f"--duration={duration}"
    ).stdout.strip()
    view = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    server = view["clusters"][0]["cluster"]
    entry = {
        k: v
        for k, v in server.items()
        if k
        in ("server", "certificate-authority-data", "insecure-skip-tls-verify", "tls-server-name")
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": entry}],
        "users": [{"name": f"system:serviceaccount:{namespace}:{name}", "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {
                    "cluster": "c",
                    "user": f"system:serviceaccount:{namespace}:{name}",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (labels as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


class _OperatorMetrics(abc.ABC):
    """What the tests read from the operator's Prometheus endpoint, wherever it runs."""

    @abc.abstractmethod
    def metrics(self) -> dict[str, float]:
        """Each way of running the operator reaches its endpoint differently."""

    def writes(self) -> float:
        return sum(
            v for k, v in self.metrics().items() if k.startswith("epd_operator_api_writes_total{")
        )

    def reconciles(self, trigger: str) -> float:
        return self.metrics().get(
            f'epd_operator_reconcile_duration_seconds_count{{trigger="{trigger}"}}', 0.0
        )


class OperatorProcess(_OperatorMetrics):
    def __init__(
        self,
        kubeconfig: Path,
        namespaces: list[str],
        resync_seconds: float,
        log_path: Path,
        *,
        extra_env: dict[str, str] | None = None,
        workers: int = 8,
        extra_args: list[str] | None = None,
        bind_address: str = "127.0.0.1",
    ) -> None:
        self.kubeconfig = kubeconfig
        # Metrics, health and webhook listen here; the tests reach them on the loopback, so
        # anything else must include it (0.0.0.0).
        self.bind_address = bind_address
        self.namespaces = namespaces
        self.resync_seconds = resync_seconds
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.workers = workers
        self.extra_args = list(extra_args or [])
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "epd_operator",
            f"--resync-seconds={self.resync_seconds}",
            f"--workers={self.workers}",
            f"--metrics-port={self.metrics_port}",
            f"--health-port={self.health_port}",
            f"--bind-address={self.bind_address}",
        ]
        cmd += [f"--namespace={ns}" for ns in self.namespaces]
        return cmd + self.extra_args

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("operator already running")
        env = dict(os.environ)
        env.update(self.extra_env)
        env["KUBECONFIG"] = str(self.kubeconfig)
        # Out of a pod: make sure the in-cluster loader does not trigger.
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def healthz(self) -> int:
        """The HTTP status /healthz answers now (0: no answer)."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"operator exited; see {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def rss_bytes(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(m.group(1)) * 1024 if m else 0

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a node dying."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class InClusterOperator(_OperatorMetrics):
    """The operator as the chart's Deployment (providers with a container runtime: kind).

    Same surface as OperatorProcess for the tests: kill() force-deletes the pod (what SIGKILL
    of the process is to a pod), start() waits for its replacement, metrics come through the
    apiserver's service proxy, so no port-forward is needed.
    """

    def __init__(
        self, cluster: Cluster, namespace: str, release_fullname: str, metrics_port: int = 8080
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = release_fullname
        self.metrics_port = metrics_port
        self.log_path = Path("/dev/null")

    def start(self) -> None:
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 180) -> None:
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "rollout",
            "status",
            f"deploy/{self.name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app.kubernetes.io/component=operator",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )

    def kill(self) -> None:
        self.cluster.kubectl(
            "-n",
            self.namespace,
            "delete",
            "pod",
            "-l",
            "app.kubernetes.io/component=operator",
            "--grace-period=0",
            "--force",
            "--wait=false",
        )

    def stop(self) -> None:
        return None  # helm uninstall removes it

    def metrics(self) -> dict[str, float]:
        path = (
            f"/api/v1/namespaces/{self.namespace}/services/"
            f"{self.name}-metrics:{self.metrics_port}/proxy/metrics"
        )
        return parse_metrics(self.cluster.kubectl("get", "--raw", path).stdout)

    def log_tail(self, lines: int = 40) -> str:
        proc = self.cluster.kubectl(
            "-n", self.namespace, "logs", f"deploy/{self.name}", f"--tail={lines}", check=False
        )
        return proc.stdout + proc.stderr


# A kind cluster (its name and kubeconfig: a cluster made again under the same name, as
# module-scoped clusters of one session are, is another cluster) -> the image reference
# loaded into its nodes.
_LOADED: dict[tuple[str, Path], str] = {}


def build_and_load_images(cluster: Cluster) -> str:
    """kind only: our control-plane image (hack/build-images.sh: the repo's Dockerfile, built
    with podman without a registry, cached) loaded into the cluster's nodes with `kind load
    image-archive`, once per cluster. Returns the image reference."""
    key = (cluster.name, cluster.kubeconfig)
    if key not in _LOADED:
        archive, image = build_images()["epd"]
        cluster.run(
            "kind", "load", "image-archive", str(archive), "--name", cluster.name, timeout=600
        )
        _LOADED[key] = image
    return _LOADED[key]


def sim_settings(image: str) -> dict[str, str]:
    """Operator settings (EPD_OPERATOR_* variables) under which engine pods run our `image` as
    the simulator, and the router runs it too, never pulled: what `in_cluster_values` gives the
    chart, for tests that reconcile in their own process."""
    values = {"engine_image": image, "engine_mode": "sim", "router_image": image}
    values["image_pull_policy"] = "Never"
    return {ENV_PREFIX + k.upper(): v for k, v in values.items()}


def operator_config(cluster: Cluster) -> OperatorConfig:
    """The operator settings of a test that reconciles in its own process: the defaults on
    kwok, where pods are simulated; on kind, `sim_settings` of our loaded image."""
    if cluster.provider != "kind":
        return OperatorConfig.from_env({})
    return OperatorConfig.from_env(sim_settings(build_and_load_images(cluster)))


def image_tagged(cluster: Cluster, image: str, tag: str) -> str:
    """`image` under `tag`, as pods can start from it: on kind a second tag of the loaded
    image in every node (`tag_in_nodes`), so rolled pods really start; on kwok, where pods are
    simulated, just the reference."""
    if cluster.provider != "kind":
        return retagged(image, tag)
    return tag_in_nodes(cluster, image, tag)


def retagged(image: str, tag: str) -> str:
    """The reference `image` (repository:tag) with `tag` instead of its own."""
    return f"{image.rpartition(':')[0]}:{tag}"


def in_every_node(cluster: Cluster, *argv: str) -> None:
    """kind only: run `argv` in every node container of `cluster` (the host's part of a
    test's set-up: what an admin would have put on each GPU server)."""
    nodes = cluster.run("kind", "get", "nodes", "--name", cluster.name).stdout.split()
    if not nodes:
        raise RuntimeError(f"kind cluster {cluster.name} has no nodes")
    for node in nodes:
        kind_engine_run(cluster, "exec", node, *argv)


def tag_in_nodes(cluster: Cluster, image: str, tag: str) -> str:
    """kind only: `image` (loaded by `build_and_load_images`) under a second tag in every
    node's containerd, returned as a reference. An image change then rolls out to pods that
    really start (a reference no node holds would stay in ErrImageNeverPull), without
    building or loading a second archive."""
    ref = retagged(image, tag)
    # ctr names images as the CRI does: an image loaded as localhost/x:y is that name.
    in_every_node(cluster, "ctr", "-n", "k8s.io", "images", "tag", "--force", image, ref)
    return ref


def in_cluster_values(image: str) -> list[str]:
    """helm `--set` arguments that run the operator in-cluster (1 replica) from our loaded
    `image`, and engine pods as simulators from the same image; never pulled (kind)."""
    repository, _, tag = image.rpartition(":")
    values = {
        "replicas": "1",
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "engine.image": image,
        "engine.mode": "sim",
        "engine.pullPolicy": "Never",
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
