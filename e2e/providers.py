"""Cluster providers for tests and the dev command: `kwok` (default), `kind`, `existing`.

- kwok: kwokctl's *binary* runtime runs a real kube-apiserver, etcd, kube-controller-manager and
  kube-scheduler as local processes (the pinned binaries from hack/install-cluster-bins.sh) and
  a kwok controller that makes pods on fake nodes go Running. We add fake GPU nodes that
  advertise `nvidia.com/gpu` and an RDMA device-plugin resource, so the real scheduler places
  (or refuses) our pods by those resources.
- kind: a real 2-node cluster from e2e/kind-config.yaml, on a Docker engine with kind's
  official node image, or on podman with our offline node image (hack/build-node-image.sh);
  our control-plane image (hack/build-images.sh) is loaded with `kind load image-archive`.
- existing: whatever KUBECONFIG points at; nothing is created or deleted.

Pick one with EPD_CLUSTER_PROVIDER. Everything here shells out to the pinned binaries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.paths import REPO

INSTALL_SCRIPT = REPO / "hack" / "install-cluster-bins.sh"
KIND_CONFIG = REPO / "e2e" / "kind-config.yaml"
BUILD_IMAGES = REPO / "hack" / "build-images.sh"
BUILD_NODE_IMAGE = REPO / "hack" / "build-node-image.sh"

GPU_RESOURCE = "nvidia.com/gpu"
RDMA_RESOURCE = "rdma/hca_shared_devices_a"
GPUS_PER_NODE = 8
RDMA_PER_NODE = 1000

log = logging.getLogger(__name__)


class ProviderError(RuntimeError):
    """A cluster could not be created, reached or torn down; the message says which step."""


def bin_dir(build: bool = True) -> Path:
    """The cached directory of pinned cluster binaries, building it first when `build`."""
    args = [str(INSTALL_SCRIPT)] + ([] if build else ["--print"])
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"hack/install-cluster-bins.sh failed:\n{proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def json_objects(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The objects of a `kubectl get -w -o json` stream: pretty-printed JSON documents one
    after another, each spread over many lines."""
    decoder = json.JSONDecoder()
    buf = ""
    for line in lines:
        buf += line
        try:
            obj, end = decoder.raw_decode(buf.strip())
        except json.JSONDecodeError:
            continue
        buf = buf.strip()[end:]
        yield obj


def tool_env(kubeconfig: Path, bins: Path, **extra: str) -> dict[str, str]:
    """This process's environment with KUBECONFIG set and the pinned binaries first on PATH."""
    env = dict(os.environ)
    env.update(
        {"KUBECONFIG": str(kubeconfig), "PATH": f"{bins}{os.pathsep}{env.get('PATH', '')}"},
        **extra,
    )
    return env


