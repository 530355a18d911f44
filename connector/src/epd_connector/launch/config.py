"""The launch config: the versioned contract between the operator and every EPD pod.

The operator renders one `LaunchConfig` per EPDCluster as JSON into a ConfigMap (key
`launch.json`). Every engine pod runs `epd-engine`, which reads it together with the pod's own
environment (POD_IP, POD_NAME, POD_NAMESPACE) and builds the exact `vllm serve` argv for its
role; the router and the simulator read the same file. This module holds the types only (pure,
pydantic, no I/O besides `load`), so `epd_operator` can import it: one definition.

Field names are the JSON keys (snake_case, like vLLM's own config keys). Derived wiring (which
`ec_role` / `kv_role` a role gets) is not stored: `roles.py` computes it from the topology, so
the file cannot contradict itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .rules import (
    DEFAULT_EC_PORT,
    DEFAULT_KV_BOOTSTRAP_PORT,
    DEFAULT_NIXL_SIDE_CHANNEL_PORT,
    ENGINE_HTTP_PORT,
)
from .rules import RoleName as RoleName  # one definition, with the rules

_M = TypeVar("_M", bound=BaseModel)

SCHEMA_VERSION: Final = "epd.launch/v1"
CONFIGMAP_KEY = "launch.json"

ROLE_NAMES: tuple[RoleName, ...] = ("encoder", "prefill", "decode")
Topology = Literal["E/PD", "E/P/D"]
ECConnectorName = Literal["ECMooncakeConnector", "ECExampleConnector"]
KVConnectorName = Literal["MooncakeConnector", "NixlConnector"]
Protocol = Literal["rdma", "tcp"]
EncoderECRole = Literal["ec_producer", "ec_both"]
# Where engines compute. `cpu` is vLLM's CPU backend (a CPU build of vLLM): no GPU, and the EC /
# KV transfer buffers must then live in host memory (`ec_buffer_device` / `kv_buffer_device`).
Device = Literal["cuda", "cpu"]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in the ConfigMap must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelLaunch(_Strict):
    name: str = Field(
        min_length=1, description="Hub id or path; the positional model of `vllm serve`."
    )
    path: str | None = Field(
        default=None,
        description="Local directory holding the weights (mounted PVC/hostPath or baked in); "
        "when set, vLLM loads from here instead of `name`.",
    )
    revision: str | None = None
    served_model_name: str | None = None
    tokenizer: str | None = None


class Parallelism(_Strict):
    tensor: int = Field(default=1, ge=1)
    pipeline: int = Field(default=1, ge=1)
    data: int = Field(default=1, ge=1)

    @property
    def gpus(self) -> int:
        """GPUs one pod needs: every DP rank of a pod runs TP x PP workers."""
        return self.tensor * self.pipeline * self.data


class StoreLaunch(_Strict):
    """The shared encoder cache (a Mooncake Store behind one `mooncake_master`), encoders only.

    The launcher turns it into the JSON file vLLM 0.33 reads through MOONCAKE_CONFIG_PATH
    (`distributed/mooncake_store.py`) and sets `cross_encoder_cache` on the encoder; embedded
    mode: every encoder contributes `global_segment_size` bytes of host memory to the pool.
    """

    master_address: str = Field(
        min_length=3, description="host:port of the mooncake_master RPC service."
    )
    global_segment_size: int = Field(
        gt=0, description="Bytes each encoder contributes to the store (embedded mode)."
    )
    local_buffer_size: int = Field(gt=0, description="Per-encoder staging buffer, bytes.")


class ECTransferLaunch(_Strict):
    connector: ECConnectorName = "ECMooncakeConnector"
    protocol: Protocol = "rdma"
    buffer_size: int = Field(default=1_000_000_000, gt=0, description="ec_buffer_size in bytes.")
    port: int = Field(
        default=DEFAULT_EC_PORT, ge=1, le=65535, description="ec_port: base control port."
    )
    encoder_role: EncoderECRole = "ec_producer"
    control_timeout_s: float | None = Field(default=None, gt=0)
    push_wait_timeout_s: float | None = Field(default=None, gt=0)
    shared_storage_path: str | None = Field(
        default=None, description="ECExampleConnector only: the shared ReadWriteMany mount."
    )
    extra_config: dict[str, Any] = Field(
        default_factory=dict, description="Passed through into ec_connector_extra_config."
    )
    store: StoreLaunch | None = Field(
        default=None,
        description="ECMooncakeConnector with an ec_producer encoder only: the shared "
        "encoder cache (cross_encoder_cache).",
    )


class KVTransferLaunch(_Strict):
    connector: KVConnectorName = "MooncakeConnector"
    protocol: Protocol = "rdma"
    bootstrap_port: int = Field(
        default=DEFAULT_KV_BOOTSTRAP_PORT,
        ge=1,
        le=65535,
        description="MooncakeConnector: VLLM_MOONCAKE_BOOTSTRAP_PORT.",
    )
    side_channel_port: int = Field(
        default=DEFAULT_NIXL_SIDE_CHANNEL_PORT,
        ge=1,
        le=65535,
        description="NixlConnector: VLLM_NIXL_SIDE_CHANNEL_PORT.",
    )
    extra_config: dict[str, Any] = Field(default_factory=dict)


class EncoderCacheLaunch(_Strict):
    """Encoder compute/cache budget knobs vLLM 0.33 exposes as CLI flags."""

    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    mm_processor_cache_gb: float | None = Field(default=None, ge=0)
    limit_mm_per_prompt: dict[str, int] | None = None
    mm_encoder_tp_mode: Literal["weights", "data"] | None = None


class RoleLaunch(_Strict):
    replicas: int = Field(default=1, ge=0)
    parallelism: Parallelism = Field(default_factory=Parallelism)
    port: int = Field(
        default=ENGINE_HTTP_PORT, ge=1, le=65535, description="vLLM's HTTP port in the pod."
    )
    service: str = Field(min_length=1, description="Headless Service name of this role.")
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    extra_args: list[str] = Field(default_factory=list, description="Appended to `vllm serve`.")


class Roles(_Strict):
    encoder: RoleLaunch
    prefill: RoleLaunch | None = None
    decode: RoleLaunch


class LaunchConfig(_Strict):
    schema_version: Literal["epd.launch/v1"] = SCHEMA_VERSION
    cluster: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    model: ModelLaunch
    # None means cuda. Absent rather than "cuda" so that launch configs rendered before this key
    # existed keep their bytes, and their checksums: an operator upgrade restarts no engine.
    device: Device | None = None
    cpu_kv_cache_space_gib: int | None = Field(
        default=None, ge=1, description="device cpu: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)."
    )
    ec: ECTransferLaunch = Field(default_factory=ECTransferLaunch)
    kv: KVTransferLaunch | None = None
    encoder_cache: EncoderCacheLaunch = Field(default_factory=EncoderCacheLaunch)
    # Same on E and PD: both compute the multimodal identifiers (mm hashes) the transfer is
    # matched by, from the processed item (see sim/server.py's docstring).
    media_io_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    roles: Roles

    @property
    def topology(self) -> Topology:
        return "E/P/D" if self.roles.prefill is not None else "E/PD"

    def role(self, name: RoleName) -> RoleLaunch:
        launch: RoleLaunch | None = getattr(self.roles, name)
        if launch is None:
            raise LaunchConfigError(f"roles.{name}: this cluster has no {name} role")
        return launch

    def present_roles(self) -> list[RoleName]:
        return [r for r in ROLE_NAMES if getattr(self.roles, r) is not None]

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) so the ConfigMap, and its hash, are deterministic."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, indent=2)


class LaunchConfigError(ValueError):
    """A launch config that cannot be used; the message names the key."""


def parse_json(model: type[_M], text: str, source: str) -> _M:
    """Parse `text` as JSON into `model`; errors name `source` and the offending key path."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LaunchConfigError(f"{source}: not valid JSON: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise LaunchConfigError(f"{source}: {loc}: {first['msg']}") from exc


def read_text(path: str | Path, what: str) -> str:
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise LaunchConfigError(f"cannot read {what} {p}: {exc.strerror}") from exc


def parse(text: str, source: str = "launch config") -> LaunchConfig:
    """Parse launch-config JSON; errors name the offending key path."""
    return parse_json(LaunchConfig, text, source)


def load(path: str | Path) -> LaunchConfig:
    return parse(read_text(path, "launch config"), source=str(path))
