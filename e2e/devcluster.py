"""The README's main job: a local cluster with GPU/RDMA nodes, and what runs on it.

    python -m e2e.devcluster up      bring it up, print it, stay in the foreground; Ctrl-C tears down
    python -m e2e.devcluster down    tear down a cluster left behind (e.g. after a kill -9)

The cluster is the same provider the tests use (EPD_CLUSTER_PROVIDER, kwok by default) under a
fixed name and work directory, so `down` can find it from another shell.
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

from e2e.providers import Cluster, Provider, ProviderError, make_provider, node_capacity_table

NAME = "epd-dev"
WORKDIR = Path(os.environ.get("EPD_CACHE_DIR", Path.home() / ".cache" / "epd-operator")) / "dev"

log = logging.getLogger("devcluster")


def _provider() -> Provider:
    return make_provider(os.environ.get("EPD_CLUSTER_PROVIDER", "kwok"), NAME, WORKDIR)


def up(wait: bool) -> int:
    provider = _provider()
    # A cluster of the same name left by an earlier run would make `create` fail.
    provider.down()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d: tearing down", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster = provider.up()
        show(cluster)
        if wait:
            print("\nCluster is up. Press Ctrl-C to tear it down "
                  "(or run: python -m e2e.devcluster down).", flush=True)
            stop.wait()
    finally:
        if wait:
            provider.down()
    return 0


def show(cluster: Cluster) -> None:
    print(f"KUBECONFIG={cluster.kubeconfig}")
    print(node_capacity_table(cluster))


def down() -> int:
    _provider().down()
    print(f"cluster {NAME} deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m e2e.devcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="create the cluster and keep it until Ctrl-C")
    p_up.add_argument("--no-wait", action="store_true",
                      help="leave the cluster running and return (tear down with `down`)")
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
