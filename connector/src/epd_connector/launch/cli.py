"""`epd-engine`: the entry point of every engine pod (the engine image and the simulator image).

Reads the launch config (EPD_LAUNCH_CONFIG, default /etc/epd/launch.json) and the pod's own
environment (EPD_ROLE, POD_IP, POD_NAME, POD_NAMESPACE), builds the exact `vllm serve` argv
and environment for this pod (`argv.py`), logs them and replaces itself with vLLM, so vLLM is
the container's main process and receives its signals directly. With EPD_ENGINE=sim it execs
the engine simulator instead (same environment, same launch config; the simulator reads both).

Exit codes: 2 for a missing or malformed config or environment (the message names the key),
127 when the engine executable cannot be started. `--dry-run` prints what would be executed,
as JSON, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import drain as drain_hook
from .argv import build_argv, build_env
from .config import LaunchConfigError, load
from .pod import PodContext, engine_from_env, launch_config_path, role_from_env
from .preflight import asked, decide, observe, output_path, report_text
from .store import DEFAULT_RUN_DIR, ENV_RUN_DIR, store_files

log = logging.getLogger("epd_connector.launch")

EXIT_CONFIG = 2
EXIT_EXEC = 127
SIM_ARGV: tuple[str, ...] = ("-m", "epd_connector.sim")


def plan(env: Mapping[str, str], config_path: str | None = None) -> dict[str, Any]:
    """What this pod executes: {"engine", "config", "argv", "env", "files"} (env: the added
    variables; files: {path: text} written before exec, e.g. the Mooncake Store config).

    The vLLM argv is built in sim mode too, so a config the real engine would refuse fails
    the same way under the simulator.
    """
    path = config_path or launch_config_path(env)
    config = load(path)
    pod = PodContext.from_env(env)
    assert pod.role is not None  # from_env always reads EPD_ROLE
    engine = engine_from_env(env)
    run_dir = env.get(ENV_RUN_DIR, "").strip() or DEFAULT_RUN_DIR
    argv = build_argv(config, pod.role, pod)
    added = build_env(config, pod.role, pod, run_dir)
    files = store_files(config, pod.role, pod, run_dir)
    if engine == "sim":
        argv = [sys.executable, *SIM_ARGV]
    return {"engine": engine, "config": path, "argv": argv, "env": added, "files": files}


def drain(env: Mapping[str, str], config_path: str | None = None) -> int:
    """`--drain` (the preStop hook): wait until this pod's engine holds no request, bounded
    by EPD_DRAIN_SECONDS; always exit 0 (the kubelet sends SIGTERM next either way)."""
    raw = env.get(drain_hook.ENV_DRAIN_SECONDS, "").strip()
    try:
        budget = float(raw) if raw else float(drain_hook.DEFAULT_DRAIN_SECONDS)
        config = load(config_path or launch_config_path(env))
        port = config.role(role_from_env(env)).port
        pod = PodContext.from_env(env)
    except (ValueError, LaunchConfigError) as exc:
        print(f"epd-engine --drain: {exc}; not waiting", file=sys.stderr)
        return 0
    out = drain_hook.drain(drain_hook.http_fetch(pod.ip, port), budget)
    log.info(
        "drain: %s after %.1fs (requests left: %s)",
        "done" if out.drained else "budget spent",
        out.waited_s,
        "unknown" if out.last_busy is None else f"{out.last_busy:g}",
    )
    return 0


def preflight(env: Mapping[str, str], config_path: str | None = None) -> int:
    """`--preflight`: observe, decide, report (never fails the pod: it reports)."""
    try:
        config = load(config_path or launch_config_path(env))
        role = role_from_env(env)
    except LaunchConfigError as exc:
        print(f"epd-engine: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    text = report_text(decide(asked(config, role), observe()))
    print(text, flush=True)
    out = output_path(env)
    if out is not None:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"epd-engine: cannot write the report to {out}: {exc.strerror}", file=sys.stderr)
    return 0


def write_files(files: Mapping[str, str]) -> None:
    """Write the files of `plan` (atomically: a reader never sees half a config)."""
    for name, text in files.items():
        target = Path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)


def exec_env(env: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    """The full environment handed to the engine."""
    out = dict(env)
    # Kubernetes injects <SERVICE>_PORT=tcp://... for every Service in the namespace; one named
    # `vllm` yields VLLM_PORT, which vLLM reads as its own port setting and refuses to start.
    if out.get("VLLM_PORT", "").startswith("tcp://"):
        log.warning(
            "ignoring VLLM_PORT=%s (a Kubernetes service link, not a port)", out["VLLM_PORT"]
        )
        del out["VLLM_PORT"]
    out.update(added)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="epd-engine",
        description="Start this pod's EPD engine (vLLM, or the simulator with EPD_ENGINE=sim) "
        "from the launch config and the pod environment.",
    )
    p.add_argument(
        "--config",
        help="launch config path (default: $EPD_LAUNCH_CONFIG or /etc/epd/launch.json)",
    )
    p.add_argument(
        "--preflight",
        action="store_true",
        help="report which transport this pod's transfers will use (RDMA or a TCP fallback) "
        "as one JSON line on stdout and in $EPD_PREFLIGHT_OUT or the termination log; exit 0",
    )
    p.add_argument(
        "--drain",
        action="store_true",
        help="the pod's preStop hook: wait until the engine holds no request (its "
        "vllm:num_requests_running/waiting gauges), at most $EPD_DRAIN_SECONDS; exit 0",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help='print {"engine", "config", "argv", "env", "files"} as JSON and exit instead of '
        "exec (writes nothing)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.preflight:
        return preflight(os.environ, args.config)
    if args.drain:
        return drain(os.environ, args.config)
    try:
        what = plan(os.environ, args.config)
    except LaunchConfigError as exc:
        print(f"epd-engine: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.dry_run:
        print(json.dumps(what, indent=2))
        return 0
    try:
        write_files(what["files"])
    except OSError as exc:
        print(f"epd-engine: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    command: list[str] = what["argv"]
    log.info(
        "role %s, engine %s: exec %s",
        os.environ.get("EPD_ROLE"),
        what["engine"],
        shlex.join(command),
    )
    log.info("environment added: %s", json.dumps(what["env"], sort_keys=True))
    env = exec_env(os.environ, what["env"])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"epd-engine: cannot exec {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return EXIT_EXEC
    return EXIT_EXEC  # not reached: exec replaced the process


if __name__ == "__main__":
    sys.exit(main())
