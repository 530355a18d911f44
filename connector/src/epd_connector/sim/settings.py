"""Simulator settings: the pod identity (from the pod env, as `epd-engine` sees it) and the knobs.

The pod env contract (common to the real engine and the simulator): EPD_LAUNCH_CONFIG,
EPD_ROLE, POD_IP, POD_NAME, POD_NAMESPACE, parsed by `epd_connector.launch.pod` like the
launcher does. The knobs only shape timing and sizes; the protocol
the simulator speaks does not depend on them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from epd_connector.launch.pod import PodContext, launch_config_path


def pod_env(env: Mapping[str, str] | None = None) -> tuple[str, PodContext]:
    """The launch-config path and the pod, read by the launcher's own parser (the same
    `PodContext` epd-engine builds; errors name the variable)."""
    e = os.environ if env is None else env
    return launch_config_path(e), PodContext.from_env(e)


@dataclass(frozen=True)
class SimSettings:
    """Timing and size knobs (seconds, tokens, bytes)."""

    host: str = "0.0.0.0"
    encode_delay_s: float = 0.0
    prefill_delay_s: float = 0.0
    decode_delay_per_token_s: float = 0.0
    tokens_per_image: int = 256
    hidden_size: int = 2048
    default_max_tokens: int = 16
    push_wait_timeout_s: float = 60.0
    fetch_timeout_s: float = 10.0
    kv_bytes_per_token: int = 4096
    ec_slab_bytes: int = 256 << 20
    kv_slab_bytes: int = 64 << 20
    drain_timeout_s: float = 20.0
    drop_push_percent: int = 0
    preprocess_cpu_s: float = 0.0
    encode_cpu_s: float = 0.0
    encoder_cache_items: int = 0
    health_delay_s: float = 0.0
    error_percent: int = 0

    @property
    def bytes_per_image(self) -> int:
        # bf16 encoder output: tokens x hidden x 2 bytes, like the real tensor.
        return self.tokens_per_image * self.hidden_size * 2