@dataclass
class Cluster:
    """A reachable cluster: what tests and scripts need to talk to it."""

    provider: str
    name: str
    kubeconfig: Path
    bin_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self,
        tool: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a pinned binary (kubectl, helm, ...) against this cluster."""
        exe = self.bin_dir / tool
        cmd = [str(exe if exe.exists() else tool), *args]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ProviderError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.strip()}")
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, input=input, check=check, timeout=timeout)

    def get_json(self, *args: str) -> dict[str, object]:
        out = self.kubectl("get", *args, "-o", "json").stdout
        data: dict[str, object] = json.loads(out)
        return data


def fake_gpu_node(name: str, zone: str) -> dict[str, object]:
    """A kwok-managed node shaped like an 8-GPU RDMA server (labels as GPU Operator sets them)."""
    resources = {
        "cpu": "128",
        "memory": "1Ti",
        "pods": "110",
        "ephemeral-storage": "2Ti",
        GPU_RESOURCE: str(GPUS_PER_NODE),
        RDMA_RESOURCE: str(RDMA_PER_NODE),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "node.kubernetes.io/instance-type": "gpu-8x-h100-80gb",
                "topology.kubernetes.io/zone": zone,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": str(GPUS_PER_NODE),
                "feature.node.kubernetes.io/rdma.available": "true",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "fake",
                "osImage": "kwok",
                "kernelVersion": "fake",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        },
    }


class KwokProvider:
    """A local control plane from the cached binaries via `kwokctl --runtime binary`."""

    name = "kwok"

    def __init__(
        self,
        cluster_name: str,
        workdir: Path,
        nodes: int = 4,
        audit_policy: Path | None = None,
        service_cidr: str | None = None,
    ) -> None:
        self.cluster_name = cluster_name
        self.workdir = workdir
        self.nodes = nodes
        # An apiserver audit policy (the benchmark counts the operator's requests with it);
        # the log is then `audit_log()`.
        self.audit_policy = audit_policy
        # The apiserver's default Service range (a /24) holds ~250 ClusterIPs: too few for a
        # benchmark with hundreds of EPDClusters (one router Service each).
        self.service_cidr = service_cidr
        self.bins = bin_dir()
        self.kubeconfig = workdir / "kubeconfig"
        self.env = tool_env(
            self.kubeconfig,
            self.bins,
            # kwokctl keeps its cluster state here instead of ~/.kwok.
            KWOK_WORKDIR=str(workdir / "kwok"),
            KWOK_KUBECTL_BINARY=str(self.bins / "kubectl"),
        )

    def _kwokctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bins / "kwokctl"), "--name", self.cluster_name, *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise ProviderError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def _create(self) -> None:
        b = self.bins
        # Ports chosen here rather than by kwokctl: two clusters created at the same moment
        # (parallel sessions) were seen to pick the same "random" apiserver port.
        ports = free_ports(5)
        self._kwokctl(
            "create",
            "cluster",
            "--runtime",
            "binary",
            "--kubeconfig",
            str(self.kubeconfig),
            "--kube-apiserver-binary",
            str(b / "kube-apiserver"),
            "--kube-controller-manager-binary",
            str(b / "kube-controller-manager"),
            "--kube-scheduler-binary",
            str(b / "kube-scheduler"),
            "--etcd-binary",
            str(b / "etcd"),
            "--kwok-controller-binary",
            str(b / "kwok"),
            "--kube-apiserver-port",
            str(ports[0]),
            "--etcd-port",
            str(ports[1]),
            "--kube-controller-manager-port",
            str(ports[2]),
            "--kube-scheduler-port",
            str(ports[3]),
            "--controller-port",
            str(ports[4]),
            "--timeout",
            "90s",
            "--wait",
            "60s",
            *(["--kube-audit-policy", str(self.audit_policy)] if self.audit_policy else []),
            *(
                ["--extra-args", f"kube-apiserver=service-cluster-ip-range={self.service_cidr}"]
                if self.service_cidr
                else []
            ),
            timeout=150,
        )

    def audit_log(self) -> Path | None:
        """The apiserver's audit log (only with an `audit_policy`)."""
        found = sorted((self.workdir / "kwok").glob(f"clusters/{self.cluster_name}/**/audit.log"))
        return found[0] if found else None

    def up(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                self._create()
                break
            except (ProviderError, subprocess.TimeoutExpired) as exc:
                log.warning("kwok cluster create failed (attempt %d): %s", attempt, exc)
                self.down()
                if attempt == 2:
                    raise ProviderError(
                        f"kwok cluster {self.cluster_name} did not come up: {exc}"
                    ) from exc
        cluster = Cluster(self.name, self.cluster_name, self.kubeconfig, self.bins, self.env)
        zones = ["zone-a", "zone-b"]
        nodes = [fake_gpu_node(f"gpu-node-{i}", zones[i % 2]) for i in range(self.nodes)]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        wait_nodes_ready(cluster, len(nodes))
        # The default ServiceAccount must exist before pods can be created in a namespace.
        wait_for(
            lambda: cluster.kubectl("get", "sa", "default", check=False).returncode == 0,
            60,
            "ServiceAccount default/default",
        )
        log.info("kwok cluster %s up in %.1fs", self.cluster_name, time.monotonic() - started)
        return cluster

    def export_logs(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        try:
            self._kwokctl("export", "logs", str(dest), timeout=60)
        except (ProviderError, subprocess.TimeoutExpired) as exc:
            log.warning("could not export kwok logs: %s", exc)

    def down(self) -> None:
        try:
            self._kwokctl("delete", "cluster", timeout=120)
        except (ProviderError, subprocess.TimeoutExpired) as exc:
            log.warning("kwokctl delete cluster failed: %s", exc)
        shutil.rmtree(self.workdir / "kwok", ignore_errors=True)


class KindProvider:
    """A 2-node kind cluster (e2e/kind-config.yaml) on a Docker engine or, without one, on
    podman with our offline node image (hack/build-node-image.sh). Our control-plane image is
    built by hack/build-images.sh and loaded with `kind load image-archive` (`load_archive`)."""

    name = "kind"

    def __init__(self, cluster_name: str, workdir: Path) -> None:
        self.cluster_name = cluster_name
        self.workdir = workdir
        self.bins = bin_dir()
        self.kubeconfig = workdir / "kubeconfig"
        self.engine = kind_engine()
        extra = {} if self.engine is None else self.engine.env
        self.env = tool_env(self.kubeconfig, self.bins, **extra)

    @staticmethod
    def available() -> str | None:
        """None when kind can run here, else the reason it cannot."""
        return (
            "no Docker engine answers and podman is not installed"
            if kind_engine() is None
            else None
        )

    def _kind(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bins / "kind"), *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise ProviderError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def up(self) -> Cluster:
        if self.engine is None:
            raise ProviderError(f"kind provider cannot run: {self.available()}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        image: list[str] = []
        if self.engine.offline_node_image:
            # kind bind-mounts the host's /lib/modules into every node; a host without one
            # (a VM kernel with built-in modules) gets an empty directory.
            Path("/lib/modules").mkdir(exist_ok=True)
            image = ["--image", build_node_image()[1]]
            self._kind_network_with_dns()
        config = self.workdir / "kind-config.yaml"
        config.write_text(
            yaml.safe_dump(
                kind_config(
                    yaml.safe_load(KIND_CONFIG.read_text()),
                    offline_node_image=self.engine.offline_node_image,
                    cgroup_v1=not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
                )
            )
        )
        self._kind(
            "create",
            "cluster",
            "--name",
            self.cluster_name,
            "--config",
            str(config),
            "--kubeconfig",
            str(self.kubeconfig),
            "--wait",
            "180s",
            *image,
            timeout=900,
        )
        log.info("kind cluster %s created in %.1fs", self.cluster_name, time.monotonic() - started)
        cluster = Cluster(self.name, self.cluster_name, self.kubeconfig, self.bins, self.env)
        # Both nodes run workloads (the control-plane node stands in for a second GPU server).
        cluster.kubectl(
            "taint", "nodes", "--all", "node-role.kubernetes.io/control-plane-", check=False
        )
        advertise_extended_resources(cluster)
        wait_nodes_ready(cluster, 2, timeout=180)
        wait_for(
            lambda: cluster.kubectl("get", "sa", "default", check=False).returncode == 0,
            60,
            "ServiceAccount default/default",
        )
        return cluster

    def _kind_network_with_dns(self) -> None:
        """kind reuses the podman network `kind`; one made before podman's DNS plugin was
        installed resolves no node names (`kubeadm join` then fails): drop it when no
        container uses it, so kind makes it again with DNS."""
        inspect = subprocess.run(
            ["podman", "network", "inspect", "kind"],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if inspect.returncode != 0 or json.loads(inspect.stdout)[0].get("dns_enabled", True):
            return
        users = subprocess.run(
            ["podman", "ps", "-aq", "--filter", "network=kind"],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if users.returncode == 0 and not users.stdout.strip():
            log.warning("recreating the podman network 'kind' with DNS")
            subprocess.run(
                ["podman", "network", "rm", "kind"], capture_output=True, env=self.env, check=False
            )

    def load_archive(self, archive: Path) -> None:
        """Load an image archive (`podman save` / `docker save`) into every node."""
        self._kind("load", "image-archive", str(archive), "--name", self.cluster_name)

    def export_logs(self, dest: Path) -> None:
        try:
            self._kind("export", "logs", str(dest), "--name", self.cluster_name)
        except (ProviderError, subprocess.TimeoutExpired) as exc:
            log.warning("could not export kind logs: %s", exc)

    def down(self) -> None:
        try:
            self._kind("delete", "cluster", "--name", self.cluster_name)
        except (ProviderError, subprocess.TimeoutExpired) as exc:
            log.warning("kind delete cluster failed: %s", exc)


@dataclass(frozen=True)
class KindEngine:
    """The container engine kind drives here, and the environment it needs."""

    name: str  # docker | podman
    env: dict[str, str]
    # The official node image comes from a registry a Docker host is assumed to reach; on
    # podman (this project's CI) we build ours offline.
    offline_node_image: bool


# kind's own switch: its podman provider when this is set, else Docker.
KIND_PROVIDER_ENV = "KIND_EXPERIMENTAL_PROVIDER"


def kind_engine_cli(env: Mapping[str, str]) -> str:
    """The container CLI that holds the node containers of a kind cluster run with `env`."""
    return "podman" if env.get(KIND_PROVIDER_ENV) == "podman" else "docker"


def kind_engine_run(cluster: Cluster, *args: str) -> str:
    """`<engine> args` for `cluster`'s node containers (podman or docker); its stdout.
    Raises ProviderError naming the command and its stderr."""
    cmd = [kind_engine_cli(cluster.env), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=cluster.env, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise ProviderError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def host_address(cluster: Cluster) -> str:
    """Where a process on this host is reachable from `cluster`'s apiserver (a webhook the
    test runs here): the loopback on kwok, whose apiserver is a process here; on kind the
    gateway of the node containers' network, since the apiserver runs in a node container."""
    if cluster.provider != "kind":
        return "127.0.0.1"
    (net,) = json.loads(kind_engine_run(cluster, "network", "inspect", "kind"))
    gateways = [s.get("gateway") for s in net.get("subnets") or []]  # podman
    gateways += [s.get("Gateway") for s in (net.get("IPAM") or {}).get("Config") or []]  # docker
    for gateway in gateways:
        if gateway and "." in gateway:
            return str(gateway)
    raise ProviderError(f"the network 'kind' has no IPv4 gateway: {gateways}")


def kind_engine() -> KindEngine | None:
    """Docker when its engine answers, else podman when installed, else None."""
    docker = shutil.which("docker")
    if (
        docker is not None
        and subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0
    ):
        return KindEngine("docker", {}, offline_node_image=False)
    if shutil.which("podman") is None:
        return None
    proc = subprocess.run([str(BUILD_IMAGES), "--env"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"hack/build-images.sh --env failed:\n{proc.stderr.strip()}")
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return KindEngine("podman", {KIND_PROVIDER_ENV: "podman", **env}, offline_node_image=True)


# The image repository of our offline node image's kubeadm images (hack/build-node-image.sh).
NODE_IMAGE_REPOSITORY = "localhost/kind"


def kind_config(
    base: dict[str, Any], *, offline_node_image: bool, cgroup_v1: bool
) -> dict[str, Any]:
    """e2e/kind-config.yaml plus what this host and node image need: kubeadm's images from our
    node image's repository, and a kubelet that still starts on a cgroup v1 host (1.36 refuses
    one unless told not to)."""
    config = dict(base)
    patches = list(config.get("kubeadmConfigPatches", []))
    if offline_node_image:
        patches.append(
            yaml.safe_dump(
                {"kind": "ClusterConfiguration", "imageRepository": NODE_IMAGE_REPOSITORY}
            )
        )
    if cgroup_v1:
        patches.append(yaml.safe_dump({"kind": "KubeletConfiguration", "failCgroupV1": False}))
    if patches:
        config["kubeadmConfigPatches"] = patches
    return config


def _script_lines(script: Path, *args: str) -> list[list[str]]:
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProviderError(f"{script.relative_to(REPO)} failed:\n{proc.stderr.strip()[-3000:]}")
    return [line.split() for line in proc.stdout.splitlines() if line.strip()]


def build_images(cpu_engine_model: Path | None = None) -> dict[str, tuple[Path, str]]:
    """Our images (hack/build-images.sh, cached): name -> (archive, image reference); with
    `cpu_engine_model`, also the CPU engine image with that model baked in ("cpu-engine")."""
    args = [] if cpu_engine_model is None else ["--cpu-engine", str(cpu_engine_model)]
    return {name: (Path(tar), ref) for name, tar, ref in _script_lines(BUILD_IMAGES, *args)}


def build_node_image() -> tuple[Path, str]:
    """Our offline kind node image (hack/build-node-image.sh, cached): (archive, reference)."""
    tar, ref = _script_lines(BUILD_NODE_IMAGE)[-1]
    return Path(tar), ref


# kind has two schedulable nodes where kwok has many fake servers: each kind node stands
# in for several 8-GPU servers, so the e2e suite's clusters fit on kind as they do on kwok.
KIND_GPUS_PER_NODE = 8 * GPUS_PER_NODE


def advertise_extended_resources(cluster: Cluster) -> None:
    """On kind there is no GPU or RDMA device plugin: advertise the resources by patching node
    status (the documented way to advertise extended resources), so the same pods schedule."""
    nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
    patch = json.dumps(
        [
            {"op": "add", "path": f"/status/capacity/{r.replace('/', '~1')}", "value": str(n)}
            for r, n in ((GPU_RESOURCE, KIND_GPUS_PER_NODE), (RDMA_RESOURCE, RDMA_PER_NODE))
        ]
    )
    for node in nodes:
        cluster.kubectl("patch", node, "--subresource=status", "--type=json", "-p", patch)


class ExistingProvider:
    """Use the cluster KUBECONFIG points at. The provider creates and deletes no cluster; the
    tests still install what they test (the CRD, the chart, test namespaces and volumes), so
    point it at a cluster meant for testing."""

    name = "existing"

    def __init__(self) -> None:
        kc = os.environ.get("KUBECONFIG")
        if not kc:
            raise ProviderError("EPD_CLUSTER_PROVIDER=existing needs KUBECONFIG to be set")
        self.kubeconfig = Path(kc)
        self.bins = bin_dir()

    def up(self) -> Cluster:
        env = tool_env(self.kubeconfig, self.bins)
        cluster = Cluster(self.name, "existing", self.kubeconfig, self.bins, env)
        cluster.kubectl("version")
        return cluster

    def export_logs(self, dest: Path) -> None:
        del dest  # Not ours to collect.

    def down(self) -> None:
        return None


Provider = KwokProvider | KindProvider | ExistingProvider


def make_provider(name: str, cluster_name: str, workdir: Path) -> Provider:
    if name == "kwok":
        return KwokProvider(cluster_name, workdir)
    if name == "kind":
        return KindProvider(cluster_name, workdir)
    if name == "existing":
        return ExistingProvider()
    raise ProviderError(f"EPD_CLUSTER_PROVIDER={name!r}: expected one of kwok, kind, existing")


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free on this machine right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(pred: object, timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `pred()` until true; raise naming `what` on timeout (no test hangs forever)."""
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise ProviderError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_nodes_ready(cluster: Cluster, count: int, timeout: float = 60) -> None:
    def ready() -> bool:
        items = cluster.get_json("nodes")["items"]
        assert isinstance(items, list)
        n = 0
        for node in items:
            conds = node.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                n += 1
        return n >= count

    wait_for(ready, timeout, f"{count} Ready nodes")


def node_capacity_table(
    cluster: Cluster, resources: Sequence[str] = (GPU_RESOURCE, RDMA_RESOURCE)
) -> str:
    """A printable table of nodes with their GPU and RDMA allocatable (for the dev command)."""
    items = cluster.get_json("nodes")["items"]
    assert isinstance(items, list)
    rows = [["NODE", "READY", *[r.upper() for r in resources]]]
    for node in items:
        alloc = node.get("status", {}).get("allocatable", {})
        conds = node.get("status", {}).get("conditions", [])
        ready = next((c["status"] for c in conds if c["type"] == "Ready"), "Unknown")
        rows.append([node["metadata"]["name"], ready, *[alloc.get(r, "-") for r in resources]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
