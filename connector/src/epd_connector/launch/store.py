"""The shared encoder cache on the engine side (pure): the Mooncake Store config file.

vLLM 0.33 finds the Store only through MOONCAKE_CONFIG_PATH, a JSON file
(`distributed/mooncake_store.py::MooncakeStoreConfig.from_file`), and only encode-only
producers open it (`ECMooncakeWorker.start_services`). The operator puts the Store settings in
the launch config (`ec.store`); `epd-engine` writes this file into the pod before exec and
points MOONCAKE_CONFIG_PATH at it. The file holds nothing pod-specific (the Store client
registers under VLLM_HOST_IP, the pod IP), yet it is written per pod so one host can run
several simulated pods. The simulator reads the same file to reach the same master.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Final

from .config import LaunchConfig, RoleName
from .pod import PodContext

ENV_STORE_CONFIG: Final = "MOONCAKE_CONFIG_PATH"
ENV_RUN_DIR: Final = "EPD_RUN_DIR"
DEFAULT_RUN_DIR: Final = "/tmp"
# P2PHANDSHAKE: no metadata server (etcd/HTTP); peers exchange segment metadata directly.
STORE_METADATA_SERVER: Final = "P2PHANDSHAKE"
STORE_MODE: Final = "embedded"


def uses_store(config: LaunchConfig, role: RoleName) -> bool:
    """Only the encoder opens the Store; consumers still receive outputs by P2P push."""
    return role == "encoder" and config.ec.store is not None


def store_config(config: LaunchConfig) -> dict[str, Any]:
    """The MOONCAKE_CONFIG_PATH file's content: every key vLLM 0.33 reads, spelled out."""
    store = config.ec.store
    if store is None:
        raise ValueError("ec.store: this cluster has no shared encoder cache")
    return {
        "metadata_server": STORE_METADATA_SERVER,
        "master_server_address": store.master_address,
        "protocol": config.ec.protocol,
        "device_name": "",
        "mode": STORE_MODE,
        "global_segment_size": store.global_segment_size,
        "local_buffer_size": store.local_buffer_size,
        # cross_encoder_cache refuses a store that offloads to SSD.
        "enable_offload": False,
    }


def store_config_path(
    config: LaunchConfig, role: RoleName, pod: PodContext, run_dir: str = DEFAULT_RUN_DIR
) -> str:
    return str(PurePosixPath(run_dir) / f"epd-{config.cluster}-{role}-{pod.ordinal}-store.json")


def store_files(
    config: LaunchConfig, role: RoleName, pod: PodContext, run_dir: str = DEFAULT_RUN_DIR
) -> dict[str, str]:
    """Files `epd-engine` writes before exec: {path: text}; empty unless the pod uses a store."""
    if not uses_store(config, role):
        return {}
    text = json.dumps(store_config(config), sort_keys=True, indent=2) + "\n"
    return {store_config_path(config, role, pod, run_dir): text}
