"""`parse(obj) -> EPDCluster`: the one way to turn an EPDCluster object into checked models.

Three layers, each error a `SpecError` naming the field path (`spec.roles.encoder.
parallelism.tensor`):
1. the schema (pydantic: types, enums, ranges, unknown fields) - what the CRD schema checks;
2. the cross-field `CelRule`s - what the apiserver's CEL checks, evaluated again here so
   `epdctl render` on a file rejects the same specs with the same words;
3. checks CEL cannot express: contents of free-form objects (extraConfig), Kubernetes
   semantics of embedded objects (quantities, volumes, env, labels), flags the operator owns.
An object the apiserver admitted can still fail layer 3: the operator then reports
Degraded/SpecInvalid with the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from epd_connector.launch.rules import (
    ENV_VALUE_PATTERN,
    KV_DERIVED_KEYS,
    KV_EXTRA_KEYS,
    MOONCAKE_EC_EXTRA_KEYS,
    NO_CONTROL_PATTERN,
    check_extra_args,
    resolve_flag,
)
from epd_connector.launch.store import ENV_STORE_CONFIG

from . import constants as c
from .imageref import IMAGE_REF_PROBLEM, REFERENCE_PATTERN, REPOSITORY_PATTERN
from .layout import OWNED_ENV, OWNED_MOUNTS, OWNED_VOLUMES, USER_VOLUME_SOURCES
from .models import (
    ABS_PATH,
    ROOT_RULES,
    EPDCluster,
    EPDClusterSpec,
    ResourceRequirements,
    RoleSpec,
    shared_cache_on,
)
from .quantity import QuantityError, quantity_value


class SpecError(ValueError):
    """An EPDCluster that cannot be served; `path` names the field, `message` says why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


# ec_connector_extra_config keys derived from typed fields.
EC_DERIVED_KEYS: Mapping[str, str] = {
    "mooncake_protocol": "ecTransfer.protocol",
    "control_timeout_s": "ecTransfer.controlTimeoutSeconds",
    "push_wait_timeout_s": "ecTransfer.pushWaitTimeoutSeconds",
    "shared_storage_path": "ecTransfer.sharedStorage.path",
}
# Keys upstream example scripts use that vLLM 0.33's ECMooncakeConnector silently ignores.
EC_MOONCAKE_IGNORED_KEYS: Mapping[str, str] = {
    "protocol": "use ecTransfer.protocol",
    "device_name": "the EC connector uses every RDMA device",
    "transfer_buffer_size": "use ecTransfer.bufferSize",
}
EC_MOONCAKE_POSITIVE_INT_KEYS = (
    "store_max_pending_items",
    "store_max_pending_bytes",
    "store_read_buffer_bytes",
)

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def parse(obj: Mapping[str, Any]) -> EPDCluster:
    """Validate an EPDCluster object (as read from the apiserver or a YAML file)."""
    if not isinstance(obj, Mapping):
        raise SpecError("<root>", f"expected an object, got {type(obj).__name__}")
    if obj.get("apiVersion") != c.API_VERSION:
        raise SpecError("apiVersion", f"expected {c.API_VERSION}, got {obj.get('apiVersion')!r}")
    if obj.get("kind") != c.KIND:
        raise SpecError("kind", f"expected {c.KIND}, got {obj.get('kind')!r}")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise SpecError("metadata.name", "required")
    if "spec" not in obj:
        raise SpecError("spec", "required")
    try:
        cluster = EPDCluster.model_validate(
            {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": meta,
                "spec": obj["spec"],
            }
        )
    except ValidationError as exc:
        raise _from_pydantic(exc) from exc
    for rule in ROOT_RULES:
        if not rule.check(cluster):
            raise SpecError("metadata.name", rule.message)
    _check_rules(cluster.spec, "spec")
    check_operator_rules(cluster.spec)
    return cluster


def parse_spec(spec: Mapping[str, Any]) -> EPDClusterSpec:
    """Validate a bare spec (all three layers); for callers without an object around it."""
    try:
        model = EPDClusterSpec.model_validate(spec)
    except ValidationError as exc:
        raise _from_pydantic(exc, prefix=("spec",)) from exc
    _check_rules(model, "spec")
    check_operator_rules(model)
    return model


def format_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


# Say what is wrong rather than print a long regular expression.
_PATTERN_MESSAGES: Mapping[str, str] = {
    NO_CONTROL_PATTERN: "must not contain a control character (NUL, line breaks, escapes): "
    "it reaches the engine's command line",
    ENV_VALUE_PATTERN: "must not contain a control character other than tab and line breaks "
    "(NUL cannot reach a process environment)",
    REFERENCE_PATTERN: f"is {IMAGE_REF_PROBLEM}",
    REPOSITORY_PATTERN: "is not a valid image repository ([registry/]path, lower-case path)",
    ABS_PATH: "must be an absolute path without control characters",
}


