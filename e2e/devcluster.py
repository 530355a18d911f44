"""The README's main job: local cluster -> chart installed -> operator running -> sample Ready.

    python -m e2e.devcluster up      bring it all up, print it, stay in the foreground;
                                     Ctrl-C stops the operator and tears the cluster down
    python -m e2e.devcluster down    tear down a cluster left behind (e.g. after a kill -9)

Steps of `up`: a cluster from the same provider the tests use (EPD_CLUSTER_PROVIDER, kwok by
default) under a fixed name and work directory, so `down` can find it from another shell; the
Helm chart installed for real with `helm install` (CRD, RBAC, ServiceAccount); the operator as
a local process authenticated as the chart's ServiceAccount (kwok runs no containers, so the
chart's Deployment is installed with 0 replicas); the minimal sample applied; then it waits for
the EPDCluster's Ready condition and prints `kubectl get epdc` and the pods.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from e2e.operator_proc import OperatorProcess, serviceaccount_kubeconfig
from e2e.paths import REPO, SAMPLES
from e2e.providers import (
    Cluster,
    Provider,
    ProviderError,
    make_provider,
    node_capacity_table,
)

NAME = "epd-dev"
WORKDIR = Path(os.environ.get("EPD_CACHE_DIR", Path.home() / ".cache" / "epd-operator")) / "dev"
RELEASE = "epd"
OPERATOR_NS = "epd-system"
SAMPLE = SAMPLES / "minimal-epd.yaml"
SAMPLE_NS = "default"
PIDFILE = WORKDIR / "operator.pid"

log = logging.getLogger("devcluster")


def _provider() -> Provider:
    return make_provider(os.environ.get("EPD_CLUSTER_PROVIDER", "kwok"), NAME, WORKDIR)


def up(wait: bool) -> int:
    provider = _provider()
    # A cluster (and operator) of the same name left by an earlier run would get in the way.
    stop_recorded_operator()
    provider.down()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d: tearing down", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    operator: OperatorProcess | None = None
    try:
        cluster = provider.up()
        print(f"KUBECONFIG={cluster.kubeconfig}")
        print(node_capacity_table(cluster), flush=True)
        operator = start_operator(cluster)
        apply_sample(cluster)
        if wait:
            print(
                "\nEverything is up. Press Ctrl-C to tear it down "
                "(or run: python -m e2e.devcluster down).",
                flush=True,
            )
            stop.wait()
    finally:
        if wait:
            if operator is not None:
                operator.stop()
            provider.down()
    return 0


def start_operator(cluster: Cluster) -> OperatorProcess:
    """`helm install` the chart, then run the operator here as the chart's ServiceAccount."""
    cluster.run(
        "helm",
        "install",
        RELEASE,
        str(REPO / "charts" / "epd-operator"),
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        "replicas=0",
        "--wait",
        "--timeout",
        "60s",
    )
    print(f"helm: release {RELEASE} installed in namespace {OPERATOR_NS}", flush=True)
    sa = cluster.kubectl(
        "get",
        "serviceaccount",
        "-n",
        OPERATOR_NS,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout.strip()
    kubeconfig = serviceaccount_kubeconfig(
        cluster, OPERATOR_NS, sa, WORKDIR / "operator.kubeconfig"
    )
    operator = OperatorProcess(
        kubeconfig,
        namespaces=[],
        resync_seconds=30,
        log_path=WORKDIR / "operator.log",
        extra_env={"EPD_OPERATOR_ENGINE_MODE": "sim"},
    )
    operator.start()
    assert operator.proc is not None
    # `down` from another shell stops an operator that `up --no-wait` left running.
    PIDFILE.write_text(str(operator.proc.pid))
    operator.wait_healthy()
    print(
        f"operator: running as serviceaccount {OPERATOR_NS}/{sa} "
        f"(log: {operator.log_path}, metrics: 127.0.0.1:{operator.metrics_port})",
        flush=True,
    )
    return operator


def stop_recorded_operator() -> None:
    try:
        pid = int(PIDFILE.read_text())
    except (OSError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"epd_operator" in cmdline:  # never signal a recycled pid
        os.kill(pid, signal.SIGTERM)
        print(f"operator (pid {pid}) stopped")
    PIDFILE.unlink(missing_ok=True)


def apply_sample(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-n", SAMPLE_NS, "-f", str(SAMPLE))
    name = cluster.kubectl(
        "get", "-n", SAMPLE_NS, "-f", str(SAMPLE), "-o", "jsonpath={.metadata.name}"
    ).stdout.strip()
    print(f"sample: {SAMPLE.relative_to(REPO)} applied; waiting for Ready", flush=True)
    cluster.kubectl(
        "wait",
        "-n",
        SAMPLE_NS,
        "--for=condition=Ready",
        f"epdc/{name}",
        "--timeout=180s",
        timeout=200,
    )
    print(cluster.kubectl("get", "epdc", "-n", SAMPLE_NS).stdout)
    print(cluster.kubectl("get", "pods", "-n", SAMPLE_NS, "-o", "wide").stdout, flush=True)


def down() -> int:
    stop_recorded_operator()
    _provider().down()
    print(f"cluster {NAME} deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m e2e.devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="create the cluster and keep it until Ctrl-C")
    p_up.add_argument(
        "--no-wait",
        action="store_true",
        help="leave the cluster running and return (tear down with `down`)",
    )
    sub.add_parser("down", help="delete the dev cluster")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            return up(wait=not args.no_wait)
        return down()
    except ProviderError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
