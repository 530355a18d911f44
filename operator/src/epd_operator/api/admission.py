"""What the validating admission webhook decides about one EPDCluster (pure).

The webhook (handlers/admission.py, served by the operator) runs exactly `api.parse`, the same
function the reconciler runs, so every spec the operator would mark Degraded/SpecInvalid is
refused by `kubectl apply` with the field path and the reason. CEL in the CRD stays for what
CEL can say (the apiserver checks it even while the operator is down); the webhook adds the
rest.

- Only a change of the spec is judged: an UPDATE that keeps the spec (labels, annotations,
  finalizers, kopf's own bookkeeping) is always allowed, so an object admitted while the
  webhook was down can still be relabelled or deleted. The chart's webhook configuration
  skips such requests with a matchCondition too; this is the same rule for any other caller.
- Allowed but odd specs are admitted with warnings (`oddities`): kubectl prints them, and the
  reconciler repeats them as a Warning Event and in the Ready condition's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .models import EPDClusterSpec
from .parse import SpecError, parse

WEBHOOK_ID: Final = "validate-epdcluster"
"""kopf handler id; kopf serves it at https://<host>:<port>/<id>."""
WEBHOOK_PATH: Final = f"/{WEBHOOK_ID}"


@dataclass(frozen=True)
class Verdict:
    """`error` is None when the request is allowed; `warnings` are shown to the client."""

    error: SpecError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.error is None


def review(operation: str, new: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> Verdict:
    """The verdict on one admission request for an EPDCluster."""
    if operation not in ("CREATE", "UPDATE") or new is None:
        return Verdict()
    if operation == "UPDATE" and old is not None and old.get("spec") == new.get("spec"):
        return Verdict()
    try:
        cluster = parse(new)
    except SpecError as exc:
        return Verdict(error=exc)
    return Verdict(warnings=[f"{path}: {msg}" for path, msg in oddities(cluster.spec)])


def oddities(spec: EPDClusterSpec) -> list[tuple[str, str]]:
    """Settings that are valid but probably not what the author meant: (field path, why)."""
    out: list[tuple[str, str]] = []
    if spec.rdma.enabled and spec.ec_protocol == "tcp":
        out.append(
            (
                "spec.ecTransfer.protocol",
                "tcp while rdma.enabled requests RDMA devices "
                "for every engine pod; the EC transfer will not use them",
            )
        )
    if (
        spec.rdma.enabled
        and spec.roles.prefill is not None
        and spec.kv_protocol == "tcp"
        and (spec.kv_transfer is None or spec.kv_transfer.connector == "MooncakeConnector")
    ):
        out.append(
            (
                "spec.kvTransfer.protocol",
                "tcp while rdma.enabled requests RDMA devices; the KV transfer will not use them",
            )
        )
    limits = spec.encoder_cache.limit_mm_per_prompt
    if limits is not None and limits and not any(limits.values()):
        out.append(
            (
                "spec.encoderCache.limitMmPerPrompt",
                "every modality is limited to 0 items: no request will ever reach the encoders",
            )
        )
    return out
