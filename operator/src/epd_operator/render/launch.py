"""Spec -> `LaunchConfig` (the JSON every pod reads: the launch contract, docs/architecture.md)
and its per-role checksums.

The launch config types belong to `epd_connector.launch.config`; this module only fills them
from the EPDCluster spec. A pod of role R reads the global settings, the topology and its own
role entry, so its checksum covers exactly those (replica counts excluded): scaling a role or
editing another role's settings does not restart it.

The ConfigMap holds `launch_document`: the config without replica counts (no pod reads them;
pods discover their peers), so the document, and the launch revision that names its immutable
ConfigMap, change only when something a pod reads changes (docs/rollouts.md).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from epd_connector.launch.config import (
    ECTransferLaunch,
    EncoderCacheLaunch,
    KVTransferLaunch,
    LaunchConfig,
    ModelLaunch,
    RoleLaunch,
    Roles,
)
from epd_connector.launch.config import (
    Parallelism as ParallelismLaunch,
)
from epd_connector.launch.routing import wiring_revision

from ..api.layout import MODEL_MOUNT
from ..api.models import EPDCluster, EPDClusterSpec, RoleSpec
from ..api.parse import buffer_size_bytes
from .names import role_name, stable_hash
from .store import store_launch


def model_path(spec: EPDClusterSpec) -> str | None:
    """Where the weights are inside engine pods; None means vLLM downloads them."""
    source = spec.model.source
    if source is None:
        return None
    if source.image is not None:
        return source.image.path
    return MODEL_MOUNT


def _role(cluster: str, role: str, spec: RoleSpec) -> RoleLaunch:
    par = spec.parallelism
    return RoleLaunch(
        replicas=spec.replicas,
        parallelism=ParallelismLaunch(tensor=par.tensor, pipeline=par.pipeline, data=par.data),
        port=spec.port,
        service=role_name(cluster, role),
        max_model_len=spec.max_model_len,
        gpu_memory_utilization=spec.gpu_memory_utilization,
        extra_args=list(spec.extra_args or ()),
    )


def launch_config(obj: EPDCluster) -> LaunchConfig:
    spec = obj.spec
    name = obj.metadata.name
    ec = spec.ec_transfer
    kv: KVTransferLaunch | None = None
    if spec.roles.prefill is not None:
        kvs = spec.kv_transfer
        # Without a kvTransfer block the launch contract's own defaults apply.
        kv = KVTransferLaunch(protocol=spec.kv_protocol)
        if kvs is not None:
            kv = KVTransferLaunch(
                connector=kvs.connector,
                protocol=spec.kv_protocol,
                bootstrap_port=kvs.bootstrap_port,
                side_channel_port=kvs.side_channel_port,
                extra_config=dict(kvs.extra_config or {}),
            )
    cache = spec.encoder_cache
    return LaunchConfig(
        cluster=name,
        namespace=obj.metadata.namespace,
        model=ModelLaunch(
            name=spec.model.name,
            path=model_path(spec),
            revision=spec.model.revision,
            served_model_name=spec.model.served_model_name,
            tokenizer=spec.model.tokenizer,
        ),
        device=spec.device if spec.device != "cuda" else None,
        cpu_kv_cache_space_gib=spec.cpu.kv_cache_space_gib if spec.cpu else None,
        ec=ECTransferLaunch(
            connector=ec.connector,
            protocol=spec.ec_protocol,
            buffer_size=buffer_size_bytes(spec),
            port=ec.control_port,
            encoder_role=ec.encoder_role,
            control_timeout_s=ec.control_timeout_seconds,
            push_wait_timeout_s=ec.push_wait_timeout_seconds,
            shared_storage_path=ec.shared_storage.path if ec.shared_storage else None,
            extra_config=dict(ec.extra_config or {}),
            store=store_launch(obj),
        ),
        kv=kv,
        encoder_cache=EncoderCacheLaunch(
            max_num_batched_tokens=cache.max_num_batched_tokens,
            mm_processor_cache_gb=cache.mm_processor_cache_gb,
            limit_mm_per_prompt=dict(cache.limit_mm_per_prompt)
            if cache.limit_mm_per_prompt is not None
            else None,
            mm_encoder_tp_mode=cache.mm_encoder_tp_mode,
        ),
        media_io_kwargs=_kwargs(spec.media_io_kwargs),
        mm_processor_kwargs=_kwargs(spec.mm_processor_kwargs),
        roles=Roles(
            encoder=_role(name, "encoder", spec.roles.encoder),
            prefill=_role(name, "prefill", spec.roles.prefill) if spec.roles.prefill else None,
            decode=_role(name, "decode", spec.roles.decode),
        ),
    )


def _kwargs(model: BaseModel | None) -> dict[str, Any] | None:
    """vLLM keyword arguments as vLLM spells them (typed keys and passed-through ones)."""
    return None if model is None else model.model_dump(mode="json", exclude_none=True)


def _without_replicas(role: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in role.items() if k != "replicas"}


def role_checksum(config: LaunchConfig, role: str) -> str:
    """Checksum of what a pod of `role` reads from the launch config, and of the wiring its
    peers and the router pair it by: a change to any role's Service, port or parallelism
    moves every role to the new wiring revision together (docs/rollouts.md)."""
    data = config.model_dump(mode="json", exclude_none=True)
    roles = data.pop("roles")
    data["topology"] = config.topology
    data["role"] = _without_replicas(roles[role])
    data["wiring"] = wiring_revision(config)
    return stable_hash(data)


def router_checksum(config: LaunchConfig) -> str:
    """The router reads every role's wiring, but not replica counts (it discovers pods)."""
    return stable_hash(launch_document(config))


def launch_document(config: LaunchConfig) -> dict[str, Any]:
    """What the revision's ConfigMap holds: the config without `roles.*.replicas` (readers
    default it; scaling must not make a new revision)."""
    data = config.model_dump(mode="json", exclude_none=True)
    data["roles"] = {name: _without_replicas(r) for name, r in data["roles"].items()}
    return data


def launch_revision(config: LaunchConfig) -> str:
    """The launch revision: a hash of `launch_document`, 10 hex characters (names stay short)."""
    return stable_hash(launch_document(config), 10)


def launch_json(config: LaunchConfig) -> str:
    """The ConfigMap's `launch.json`: canonical JSON, as `LaunchConfig.to_json` writes it."""
    return json.dumps(launch_document(config), sort_keys=True, indent=2)
