"""The EPDCluster status models: the one definition of the status shape (the CRD's status
schema; reconcile.status checks every status it computes against `EPDClusterStatus`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
)

from .base import (
    _Model,
)
from .constants import (
    Phase,
    ReplicasFrom,
)

# --------------------------------------------------------------------------- status


class _Status(_Model):
    # Status is written by the operator; read it leniently.
    model_config = ConfigDict(extra="ignore")


class RoleStatus(_Status):
    """Pod counts of one role's StatefulSet."""

    replicas: int = Field(default=0, ge=0, description="Pods that exist.")
    ready_replicas: int = Field(default=0, ge=0, description="Pods passing readiness.")
    updated_replicas: int = Field(
        default=0, ge=0, description="Pods at the current pod-template revision."
    )
    ready: str | None = Field(
        default=None, max_length=32, description="readyReplicas/desired, for display."
    )
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Pods the operator asks for: the owner's number after "
        "minReplicas/maxReplicas and scaling.ratios.",
    )
    replicas_from: ReplicasFrom | None = Field(
        default=None, description="Owner of the number: Spec or Scaler (the EPDRoleScaler)."
    )
    requested_replicas: int | None = Field(
        default=None, ge=0, description="The owner's number before clamping."
    )
    clamped: str | None = Field(
        default=None,
        max_length=1024,
        description="Why desiredReplicas differs from requestedReplicas; absent when it does not.",
    )
    current_revision: str | None = Field(
        default=None,
        max_length=253,
        description="StatefulSet revision the role's not-yet-updated pods run.",
    )
    update_revision: str | None = Field(
        default=None,
        max_length=253,
        description="StatefulSet revision the role is rolling to (equal when rolled out).",
    )


class RoleStatuses(_Status):
    """Per-role pod counts."""

    encoder: RoleStatus | None = Field(default=None, description="Encoder role.")
    prefill: RoleStatus | None = Field(default=None, description="Prefill role (E/P/D).")
    decode: RoleStatus | None = Field(default=None, description="Decode role.")


class Condition(_Status):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase reason, e.g. Reconciled, SpecInvalid, InsufficientResources.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the status last flipped.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )


class RolloutStatus(_Status):
    """Where the coordinated rollout of the engine roles stands (docs/rollouts.md)."""

    step: int = Field(default=0, ge=0, description="Steps completed.")
    steps: int = Field(default=0, ge=0, description="Steps of this rollout in all.")
    paused: bool = Field(default=False, description="spec.paused holds it at this step.")


class EPDClusterStatus(_Status):
    """Observed state, written by the operator."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last reconciled."
    )
    phase: Phase | None = Field(
        default=None, description="One-word summary of the conditions, for display."
    )
    roles: RoleStatuses | None = Field(default=None, description="Per-role pod counts.")
    rollout: RolloutStatus | None = Field(
        default=None, description="The coordinated rollout in progress (steps 0: none)."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded.",
    )