def _from_pydantic(exc: ValidationError, prefix: tuple[str, ...] = ()) -> SpecError:
    errors = exc.errors()
    first = errors[0]
    loc = prefix + tuple(first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif first["type"] == "string_pattern_mismatch":
        msg = _PATTERN_MESSAGES.get(str((first.get("ctx") or {}).get("pattern")), msg)
    msg = msg.removeprefix("Value error, ")
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return SpecError(format_path(loc), msg)


def _children(model: BaseModel, path: str) -> Iterator[tuple[BaseModel, str]]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        sub = f"{path}.{field.alias or name}"
        if isinstance(value, BaseModel):
            yield value, sub
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield item, f"{sub}[{i}]"


def _check_rules(model: BaseModel, path: str) -> None:
    """Evaluate every CelRule attached to the model tree, parents first."""
    for rule in getattr(type(model), "__cel__", ()):
        if not rule.check(model):
            raise SpecError(path + rule.field_path, rule.message)
    for child, sub in _children(model, path):
        _check_rules(child, sub)


# --------------------------------------------------------------------------- layer 3


def check_operator_rules(spec: EPDClusterSpec) -> None:
    """The checks CEL cannot express; raises SpecError for the first violation."""
    for role in ("encoder", "prefill", "decode"):
        role_spec: RoleSpec | None = getattr(spec.roles, role)
        if role_spec is not None:
            _check_role(spec, role_spec, f"spec.roles.{role}")
    if spec.router.resources is not None:
        _check_resources(spec.router.resources, "spec.router.resources", owned={})
    _check_buffer_size(spec)
    _check_shared_cache(spec)
    _check_ec_extra(spec)
    _check_kv_extra(spec)


def _check_role(spec: EPDClusterSpec, role: RoleSpec, path: str) -> None:
    """One role's free-form parts: flags, env, volumes and mounts, pod metadata, resources."""
    problem = check_extra_args(role.extra_args or ())
    if problem is not None:
        raise SpecError(f"{path}.extraArgs[{problem.index}]", problem.message)
    _check_env(role, path)
    _check_mounts(spec, role, path, _check_volumes(role, path))
    _check_pod_metadata(role, path)
    owned_resources = {
        c.GPU_RESOURCE: "parallelism (tensor x pipeline x data)",
        spec.rdma.resource_name: "rdma",
    }
    if role.resources is not None:
        _check_resources(role.resources, f"{path}.resources", owned_resources)


def _check_env(role: RoleSpec, path: str) -> None:
    seen: set[str] = set()
    for i, env in enumerate(role.env or ()):
        if _ENV_NAME.match(env.name) is None:
            raise SpecError(f"{path}.env[{i}].name", f"{env.name!r} is not a valid variable name")
        if env.name in OWNED_ENV:
            raise SpecError(f"{path}.env[{i}].name", f"{env.name} is set by {OWNED_ENV[env.name]}")
        if env.name in seen:
            raise SpecError(f"{path}.env[{i}].name", f"duplicate variable {env.name}")
        seen.add(env.name)
        if env.value is not None and env.value_from is not None:
            raise SpecError(f"{path}.env[{i}]", "set either value or valueFrom, not both")


def _check_volumes(role: RoleSpec, path: str) -> set[str]:
    """The user's volume names, once each is known to be free and of an allowed source."""
    names: set[str] = set()
    for i, vol in enumerate(role.volumes or ()):
        if vol.name in OWNED_VOLUMES:
            raise SpecError(
                f"{path}.volumes[{i}].name",
                f"volume name {vol.name!r} is used by the operator; pick another name",
            )
        if vol.name in names:
            raise SpecError(f"{path}.volumes[{i}].name", f"duplicate volume {vol.name!r}")
        sources = sorted((vol.model_extra or {}).keys())
        if len(sources) != 1 or sources[0] not in USER_VOLUME_SOURCES:
            raise SpecError(
                f"{path}.volumes[{i}]",
                f"needs exactly one source of {', '.join(USER_VOLUME_SOURCES)} (got "
                f"{', '.join(sources) or 'none'}); Secrets and host paths are not mounted by "
                "the operator",
            )
        names.add(vol.name)
    return names


def _check_mounts(spec: EPDClusterSpec, role: RoleSpec, path: str, volume_names: set[str]) -> None:
    owned_mounts = list(OWNED_MOUNTS)
    if spec.ec_transfer.shared_storage is not None:
        owned_mounts.append(spec.ec_transfer.shared_storage.path)
    mount_paths: set[str] = set()
    for i, mount in enumerate(role.volume_mounts or ()):
        if mount.name not in volume_names:
            raise SpecError(
                f"{path}.volumeMounts[{i}].name",
                f"no volume named {mount.name!r} in {path.removeprefix('spec.')}.volumes",
            )
        norm = mount.mount_path.rstrip("/") or "/"
        for owned in owned_mounts:
            if norm == owned or norm.startswith(owned + "/") or owned.startswith(norm + "/"):
                raise SpecError(
                    f"{path}.volumeMounts[{i}].mountPath",
                    f"{mount.mount_path} collides with the operator's mount at {owned}",
                )
        if norm in mount_paths:
            raise SpecError(f"{path}.volumeMounts[{i}].mountPath", f"duplicate mount {norm}")
        mount_paths.add(norm)


def _check_pod_metadata(role: RoleSpec, path: str) -> None:
    for key, value in (role.pod_labels or {}).items():
        _check_label(key, value, f"{path}.podLabels")
    for key in role.pod_annotations or {}:
        if key == c.ANNOTATION_CONFIG_CHECKSUM:
            raise SpecError(f"{path}.podAnnotations.{key}", "set by the operator")
        _check_key(key, f"{path}.podAnnotations")
    for key, value in (role.node_selector or {}).items():
        _check_key(key, f"{path}.nodeSelector")
        if _LABEL_VALUE.match(value) is None or len(value) > 63:
            raise SpecError(f"{path}.nodeSelector.{key}", f"{value!r} is not a valid label value")


def _check_key(key: str, path: str) -> None:
    prefix, _, name = key.rpartition("/")
    if (
        not name
        or len(name) > 63
        or _LABEL_NAME.match(name) is None
        or (prefix and (len(prefix) > 253 or _DNS_SUBDOMAIN.match(prefix) is None))
    ):
        raise SpecError(f"{path}.{key}", f"{key!r} is not a valid label/annotation key")


def _check_label(key: str, value: str, path: str) -> None:
    if key in c.RESERVED_LABELS:
        raise SpecError(f"{path}.{key}", "set by the operator (selectors and revisions use it)")
    _check_key(key, path)
    if len(value) > 63 or _LABEL_VALUE.match(value) is None:
        raise SpecError(f"{path}.{key}", f"{value!r} is not a valid label value")


def _check_resources(res: ResourceRequirements, path: str, owned: Mapping[str, str]) -> None:
    values: dict[str, dict[str, Decimal]] = {}
    for kind in ("limits", "requests"):
        amounts: dict[str, int | str] = getattr(res, kind) or {}
        values[kind] = {}
        for name, amount in amounts.items():
            if name in owned:
                raise SpecError(f"{path}.{kind}.{name}", f"set by the operator from {owned[name]}")
            try:
                values[kind][name] = quantity_value(amount)
            except QuantityError as exc:  # pragma: no cover - the schema already checked
                raise SpecError(f"{path}.{kind}.{name}", str(exc)) from exc
            if values[kind][name] < 0:
                raise SpecError(f"{path}.{kind}.{name}", "must not be negative")
    for name, request in values["requests"].items():
        limit = values["limits"].get(name)
        if limit is not None and request > limit:
            raise SpecError(
                f"{path}.requests.{name}",
                f"request {res.requests[name] if res.requests else ''} exceeds the limit "
                f"{res.limits[name] if res.limits else ''}",
            )


def buffer_size_bytes(spec: EPDClusterSpec) -> int:
    """ecTransfer.bufferSize in bytes (vLLM wants a whole, positive number)."""
    value = quantity_value(spec.ec_transfer.buffer_size)
    if value <= 0 or value != value.to_integral_value():
        raise SpecError(
            "spec.ecTransfer.bufferSize",
            f"{spec.ec_transfer.buffer_size!r} must be a whole number of bytes greater than 0",
        )
    return int(value)


def _check_buffer_size(spec: EPDClusterSpec) -> None:
    buffer_size_bytes(spec)


def _check_ec_extra(spec: EPDClusterSpec) -> None:
    ec = spec.ec_transfer
    extra = ec.extra_config or {}
    path = "spec.ecTransfer.extraConfig"
    for key, source in EC_DERIVED_KEYS.items():
        if key in extra:
            raise SpecError(f"{path}.{key}", f"set by the operator from {source}; use that field")
    if ec.connector != "ECMooncakeConnector":
        return
    for key, hint in EC_MOONCAKE_IGNORED_KEYS.items():
        if key in extra:
            raise SpecError(
                f"{path}.{key}",
                f"not an ECMooncakeConnector key in vLLM 0.33 (it would be silently ignored); "
                f"{hint}",
            )
    for key in sorted(extra):
        if key not in MOONCAKE_EC_EXTRA_KEYS:
            raise SpecError(
                f"{path}.{key}",
                "not an ECMooncakeConnector key in vLLM 0.33 (it would be silently ignored); "
                f"known keys: {', '.join(sorted(MOONCAKE_EC_EXTRA_KEYS - EC_DERIVED_KEYS.keys()))}",
            )
    for key in EC_MOONCAKE_POSITIVE_INT_KEYS:
        if key in extra:
            value = extra[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpecError(f"{path}.{key}", f"must be an integer > 0, got {value!r}")
    if "cross_encoder_cache" in extra:
        _check_cross_encoder_cache(
            spec, extra["cross_encoder_cache"], f"{path}.cross_encoder_cache"
        )


def _check_cross_encoder_cache(spec: EPDClusterSpec, value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise SpecError(path, f"must be a JSON boolean (true/false), got {value!r}")
    if not value:
        return
    if spec.ec_transfer.encoder_role != "ec_producer":
        raise SpecError(path, "needs ecTransfer.encoderRole ec_producer (an encode-only producer)")
    if not (spec.encoder_cache.mm_processor_cache_gb or 0) > 0:
        raise SpecError(path, "needs encoderCache.mmProcessorCacheGb > 0")
    env_names = {e.name for e in spec.roles.encoder.env or ()}
    if ENV_STORE_CONFIG not in env_names:
        raise SpecError(
            path,
            "needs a Mooncake Store: set encoderCache.shared.enabled (the operator runs one), "
            "or set MOONCAKE_CONFIG_PATH in roles.encoder.env to your store's config file",
        )


# --------------------------------------------------------------------------- shared cache

SHARED_PATH = "spec.encoderCache.shared"


def store_sizes(spec: EPDClusterSpec) -> tuple[int, int]:
    """(segmentSize, localBufferSize) of encoderCache.shared in whole bytes (> 0)."""
    shared = spec.encoder_cache.shared
    assert shared is not None
    out = []
    for name, amount in (
        ("segmentSize", shared.segment_size),
        ("localBufferSize", shared.local_buffer_size),
    ):
        value = quantity_value(amount)
        if value <= 0 or value != value.to_integral_value():
            raise SpecError(
                f"{SHARED_PATH}.{name}", f"{amount!r} must be a whole number of bytes above 0"
            )
        out.append(int(value))
    return out[0], out[1]


def _check_shared_cache(spec: EPDClusterSpec) -> None:
    """What vLLM's cross_encoder_cache needs beyond the CEL rules: whole-byte sizes, no user
    setting of what the operator derives, Model Runner V2 and no LoRA on the encoder."""
    if not shared_cache_on(spec):
        return
    store_sizes(spec)
    extra = spec.ec_transfer.extra_config or {}
    if "cross_encoder_cache" in extra:
        raise SpecError(
            "spec.ecTransfer.extraConfig.cross_encoder_cache",
            "set by the operator from encoderCache.shared; remove it",
        )
    encoder = spec.roles.encoder
    for i, env in enumerate(encoder.env or ()):
        if env.name == ENV_STORE_CONFIG:
            raise SpecError(
                f"spec.roles.encoder.env[{i}].name",
                f"{ENV_STORE_CONFIG} is set by the launcher from encoderCache.shared",
            )
        if env.name == "VLLM_USE_V2_MODEL_RUNNER" and (env.value or "").strip().lower() in (
            "0",
            "false",
        ):
            raise SpecError(
                f"spec.roles.encoder.env[{i}].value",
                "encoderCache.shared needs Model Runner V2 (vLLM's cross_encoder_cache)",
            )
    for i, arg in enumerate(encoder.extra_args or ()):
        negated = arg.replace("_", "-").startswith(("--no-", "--disable-"))
        if resolve_flag(arg).option == "--enable-lora" and not negated:
            raise SpecError(
                f"spec.roles.encoder.extraArgs[{i}]",
                "encoderCache.shared does not support LoRA (vLLM's cross_encoder_cache)",
            )


def _check_kv_extra(spec: EPDClusterSpec) -> None:
    kv = spec.kv_transfer
    if kv is None:
        return
    extra = kv.extra_config or {}
    path = "spec.kvTransfer.extraConfig"
    known = KV_EXTRA_KEYS[kv.connector]
    for key in sorted(extra):
        if key in KV_DERIVED_KEYS and key in known:
            raise SpecError(f"{path}.{key}", f"set by {KV_DERIVED_KEYS[key]}; use that field")
        if key not in known:
            raise SpecError(
                f"{path}.{key}",
                f"not a {kv.connector} key in vLLM 0.33 (it would be silently ignored); known "
                f"keys: {', '.join(sorted(known - KV_DERIVED_KEYS.keys()))}",
            )
