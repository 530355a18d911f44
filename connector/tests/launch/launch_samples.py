"""The table of valid launch configs the launcher tests and the vLLM contract tests share.

One entry per wiring the launcher must get right: E/PD, E/P/D with Mooncake or NIXL KV, TCP,
ECExampleConnector, an `ec_both` encoder, TP/DP consumers, IPv6 pod IPs, the highest legal EC
port block, and every optional knob set at once. Imported as
`connector.tests.launch.launch_samples` (the repository root is on pytest's pythonpath).
"""

from __future__ import annotations

import copy
from typing import Any

from epd_connector.launch.config import LaunchConfig, RoleName
from epd_connector.launch.pod import PodContext

POD_IP = "10.244.1.7"
POD = PodContext.create(POD_IP, 3, name="demo-decode-3", namespace="llm")


def raw(topology: str = "E/PD", **overrides: Any) -> dict[str, Any]:
    """A launch-config dict; `overrides` replace top-level keys, `roles` entries merge."""
    roles: dict[str, Any] = {
        "encoder": {"service": "demo-encoder"},
        "decode": {"service": "demo-decode"},
    }
    if topology == "E/P/D":
        roles["prefill"] = {"service": "demo-prefill"}
    data: dict[str, Any] = {
        "cluster": "demo",
        "namespace": "llm",
        "model": {"name": "Qwen/Qwen3-VL-8B-Instruct"},
        "roles": roles,
    }
    for key, value in overrides.items():
        if key == "roles":
            for role, fields in value.items():
                data["roles"].setdefault(role, {}).update(copy.deepcopy(fields))
        else:
            data[key] = copy.deepcopy(value)
    return data


def config(topology: str = "E/PD", **overrides: Any) -> LaunchConfig:
    return LaunchConfig.model_validate(raw(topology, **overrides))


TP2_DP2 = {"parallelism": {"tensor": 2, "data": 2}}
STORE = {
    "master_address": "demo-store.llm.svc:50051",
    "global_segment_size": 4 << 30,
    "local_buffer_size": 1 << 30,
}

VALID: dict[str, LaunchConfig] = {
    "epd-minimal": config(),
    "epd-everything": config(
        model={
            "name": "Qwen/Qwen3-VL-8B-Instruct",
            "path": "/models/qwen3-vl-8b",
            "revision": "0f3c2e1",
            "served_model_name": "qwen3-vl",
            "tokenizer": "/models/qwen3-vl-8b/tokenizer",
        },
        ec={
            "buffer_size": 2_000_000_000,
            "port": 15000,
            "control_timeout_s": 12.5,
            "push_wait_timeout_s": 90,
            "extra_config": {"store_max_pending_items": 8},
        },
        encoder_cache={
            "max_num_batched_tokens": 16384,
            "mm_processor_cache_gb": 8,
            "limit_mm_per_prompt": {"image": 4, "video": 1},
            "mm_encoder_tp_mode": "data",
        },
        media_io_kwargs={"video": {"num_frames": 16}},
        mm_processor_kwargs={"max_pixels": 1003520},
        roles={
            "encoder": {"port": 8100, "gpu_memory_utilization": 0.5},
            "decode": {
                "port": 8200,
                "max_model_len": 32768,
                "gpu_memory_utilization": 0.9,
                "extra_args": ["--max-num-seqs", "64", "--enable-chunked-prefill"],
            },
        },
    ),
    "epd-tp2-dp2-consumer": config(roles={"decode": TP2_DP2}),
    "epd-ec-both": config(ec={"encoder_role": "ec_both"}),
    "epd-ec-example": config(
        ec={"connector": "ECExampleConnector", "shared_storage_path": "/shared/ec-cache"}
    ),
    "epd-ipv6": config(),  # paired with an IPv6 pod in the case list
    "epd-highest-ec-ports": config(ec={"port": 65532}, roles={"decode": TP2_DP2}),
    "epd-shared-store": config(ec={"protocol": "tcp", "store": STORE}),
    "e-p-d-shared-store": config(
        "E/P/D", ec={"store": STORE}, encoder_cache={"mm_processor_cache_gb": 2}
    ),
    "e-p-d-mooncake": config("E/P/D", kv={"connector": "MooncakeConnector"}),
    "e-p-d-default-kv": config("E/P/D"),
    "e-p-d-nixl": config(
        "E/P/D",
        kv={
            "connector": "NixlConnector",
            "side_channel_port": 5700,
            "extra_config": {"backends": ["UCX"], "num_threads": 8},
        },
        roles={"prefill": TP2_DP2, "decode": {"parallelism": {"tensor": 2}}},
    ),
    "e-p-d-tcp": config(
        "E/P/D",
        ec={"protocol": "tcp"},
        kv={"connector": "MooncakeConnector", "protocol": "tcp", "bootstrap_port": 9100},
        roles={"prefill": TP2_DP2, "decode": TP2_DP2},
    ),
}

IPV6_POD = PodContext.create("fd00:10:244::7", 0, name="demo-decode-0", namespace="llm")


def pod_for(name: str) -> PodContext:
    return IPV6_POD if name == "epd-ipv6" else POD


def valid_cases() -> list[tuple[str, LaunchConfig, RoleName, PodContext]]:
    """(id, config, role, pod) for every role of every valid config."""
    return [
        (f"{name}/{role}", cfg, role, pod_for(name))
        for name, cfg in VALID.items()
        for role in cfg.present_roles()
    ]
