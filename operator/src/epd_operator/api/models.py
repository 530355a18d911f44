"""The EPDCluster API: pydantic models of spec and status, the one definition of the schema.
This module is the facade (import models from here) and holds the object itself; the parts
live by concern: `base` (model bases, shared field types), `k8s` (embedded Kubernetes types),
`spec`, `rules` (the cross-field CEL rules), `status`; the pod layout is `layout`.

Field names are Python snake_case with camelCase aliases (the Kubernetes spelling). Every
field carries a description (it becomes `kubectl explain` text), defaults and enums live here,
and cross-field rules are `CelRule`s attached to the class they constrain (`__cel__`).
`crdgen` turns these models into the CRD; `parse` validates objects with them and also runs
the rules' Python side. Validate objects through `epd_operator.api.parse.parse`, not
`model_validate`, so the cross-field rules and the operator-only checks run too.
"""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from .base import (
    ABS_PATH,
    CLUSTER_NAME_PATTERN,
    MAX_CLUSTER_NAME,
    ArgText,
    FreeForm,
    Port,
    Quantity,
)
from .cel import CelRule
from .k8s import EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount
from .rules import (
    ROLE_SCALING_RULES,
    SHARED_CACHE_RULES,
    SPEC_RULES,
    SPEC_SCALING_RULES,
    ec_http_ports,
    ec_port_range,
    kv_http_ports,
    nixl_port_range,
    shared_cache_on,
)
from .spec import (
    AudioIOKwargs,
    CPUSpec,
    ECTransferSpec,
    EncoderCacheSpec,
    EPDClusterSpec,
    HostPathSource,
    ImageIOKwargs,
    ImageSource,
    ImageSpec,
    KVTransferSpec,
    MediaIOKwargs,
    MMProcessorKwargs,
    ModelSource,
    ModelSpec,
    Parallelism,
    PVCSource,
    RatioBound,
    RDMASpec,
    RoleRolloutSpec,
    Roles,
    RoleSpec,
    RouterOverload,
    RouterSpec,
    ScalingSpec,
    SharedEncoderCacheSpec,
    SharedStorage,
    StoreMasterSpec,
    VideoIOKwargs,
)
from .status import Condition, EPDClusterStatus, RoleStatus, RoleStatuses, RolloutStatus

# The facade: what `from epd_operator.api.models import ...` offers.
__all__ = [
    "ABS_PATH",
    "CLUSTER_NAME_PATTERN",
    "MAX_CLUSTER_NAME",
    "ROLE_SCALING_RULES",
    "ROOT_RULES",
    "SHARED_CACHE_RULES",
    "SPEC_RULES",
    "SPEC_SCALING_RULES",
    "ArgText",
    "AudioIOKwargs",
    "CPUSpec",
    "Condition",
    "ECTransferSpec",
    "EPDCluster",
    "EPDClusterSpec",
    "EPDClusterStatus",
    "EncoderCacheSpec",
    "EnvVar",
    "FreeForm",
    "HostPathSource",
    "ImageIOKwargs",
    "ImageSource",
    "ImageSpec",
    "KVTransferSpec",
    "MMProcessorKwargs",
    "MediaIOKwargs",
    "ModelSource",
    "ModelSpec",
    "ObjectMeta",
    "PVCSource",
    "Parallelism",
    "Port",
    "Quantity",
    "RDMASpec",
    "RatioBound",
    "ResourceRequirements",
    "RoleRolloutSpec",
    "RoleSpec",
    "RoleStatus",
    "RoleStatuses",
    "Roles",
    "RolloutStatus",
    "RouterOverload",
    "RouterSpec",
    "ScalingSpec",
    "SharedEncoderCacheSpec",
    "SharedStorage",
    "StoreMasterSpec",
    "Toleration",
    "VideoIOKwargs",
    "Volume",
    "VolumeMount",
    "ec_http_ports",
    "ec_port_range",
    "kv_http_ports",
    "nixl_port_range",
    "shared_cache_on",
]


# --------------------------------------------------------------------------- the object


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class EPDCluster(BaseModel):
    """EPDCluster is one vLLM encoder / prefill / decode disaggregated serving cluster:
    encoder, optional prefill and decode StatefulSets, their launch config and a router."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: EPDClusterSpec


# Rules on the whole object (CEL at the schema root may read metadata.name).
ROOT_RULES: tuple[CelRule, ...] = (
    CelRule(
        rule=f"self.metadata.name.size() <= {MAX_CLUSTER_NAME} && "
        f"self.metadata.name.matches('{CLUSTER_NAME_PATTERN}')",
        message=f"metadata.name must be a DNS-1035 label of at most {MAX_CLUSTER_NAME} "
        "characters (lowercase letters, digits, '-', starting with a letter): Services and "
        "labels are named after it",
        check=lambda obj: (
            len(obj.metadata.name) <= MAX_CLUSTER_NAME
            and re.match(CLUSTER_NAME_PATTERN, obj.metadata.name) is not None
        ),
    ),
)
