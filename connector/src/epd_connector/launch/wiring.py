"""Role wiring derived from a LaunchConfig: which EC/KV role each EPD role plays, and its ports.

Pure functions shared by the launcher (argv), the router (where to send what) and the
simulator, so all three agree by construction. Facts from vLLM 0.33.0 (checked against the real
parser and connectors by connector/tests/vllm_contract):
- encoder: `ec_producer` (or `ec_both`), which switches vLLM into encoder-only mode;
- E/PD: decode is the combined prefill-decode instance and the EC consumer;
- E/P/D: prefill is EC consumer + KV producer, decode is KV consumer (no EC config);
- consumer control port of DP rank d = ec_port + d * tensor_parallel_size (TP rank r adds r).
"""

from __future__ import annotations

from typing import Literal

from .config import LaunchConfig, LaunchConfigError, RoleName
from .rules import ec_consumer_of

ECRole = Literal["ec_producer", "ec_consumer", "ec_both"]
KVRole = Literal["kv_producer", "kv_consumer"]


def ec_role(config: LaunchConfig, role: RoleName) -> ECRole | None:
    """The `ec_role` of `role`, or None where the role needs no EC transfer config."""
    if role == "encoder":
        return config.ec.encoder_role
    if role == ec_consumer_role(config):
        return "ec_consumer"
    return None


def ec_consumer_role(config: LaunchConfig) -> RoleName:
    """The role whose pods receive encoder outputs: prefill in E/P/D, decode in E/PD."""
    return ec_consumer_of(config.roles.prefill is not None)


def kv_role(config: LaunchConfig, role: RoleName) -> KVRole | None:
    """The `kv_role` of `role`; only E/P/D moves KV (prefill produces, decode consumes)."""
    if config.topology != "E/P/D":
        return None
    if role == "prefill":
        return "kv_producer"
    if role == "decode":
        return "kv_consumer"
    return None


def consumer_control_port(config: LaunchConfig, dp_rank: int) -> int:
    """EC control port (TP rank 0) of DP rank `dp_rank` of an EC consumer pod."""
    consumer = config.role(ec_consumer_role(config))
    par = consumer.parallelism
    if not 0 <= dp_rank < par.data:
        raise LaunchConfigError(
            f"roles.{ec_consumer_role(config)}.parallelism.data: DP rank {dp_rank} out of range "
            f"0..{par.data - 1}"
        )
    return config.ec.port + dp_rank * par.tensor


def consumer_zmq(config: LaunchConfig, pod_ip: str, dp_rank: int) -> str:
    """The `consumer_zmq` address a producer must dial for this consumer pod and DP rank."""
    port = consumer_control_port(config, dp_rank)
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"tcp://{host}:{port}"
