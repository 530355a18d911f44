"""`epd-operator`: run the operator (kopf) with our settings, a liveness probe and metrics.

    epd-operator [--namespace NS ...] [--resync-seconds 60] [--metrics-port 8080]
                 [--health-port 8081] [--bind-address 0.0.0.0] [--workers 8]
                 [--webhook-port 9443 --webhook-cert-dir /etc/epd-operator/webhook]

Without --namespace it serves EPDClusters in all namespaces (the chart's ClusterRole mode);
with one or more, only those (the chart's Role mode, `watchNamespaces`). API credentials come
from the pod's ServiceAccount, or from KUBECONFIG outside a cluster. Engine/router images and
other defaults come from the environment (see `epd_operator.api.operator_config`).

With --webhook-port the operator also serves the validating admission webhook over HTTPS
(tls.crt / tls.key from --webhook-cert-dir, re-read when they change: certificate rotation).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import kopf

from epd_operator import __version__, memory
from epd_operator.api.operator_config import OperatorConfig, OperatorConfigError
from epd_operator.handlers import Options, Runtime, configure, register
from epd_operator.handlers.admission import register_admission
from epd_operator.metrics import Metrics
from epd_operator.reconcile.kube import Kube
from epd_operator.reconcile.login import LoginError

log = logging.getLogger("epd_operator")


def _servers(p: argparse.ArgumentParser) -> None:
    """The metrics, liveness and webhook servers' flags."""
    env = os.environ.get
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("EPD_METRICS_PORT", "8080")),
        help="Prometheus metrics port (0 disables)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(env("EPD_HEALTH_PORT", "8081")),
        help="liveness endpoint port, path /healthz (0 disables)",
    )
    p.add_argument(
        "--bind-address",
        default=env("EPD_BIND_ADDRESS", "0.0.0.0"),
        help="address the metrics and liveness servers listen on",
    )
    p.add_argument(
        "--webhook-port",
        type=int,
        default=int(env("EPD_WEBHOOK_PORT", "0")),
        help="serve the validating admission webhook on this port (0 disables)",
    )
    p.add_argument(
        "--webhook-cert-dir",
        default=env("EPD_WEBHOOK_CERT_DIR", "/etc/epd-operator/webhook"),
        help="directory holding the webhook's tls.crt and tls.key",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="epd-operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="serve EPDClusters in this namespace (repeatable); default: all",
    )
    p.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env("EPD_RESYNC_SECONDS", "60")),
        help="re-reconcile every EPDCluster this often (restores hand edits)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(env("EPD_WORKERS", "8")),
        help="reconcile passes run in parallel (different EPDClusters)",
    )
    p.add_argument(
        "--log-level",
        default=env("EPD_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    _servers(p)
    p.add_argument("--version", action="version", version=f"epd-operator {__version__}")
    args = p.parse_args(argv)
    if args.resync_seconds <= 0:
        p.error(f"--resync-seconds must be > 0, got {args.resync_seconds}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.webhook_port:
        for name in ("tls.crt", "tls.key"):
            if not (Path(args.webhook_cert_dir) / name).is_file():
                p.error(f"--webhook-port needs {Path(args.webhook_cert_dir) / name}")
    return args


def main(argv: list[str] | None = None) -> int:
    memory.limit_arenas()  # before any thread (metrics server, reconcile pool, watches) starts
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handler call at INFO; keep its chatter to warnings unless debugging.
    if args.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    options = Options(
        namespaces=list(args.namespace), resync_seconds=args.resync_seconds, workers=args.workers
    )
    try:
        cfg = OperatorConfig.from_env()
        kube = Kube.from_environment()
    except (OperatorConfigError, LoginError) as exc:
        print(f"epd-operator: {exc}", file=sys.stderr)
        return 2
    metrics = Metrics()
    runtime = Runtime(kube, cfg, options, metrics)
    registry = kopf.OperatorRegistry()
    register(registry, runtime)
    settings = kopf.OperatorSettings()
    configure(settings, options)
    if args.webhook_port:
        register_admission(registry)
        certs = Path(args.webhook_cert_dir)
        settings.admission.server = kopf.WebhookServer(
            addr=args.bind_address,
            port=args.webhook_port,
            certfile=str(certs / "tls.crt"),
            pkeyfile=str(certs / "tls.key"),
        )
    if args.metrics_port:
        metrics.serve(args.metrics_port, args.bind_address)
    host = f"[{args.bind_address}]" if ":" in args.bind_address else args.bind_address
    liveness = f"http://{host}:{args.health_port}/healthz" if args.health_port else None
    log.info(
        "epd-operator %s: namespaces=%s resync=%ss metrics=:%s health=%s webhook=:%s",
        __version__,
        options.namespaces or "all",
        options.resync_seconds,
        args.metrics_port,
        liveness,
        args.webhook_port or "off",
    )
    try:
        kopf.run(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=not options.namespaces,
            namespaces=options.namespaces,
            liveness_endpoint=liveness,
        )
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
