"""`python -m epd_connector.sim`: one simulated engine pod (`epd-engine` with EPD_ENGINE=sim).

Reads the launch config and pod env exactly like the real launcher. Every knob has a flag and an
`EPD_SIM_*` environment variable (flags win), so a pod spec can tune the simulator without
changing its command. SIGTERM drains: /health turns 503, running requests finish, then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from aiohttp import web

from epd_connector.cliutil import add_dataclass_flags, dataclass_values
from epd_connector.launch.config import LaunchConfigError, load

from .server import SimEngine
from .settings import SimSettings, pod_env

log = logging.getLogger("epd_connector.sim")

_HELP = {
    "host": "address the HTTP, EC control and KV side servers bind",
    "encode_delay_s": "seconds an encoder spends per request",
    "prefill_delay_s": "seconds to the first token (prefill)",
    "decode_delay_per_token_s": "seconds between output tokens",
    "tokens_per_image": "encoder output tokens per image",
    "hidden_size": "encoder output hidden size (bytes per image = tokens x hidden x 2)",
    "default_max_tokens": "output tokens when the request sets no max_tokens",
    "push_wait_timeout_s": "EC consumer wait for a push when the launch config sets none",
    "fetch_timeout_s": "timeout fetching an http(s) media URL",
    "kv_bytes_per_token": "synthetic KV bytes per prompt token (E/P/D)",
    "ec_slab_bytes": "EC receive slab per DP rank (bytes)",
    "kv_slab_bytes": "KV staging slab on prefill pods (bytes)",
    "drain_timeout_s": "longest wait for running requests after SIGTERM",
    "drop_push_percent": "fault injection: share of encoder pushes silently skipped (0-100)",
    "preprocess_cpu_s": "CPU seconds burnt per raw media item the engine loads (vLLM's "
    "multimodal preprocessing runs on the API server's CPU)",
    "encode_cpu_s": "CPU seconds burnt per item the encoder encodes (cache misses only)",
    "encoder_cache_items": "items whose output the encoder keeps (LRU, by mm_hash); a repeat of "
    "one is neither preprocessed nor encoded again, like vLLM's processor and encoder caches "
    "(0: no cache)",
    "error_percent": "fault injection: share of chat/completion requests answered HTTP 500 "
    "(0-100), while /health stays 200",
    "health_delay_s": "fault injection: seconds /health takes to answer (a slow but alive engine)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m epd_connector.sim",
        description="EPD engine simulator: vLLM's OpenAI surface and EC/KV transfer behaviour per "
        "role, moving real bytes over the Mooncake transfer engine. Role and topology come from "
        "$EPD_LAUNCH_CONFIG and $EPD_ROLE; the advertised address from $POD_IP.",
    )
    add_dataclass_flags(p, SimSettings, _HELP, env_prefix="EPD_SIM_")
    p.add_argument("--log-level", default=os.environ.get("EPD_SIM_LOG_LEVEL", "INFO"))
    return p


async def _run(args: argparse.Namespace) -> int:
    settings = SimSettings(**dataclass_values(args, SimSettings))
    launch_config, pod = pod_env()
    config = load(launch_config)
    sim = SimEngine(config, pod, settings)
    await sim.start()
    runner = web.AppRunner(sim.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, settings.host, sim.launch.port).start()
    log.info(
        "sim %s (%s, %s) serving on %s:%d",
        pod.name,
        pod.role,
        config.topology,
        settings.host,
        sim.launch.port,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sim.draining = True
    deadline = loop.time() + settings.drain_timeout_s
    while sim.inflight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(Exception):
        await runner.cleanup()
    await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_run(args))
    except LaunchConfigError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
