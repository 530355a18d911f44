"""Cross-field rules of the EPDCluster spec: each a `CelRule` (the CEL the apiserver runs and
the same check in Python), built from the launch contract's own fragments
(epd_connector.launch.rules) so the two sides cannot drift. The spec classes attach them
(`__cel__`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from epd_connector.launch.rules import (
    ec_consumer_cel,
    ec_consumer_field_cel,
    ec_consumer_of,
    ec_port_block,
    ec_port_block_cel,
    nixl_port_block,
    overlaps,
    store_problem,
)

from .cel import CelRule

if TYPE_CHECKING:
    from .spec import EPDClusterSpec, RoleSpec


# --------------------------------------------------------------------------- scaling (issue 17)

ROLE_SCALING_RULES: tuple[CelRule, ...] = (
    CelRule(
        rule="!has(self.minReplicas) || !has(self.maxReplicas) || "
        "self.minReplicas <= self.maxReplicas",
        message="minReplicas must not exceed maxReplicas",
        check=lambda r: (
            r.min_replicas is None or r.max_replicas is None or r.min_replicas <= r.max_replicas
        ),
        field_path=".minReplicas",
    ),
    CelRule(
        rule="self.replicasFrom != 'Spec' || ((!has(self.minReplicas) || "
        "self.replicas >= self.minReplicas) && (!has(self.maxReplicas) || "
        "self.replicas <= self.maxReplicas))",
        message="replicas must lie within minReplicas..maxReplicas when replicasFrom is Spec",
        check=lambda r: (
            r.replicas_from != "Spec"
            or (
                (r.min_replicas is None or r.replicas >= r.min_replicas)
                and (r.max_replicas is None or r.replicas <= r.max_replicas)
            )
        ),
        field_path=".replicas",
    ),
)


# --------------------------------------------------------------------------- spec rules

_EC_LO, _EC_HI = ec_port_block_cel("self.ecTransfer.controlPort", ec_consumer_cel("self"))
_MOONCAKE_EC = "self.ecTransfer.connector == 'ECMooncakeConnector'"
_KV = "has(self.kvTransfer)"
_NIXL_DATA = (
    "(has(self.roles.prefill) && self.roles.prefill.parallelism.data > "
    "self.roles.decode.parallelism.data ? self.roles.prefill.parallelism.data : "
    "self.roles.decode.parallelism.data)"
)
_NIXL_LO = "self.kvTransfer.sideChannelPort"
_NIXL_HI = f"({_NIXL_LO} + {_NIXL_DATA} - 1)"
# HTTP ports of the roles that bind the EC control ports, the KV bootstrap / side channel.
_CONSUMER_PORT = ec_consumer_field_cel("self", "R.port")
_ENCODER_PORT = "self.roles.encoder.port"
_DECODE_PORT = "self.roles.decode.port"


def _consumer(spec: EPDClusterSpec) -> RoleSpec:
    role: RoleSpec = getattr(spec.roles, ec_consumer_of(spec.roles.prefill is not None))
    return role


def ec_port_range(spec: EPDClusterSpec) -> tuple[int, int]:
    """Ports the EC consumer pod binds: one per (DP rank, TP rank)."""
    par = _consumer(spec).parallelism
    return ec_port_block(spec.ec_transfer.control_port, par.data, par.tensor)


def nixl_port_range(spec: EPDClusterSpec) -> tuple[int, int]:
    """NIXL side-channel ports: one per DP rank of the prefill and decode pods."""
    assert spec.kv_transfer is not None
    data = spec.roles.decode.parallelism.data
    if spec.roles.prefill is not None:
        data = max(data, spec.roles.prefill.parallelism.data)
    return nixl_port_block(spec.kv_transfer.side_channel_port, data)


def ec_http_ports(spec: EPDClusterSpec) -> list[int]:
    """HTTP ports of the pods that bind the EC control ports (ec_both encoders do too)."""
    ports = [_consumer(spec).port]
    if spec.ec_transfer.encoder_role == "ec_both":
        ports.append(spec.roles.encoder.port)
    return ports


def kv_http_ports(spec: EPDClusterSpec) -> list[int]:
    """HTTP ports of the pods that bind KV side channels: prefill and decode."""
    return [_consumer(spec).port, spec.roles.decode.port]


def _mooncake_ec(spec: EPDClusterSpec) -> bool:
    return spec.ec_transfer.connector == "ECMooncakeConnector"


def _kv(spec: EPDClusterSpec, connector: str) -> bool:
    return spec.kv_transfer is not None and spec.kv_transfer.connector == connector


def _in(port: int, rng: tuple[int, int]) -> bool:
    return rng[0] <= port <= rng[1]


_overlap = overlaps


SPEC_RULES: tuple[CelRule, ...] = (
    CelRule(
        rule="!has(self.kvTransfer) || has(self.roles.prefill)",
        message="kvTransfer needs a prefill role (E/P/D); in E/PD no KV cache moves",
        check=lambda s: s.kv_transfer is None or s.roles.prefill is not None,
        field_path=".kvTransfer",
    ),
    CelRule(
        rule=f"!({_MOONCAKE_EC}) || (self.roles.encoder.parallelism.tensor == 1 && "
        "self.roles.encoder.parallelism.pipeline == 1 && "
        "self.roles.encoder.parallelism.data == 1)",
        message="ECMooncakeConnector producers (the encoder role) need tensor = pipeline = "
        "data = 1",
        check=lambda s: not _mooncake_ec(s) or s.roles.encoder.parallelism.gpus == 1,
        field_path=".roles.encoder.parallelism",
    ),
    CelRule(
        rule=f"!({_MOONCAKE_EC}) || {_EC_HI} <= 65535",
        message="ecTransfer.controlPort: the EC consumer binds controlPort .. controlPort + "
        "data*tensor - 1, which must end at or below 65535",
        check=lambda s: not _mooncake_ec(s) or ec_port_range(s)[1] <= 65535,
        field_path=".ecTransfer.controlPort",
    ),
    CelRule(
        rule=f"!({_MOONCAKE_EC}) || (({_EC_LO} > {_CONSUMER_PORT} || {_EC_HI} < "
        f"{_CONSUMER_PORT}) && (self.ecTransfer.encoderRole != 'ec_both' || {_EC_LO} > "
        f"{_ENCODER_PORT} || {_EC_HI} < {_ENCODER_PORT}))",
        message="ecTransfer.controlPort: the EC control port range controlPort .. "
        "controlPort + data*tensor - 1 must not include the HTTP port (roles.<role>.port) of "
        "a role that binds it (the EC consumer; the encoder with ec_both)",
        check=lambda s: (
            not _mooncake_ec(s) or not any(_in(p, ec_port_range(s)) for p in ec_http_ports(s))
        ),
        field_path=".ecTransfer.controlPort",
    ),
    CelRule(
        rule=f"!{_KV} || self.kvTransfer.connector != 'MooncakeConnector' || "
        f"self.kvTransfer.bootstrapPort != {_CONSUMER_PORT}",
        message="kvTransfer.bootstrapPort must differ from the prefill role's HTTP port "
        "(roles.prefill.port)",
        check=lambda s: (
            not _kv(s, "MooncakeConnector") or s.kv_transfer.bootstrap_port != _consumer(s).port
        ),
        field_path=".kvTransfer.bootstrapPort",
    ),
    CelRule(
        rule=f"!{_KV} || self.kvTransfer.connector != 'MooncakeConnector' || "
        f"!({_MOONCAKE_EC}) || self.kvTransfer.bootstrapPort < {_EC_LO} || "
        f"self.kvTransfer.bootstrapPort > {_EC_HI}",
        message="kvTransfer.bootstrapPort must not fall in the EC control port range "
        "controlPort .. controlPort + data*tensor - 1 of the prefill role",
        check=lambda s: (
            not _kv(s, "MooncakeConnector")
            or not _mooncake_ec(s)
            or not _in(s.kv_transfer.bootstrap_port, ec_port_range(s))
        ),
        field_path=".kvTransfer.bootstrapPort",
    ),
    CelRule(
        rule=f"!{_KV} || self.kvTransfer.connector != 'NixlConnector' || {_NIXL_HI} <= 65535",
        message="kvTransfer.sideChannelPort: NIXL binds sideChannelPort + DP rank, which must "
        "stay at or below 65535",
        check=lambda s: not _kv(s, "NixlConnector") or nixl_port_range(s)[1] <= 65535,
        field_path=".kvTransfer.sideChannelPort",
    ),
    CelRule(
        rule=f"!{_KV} || self.kvTransfer.connector != 'NixlConnector' || "
        f"(({_NIXL_LO} > {_CONSUMER_PORT} || {_NIXL_HI} < {_CONSUMER_PORT}) && "
        f"({_NIXL_LO} > {_DECODE_PORT} || {_NIXL_HI} < {_DECODE_PORT}))",
        message="kvTransfer.sideChannelPort: the NIXL side-channel ports sideChannelPort .. "
        "sideChannelPort + data - 1 must not include the HTTP port of the prefill or decode "
        "role (roles.<role>.port)",
        check=lambda s: (
            not _kv(s, "NixlConnector")
            or not any(_in(p, nixl_port_range(s)) for p in kv_http_ports(s))
        ),
        field_path=".kvTransfer.sideChannelPort",
    ),
    CelRule(
        rule="!has(self.cpu) || self.device == 'cpu'",
        message="cpu: CPU engine settings need device: cpu",
        check=lambda s: s.cpu is None or s.device == "cpu",
        field_path=".cpu",
    ),
    CelRule(
        rule=f"self.device != 'cpu' || !has(self.roles.prefill) || ({_KV} && "
        "self.kvTransfer.connector != 'MooncakeConnector')",
        message="kvTransfer.connector: MooncakeConnector (also the default) needs GPU engines "
        "(its vLLM worker initialises a CUDA device); set NixlConnector with device: cpu",
        check=lambda s: (
            s.device != "cpu"
            or s.roles.prefill is None
            or (s.kv_transfer is not None and s.kv_transfer.connector != "MooncakeConnector")
        ),
        field_path=".kvTransfer.connector",
    ),
    CelRule(
        rule="self.device != 'cpu' || ((!has(self.roles.encoder.gpuMemoryUtilization)) && "
        "(!has(self.roles.prefill) || !has(self.roles.prefill.gpuMemoryUtilization)) && "
        "(!has(self.roles.decode.gpuMemoryUtilization)))",
        message="roles.<role>.gpuMemoryUtilization: CPU engines (device: cpu) have no GPU "
        "memory to size; use cpu.kvCacheSpaceGiB",
        check=lambda s: (
            s.device != "cpu"
            or all(
                getattr(s.roles, r) is None or getattr(s.roles, r).gpu_memory_utilization is None
                for r in ("encoder", "prefill", "decode")
            )
        ),
        field_path=".device",
    ),
    CelRule(
        rule=f"!{_KV} || self.kvTransfer.connector != 'NixlConnector' || !({_MOONCAKE_EC}) || "
        f"{_NIXL_LO} > {_EC_HI} || {_NIXL_HI} < {_EC_LO}",
        message="kvTransfer.sideChannelPort: the NIXL side-channel ports overlap the EC "
        "control port range of the prefill role",
        check=lambda s: (
            not _kv(s, "NixlConnector")
            or not _mooncake_ec(s)
            or not _overlap(nixl_port_range(s), ec_port_range(s))
        ),
        field_path=".kvTransfer.sideChannelPort",
    ),
    CelRule(
        rule="!has(self.ecTransfer.protocol) || self.ecTransfer.protocol != 'rdma' || "
        "self.rdma.enabled",
        message="ecTransfer.protocol rdma needs rdma.enabled: true (the pods need the RDMA "
        "device resource); use tcp otherwise",
        check=lambda s: s.ec_transfer.protocol != "rdma" or s.rdma.enabled,
        field_path=".ecTransfer.protocol",
    ),
    CelRule(
        rule=f"!{_KV} || !has(self.kvTransfer.protocol) || "
        "self.kvTransfer.protocol != 'rdma' || self.rdma.enabled",
        message="kvTransfer.protocol rdma needs rdma.enabled: true (the pods need the RDMA "
        "device resource); use tcp otherwise",
        check=lambda s: s.kv_transfer is None or s.kv_transfer.protocol != "rdma" or s.rdma.enabled,
        field_path=".kvTransfer.protocol",
    ),
)


def shared_cache_on(spec: EPDClusterSpec) -> bool:
    return spec.encoder_cache.shared is not None and spec.encoder_cache.shared.enabled


def _store_problem(spec: EPDClusterSpec) -> str | None:
    problem = store_problem(
        spec.ec_transfer.connector,
        spec.ec_transfer.encoder_role,
        spec.encoder_cache.mm_processor_cache_gb,
    )
    return None if problem is None or not shared_cache_on(spec) else problem[0]


_SHARED = "has(self.encoderCache.shared) && self.encoderCache.shared.enabled"
# The shared encoder cache's rules: vLLM 0.33's cross_encoder_cache checks
# (ec_connector/mooncake/config.py), one definition in `store_problem`.
SHARED_CACHE_RULES: tuple[CelRule, ...] = (
    CelRule(
        rule=f"!({_SHARED}) || self.ecTransfer.connector == 'ECMooncakeConnector'",
        message="ecTransfer.connector: encoderCache.shared (vLLM's cross_encoder_cache) needs "
        "ECMooncakeConnector",
        check=lambda s: _store_problem(s) != "connector",
        field_path=".ecTransfer.connector",
    ),
    CelRule(
        rule=f"!({_SHARED}) || self.ecTransfer.encoderRole == 'ec_producer'",
        message="ecTransfer.encoderRole: encoderCache.shared needs an encode-only encoder "
        "(ec_producer); vLLM shares encoder outputs only from encode-only producers",
        check=lambda s: _store_problem(s) != "encoder_role",
        field_path=".ecTransfer.encoderRole",
    ),
    CelRule(
        rule=f"!({_SHARED}) || !has(self.encoderCache.mmProcessorCacheGb) || "
        "self.encoderCache.mmProcessorCacheGb > 0",
        message="encoderCache.mmProcessorCacheGb: encoderCache.shared needs the multimodal "
        "processor cache (> 0, or unset for vLLM's default 4)",
        check=lambda s: _store_problem(s) != "mm_processor_cache_gb",
        field_path=".encoderCache.mmProcessorCacheGb",
    ),
)


SPEC_SCALING_RULES: tuple[CelRule, ...] = (
    CelRule(
        rule="!has(self.scaling) || has(self.roles.prefill) || "
        "self.scaling.ratios.all(r, r.role != 'prefill' && r.per != 'prefill')",
        message="scaling.ratios: a ratio names the prefill role, which this cluster does not "
        "have (E/PD)",
        check=lambda s: (
            s.scaling is None
            or s.roles.prefill is not None
            or all("prefill" not in (r.role, r.per) for r in s.scaling.ratios)
        ),
        field_path=".scaling.ratios",
    ),
)
