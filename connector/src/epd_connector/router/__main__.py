"""`epd-router`: the EPD cluster's OpenAI-compatible front door (options below, `--help`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

import uvloop
from aiohttp import web

from epd_connector.cliutil import add_dataclass_flags, dataclass_values, die_with_parent
from epd_connector.launch.config import ROLE_NAMES, LaunchConfig, LaunchConfigError, load

from .app import Router, RouterOptions
from .discovery import parse_static

DEFAULT_LAUNCH_CONFIG = "/etc/epd/launch.json"

_HELP = {
    "host": "address to listen on",
    "port": "port to listen on",
    "dns_suffix": "pods are the A records of <role service>.<namespace>.<suffix>",
    "dns_refresh_s": "seconds between DNS refreshes of each role's headless Service",
    "health_interval_s": "seconds between health checks (GET /health) of every pod",
    "health_timeout_s": "timeout of one health check",
    "connect_timeout_s": "timeout to open a connection to an engine",
    "encoder_timeout_s": "timeout of one encoder call",
    "prefill_timeout_s": "timeout of one prefill call (E/P/D)",
    "request_timeout_s": "timeout of a non-streaming final call (PD or decode)",
    "stream_idle_timeout_s": "longest silence within a streamed answer",
    "retries": "retries per request across all hops, each on another pod where possible",
    "max_body_bytes": "largest request body accepted; larger ones get HTTP 413",
    "affinity_load_factor": "an encoder keeps its content affinity while its load stays under "
    "this factor x the mean encoder load",
    "pool_size": "most open connections to engines in total (keep-alive pool)",
    "pool_per_host": "most open connections per engine pod (0: no per-pod limit)",
    "unhealthy_threshold": "timed-out health checks in a row before a pod leaves rotation (a "
    "refused connection or a non-200 answer takes it out at once)",
    "eject_after_failures": "failed requests in a row (5xx, timeout, broken connection) that "
    "eject a pod (passive outlier detection)",
    "base_ejection_s": "an ejected pod is out for this x the number of its ejections",
    "max_ejection_s": "longest ejection",
    "max_ejection_percent": "most pods of a role ejected at once, in percent (one always may be)",
    "panic_threshold_percent": "below this share of a role's pods in rotation, route to every "
    "pod that still accepts connections",
    "max_inflight_per_pod": "requests one pod takes at once before new ones queue (0: no limit)",
    "queue_size": "most requests waiting for a pod, over all roles; more get HTTP 503",
    "queue_timeout_s": "longest wait for a pod before HTTP 503 naming the stage",
    "encoder_routing": "how an item picks its encoder: 'affinity' (rendezvous hash of its "
    "content, under a load bound: repeats reach the encoder that cached them) or 'round-robin'",
    "routing_file": "routing table JSON listing the live wiring revisions (the operator's "
    "<cluster>-routing ConfigMap); re-read on change; a request is served by pods of one "
    "revision only. Empty: the launch config's role Services, one revision",
    "workers": "router processes sharing the port (SO_REUSEPORT), for many-core pods",
    "consumer_media": "how media reach the EC consumer after encoding: 'reference' (a "
    "metadata-only embeds item with the encoder's uuid: the consumer never preprocesses the "
    "pixels) or 'raw' (the original item; the consumer preprocesses it again)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="epd-router",
        description="OpenAI-compatible router for an EPD cluster (vLLM 0.33 encoder / prefill / "
        "decode). Roles, ports and parallelism come from the launch config; pods from each "
        "role's headless Service (DNS) or --static-pods. Serves /v1/chat/completions, "
        "/v1/completions, /v1/models, /health and /metrics.",
    )
    p.add_argument(
        "--launch-config",
        default=os.environ.get("EPD_LAUNCH_CONFIG", DEFAULT_LAUNCH_CONFIG),
        help="launch config JSON rendered by the operator (env EPD_LAUNCH_CONFIG; "
        "default %(default)s)",
    )
    p.add_argument(
        "--static-pods",
        action="append",
        default=[],
        metavar="ROLE=HOST[:PORT],...",
        help="fixed pod list for a role instead of DNS (repeatable; port defaults to the "
        "role's port in the launch config), e.g. --static-pods decode=10.0.0.5,10.0.0.6",
    )
    add_dataclass_flags(p, RouterOptions, _HELP, skip={"static_pods"})
    p.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load(args.launch_config)
    except LaunchConfigError as exc:
        parser.error(str(exc))
    static: dict[str, list[tuple[str, int]]] = {}
    for spec in args.static_pods:
        role, sep, pods = spec.partition("=")
        if not sep or role not in ROLE_NAMES:
            parser.error(
                f"--static-pods {spec!r}: expected ROLE=HOST[:PORT],... with ROLE one of "
                f"{', '.join(ROLE_NAMES)}"
            )
        if role not in config.present_roles():
            parser.error(f"--static-pods {spec!r}: the launch config has no {role} role")
        try:
            static[role] = parse_static(pods, config.role(role).port)
        except ValueError as exc:
            parser.error(f"--static-pods {spec!r}: {exc}")
    values = dataclass_values(args, RouterOptions, skip={"static_pods"})
    opts = RouterOptions(static_pods=static, **values)
    try:
        Router(config, opts)  # validates the options before any process starts
    except ValueError as exc:
        parser.error(str(exc))
    logging.getLogger(__name__).info(
        "epd-router (%s) on %s:%d, %d worker(s)",
        config.topology,
        opts.host,
        opts.port,
        opts.workers,
    )
    if opts.workers == 1:
        _serve(config, opts)
        return 0
    return _serve_workers(config, opts)


def _serve(config: LaunchConfig, opts: RouterOptions) -> None:
    """One router process: its own pools, health checks and metrics, on uvloop."""
    web.run_app(
        Router(config, opts).app(),
        host=opts.host,
        port=opts.port,
        print=None,
        access_log=None,
        handler_cancellation=True,
        backlog=1024,
        reuse_port=opts.workers > 1,
        loop=uvloop.new_event_loop(),
    )


def _serve_workers(config: LaunchConfig, opts: RouterOptions) -> int:
    """`workers` processes bound to one port with SO_REUSEPORT (the kernel spreads connections);
    the parent forwards SIGTERM/SIGINT and exits when they have. Each worker checks health and
    counts metrics on its own, so a scrape of /metrics sees one worker's share."""
    children: list[int] = []
    for _ in range(opts.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit is observed by the tests
            die_with_parent()
            try:
                _serve(config, opts)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        worst = max(worst, os.waitstatus_to_exitcode(status))
    return worst


if __name__ == "__main__":
    sys.exit(main())
