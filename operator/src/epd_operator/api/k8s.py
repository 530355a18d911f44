"""Kubernetes types embedded in the EPDCluster spec (resources, tolerations, env, volumes),
reduced to the fields the operator passes through or checks."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from epd_connector.launch.rules import (
    ENV_VALUE_PATTERN,
)

from .base import (
    _DNS_LABEL,
    ABS_PATH,
    FreeForm,
    Quantity,
    _Model,
    _Open,
)
from .cel import CelRule

# --------------------------------------------------------------------------- Kubernetes bits


class ResourceRequirements(_Model):
    """Compute resources of a container, as in a Pod spec."""

    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum amount of each resource, e.g. {memory: 64Gi}."
    )
    requests: dict[str, Quantity] | None = Field(
        default=None, description="Amount of each resource the scheduler reserves."
    )


class Toleration(_Model):
    """A Pod toleration, as in a Pod spec."""

    __cel__ = (
        CelRule(
            rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            message="a toleration with operator Exists must not set value",
            check=lambda t: t.operator != "Exists" or t.value is None,
            field_path=".value",
        ),
    )
    key: str | None = Field(default=None, max_length=317, description="Taint key to tolerate.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (default Equal)."
    )
    value: str | None = Field(default=None, max_length=63, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty means all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )


class EnvVar(_Model):
    """An environment variable of the engine container, as in a Pod spec."""

    name: str = Field(min_length=1, max_length=256, description="Variable name.")
    value: str | None = Field(
        default=None,
        pattern=ENV_VALUE_PATTERN,
        description="Literal value (tabs and line breaks allowed, no other control characters).",
    )
    value_from: FreeForm | None = Field(
        default=None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, ...).",
    )


class Volume(_Open):
    """A Pod volume (any Kubernetes volume source: configMap, secret, persistentVolumeClaim,
    emptyDir, ...). Passed through to the pod spec unchanged."""

    name: str = Field(
        min_length=1, max_length=63, pattern=_DNS_LABEL, description="Volume name (DNS label)."
    )


class VolumeMount(_Model):
    """Where a volume from `volumes` is mounted in the engine container."""

    name: str = Field(min_length=1, max_length=63, description="Name of a volume in `volumes`.")
    mount_path: str = Field(
        min_length=1, max_length=4096, pattern=ABS_PATH, description="Absolute mount path."
    )
    sub_path: str | None = Field(default=None, description="Sub-path of the volume to mount.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")
