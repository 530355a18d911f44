"""The EPDRoleScaler API: one small object per role of an EPDCluster, the role's scale target.

The operator creates one per role (named like the role's StatefulSet, `<cluster>-<role>`,
owned by the EPDCluster). Its `/scale` subresource maps `spec.replicas`, `status.replicas` and
`status.selector`, so `kubectl scale epdrs/<cluster>-<role>`, `kubectl autoscale`, a
HorizontalPodAutoscaler or a KEDA ScaledObject scale one role without touching the
EPDCluster. Whether that number counts is the EPDCluster's `roles.<role>.replicasFrom`:
`Scaler` (it does) or `Spec` (the operator writes the spec's number back).

The status is written by the operator only; `crdgen` turns these models into the CRD.
"""

from __future__ import annotations

from pydantic import Field

from .base import _Model as _Spec
from .constants import MAX_ROLE_REPLICAS, ReplicasFrom, RoleName
from .status import _Status


class EPDRoleScalerSpec(_Spec):
    """Desired pod count of one role."""

    replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROLE_REPLICAS,
        description="Pods wanted for the role (at least 1: every role present is needed to "
        "serve). Set by the operator when it creates the object; then by `kubectl scale`, "
        "HPA or KEDA through /scale. Applied to the role's StatefulSet when the EPDCluster "
        "says roles.<role>.replicasFrom: Scaler, after minReplicas/maxReplicas and "
        "scaling.ratios; with replicasFrom: Spec the operator writes the spec's number back.",
    )


class EPDRoleScalerStatus(_Status):
    """Observed state of the role, written by the operator."""

    replicas: int = Field(
        default=0,
        ge=0,
        description="Pods of the role that exist (what HPA reads as the current count).",
    )
    ready_replicas: int = Field(default=0, ge=0, description="Pods passing readiness.")
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Pods the operator asked the StatefulSet for, after "
        "minReplicas/maxReplicas and scaling.ratios.",
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the role's pods (HPA finds the pods "
        "whose metrics it averages with it).",
    )
    replicas_from: ReplicasFrom | None = Field(
        default=None,
        description="Owner of the number: Spec (the EPDCluster) or Scaler (this object).",
    )
    cluster: str | None = Field(default=None, description="The EPDCluster of this role.")
    role: RoleName | None = Field(default=None, description="encoder, prefill or decode.")
    clamped: str | None = Field(
        default=None,
        max_length=1024,
        description="Why desiredReplicas differs from the owner's number; absent when it does not.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted on."
    )
