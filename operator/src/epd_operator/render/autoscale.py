"""Autoscaling recipes, pure: an HPA (autoscaling/v2) or a KEDA ScaledObject per role, aimed
at the role's EPDRoleScaler (`/scale`), on the signal that saturates that role.

- prefill and decode (vLLM engines): requests waiting in the engine's scheduler queue,
  `vllm:num_requests_waiting`, per pod; decode also on KV-cache usage,
  `vllm:kv_cache_usage_perc` (long outputs fill the cache before the queue grows);
- encoder: the router's encode-stage latency, p90 of `epd_router_stage_seconds{stage="encode"}`
  (encoders serve the router, not clients: their queue shows up as encode time).

The HPA reads them through the custom / external metrics APIs, under the names a Prometheus
Adapter configuration gives them (docs/autoscaling.md): Prometheus metric names may hold `:`,
Kubernetes metric names may not. KEDA queries Prometheus directly. Both scale only roles whose
number the EPDRoleScaler owns (`replicasFrom: Scaler`); on a Spec-owned role the operator
would put the spec's number back after every autoscaler write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import constants as c
from ..api.models import EPDCluster, RoleSpec
from .names import object_labels, role_name, router_name

# Names the Prometheus Adapter rules of docs/autoscaling.md give the signals.
METRIC_WAITING = "vllm_num_requests_waiting"
METRIC_KV_CACHE = "vllm_kv_cache_usage_perc"
# A DNS label (no `_`): external metric names end up in API paths, and a name that is also
# a valid resource name works with every metrics API server.
METRIC_ENCODE_P90 = "epd-router-encode-p90-seconds"
# The Prometheus series behind them.
SERIES_WAITING = "vllm:num_requests_waiting"
SERIES_KV_CACHE = "vllm:kv_cache_usage_perc"
SERIES_STAGE = "epd_router_stage_seconds_bucket"
# The label the external encode metric is selected by (set by the adapter rule from the
# router's Service, i.e. the cluster's router).
LABEL_ROUTER_SERVICE = "service"


@dataclass(frozen=True)
class Targets:
    """What "saturated" means per signal (defaults for a start; tune per model and SLO)."""

    waiting_per_pod: str = "4"
    kv_cache_usage: str = "0.8"
    encode_p90_seconds: str = "0.5"
    default_max_replicas: int = 8
    # Engines load a model for minutes: scale down one pod a minute, after 5 quiet minutes.
    scale_down_window_seconds: int = 300
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"


class RecipeError(ValueError):
    """A recipe was asked for a role it cannot serve (absent, or owned by the spec)."""


def _role(cluster: EPDCluster, role: str) -> RoleSpec:
    rs: RoleSpec | None = getattr(cluster.spec.roles, role, None)
    if rs is None:
        raise RecipeError(f"{cluster.metadata.name} has no {role} role")
    if rs.replicas_from != c.REPLICAS_FROM_SCALER:
        raise RecipeError(
            f"spec.roles.{role}.replicasFrom is {rs.replicas_from}: the operator would put the "
            f"spec's number back after every autoscaler write; set it to "
            f"{c.REPLICAS_FROM_SCALER}"
        )
    return rs


def scalable_roles(cluster: EPDCluster) -> list[str]:
    """Roles an autoscaler may drive: present and owned by their EPDRoleScaler."""
    return [
        r
        for r in c.ROLE_NAMES
        if (rs := getattr(cluster.spec.roles, r)) is not None
        and rs.replicas_from == c.REPLICAS_FROM_SCALER
    ]


def _target_ref(cluster: EPDCluster, role: str) -> dict[str, str]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.SCALER_KIND,
        "name": role_name(cluster.metadata.name, role),
    }


def _bounds(rs: RoleSpec, t: Targets) -> tuple[int, int]:
    lo = rs.min_replicas or 1
    return lo, max(lo, rs.max_replicas or t.default_max_replicas)


def _meta(cluster: EPDCluster, role: str) -> dict[str, Any]:
    # Not owned by the EPDCluster: the user applies (and GitOps keeps) these.
    labels = object_labels(cluster.metadata.name, role)
    del labels[c.LABEL_MANAGED_BY]
    return {
        "name": role_name(cluster.metadata.name, role),
        "namespace": cluster.metadata.namespace,
        "labels": labels,
    }


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": average},
        },
    }


def hpa_metrics(cluster: EPDCluster, role: str, t: Targets) -> list[dict[str, Any]]:
    if role == "encoder":
        return [
            {
                "type": "External",
                "external": {
                    "metric": {
                        "name": METRIC_ENCODE_P90,
                        "selector": {
                            "matchLabels": {
                                LABEL_ROUTER_SERVICE: router_name(cluster.metadata.name)
                            }
                        },
                    },
                    "target": {"type": "Value", "value": t.encode_p90_seconds},
                },
            }
        ]
    metrics = [_pods_metric(METRIC_WAITING, t.waiting_per_pod)]
    if role == "decode":
        metrics.append(_pods_metric(METRIC_KV_CACHE, t.kv_cache_usage))
    return metrics


def hpa(cluster: EPDCluster, role: str, t: Targets = Targets()) -> dict[str, Any]:
    """A HorizontalPodAutoscaler (autoscaling/v2) on the role's EPDRoleScaler."""
    lo, hi = _bounds(_role(cluster, role), t)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(cluster, role),
        "spec": {
            "scaleTargetRef": _target_ref(cluster, role),
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": hpa_metrics(cluster, role, t),
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": t.scale_down_window_seconds,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def promql(cluster: EPDCluster, role: str) -> list[tuple[str, str, str]]:
    """(name, PromQL, KEDA metricType) of the role's signals, for KEDA's prometheus trigger."""
    ns = cluster.metadata.namespace
    if role == "encoder":
        router = router_name(cluster.metadata.name)
        q = (
            f'histogram_quantile(0.9, sum by (le) (rate({SERIES_STAGE}{{namespace="{ns}",'
            f'{LABEL_ROUTER_SERVICE}="{router}",stage="encode"}}[2m])))'
        )
        return [("encode-p90-seconds", q, "Value")]
    pods = f'namespace="{ns}",pod=~"{role_name(cluster.metadata.name, role)}-[0-9]+"'
    out = [("requests-waiting", f"sum({SERIES_WAITING}{{{pods}}})", "AverageValue")]
    if role == "decode":
        out.append(("kv-cache-usage", f"avg({SERIES_KV_CACHE}{{{pods}}})", "Value"))
    return out


def scaled_object(cluster: EPDCluster, role: str, t: Targets = Targets()) -> dict[str, Any]:
    """A KEDA ScaledObject (keda.sh/v1alpha1) on the role's EPDRoleScaler."""
    lo, hi = _bounds(_role(cluster, role), t)
    thresholds = {
        "requests-waiting": t.waiting_per_pod,
        "kv-cache-usage": t.kv_cache_usage,
        "encode-p90-seconds": t.encode_p90_seconds,
    }
    triggers = [
        {
            "type": "prometheus",
            "name": name,
            "metricType": kind,
            "metadata": {
                "serverAddress": t.prometheus_url,
                "query": query,
                "threshold": thresholds[name],
            },
        }
        for name, query, kind in promql(cluster, role)
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(cluster, role),
        "spec": {
            "scaleTargetRef": _target_ref(cluster, role),
            # A role cannot run with no pods (EPDRoleScaler spec.replicas >= 1).
            "minReplicaCount": lo,
            "maxReplicaCount": hi,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": t.scale_down_window_seconds,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": triggers,
        },
    }


def recipes(
    cluster: EPDCluster, roles: list[str] | None = None, keda: bool = False, t: Targets = Targets()
) -> list[dict[str, Any]]:
    """One autoscaler per role (default: every Scaler-owned role)."""
    chosen = roles if roles else scalable_roles(cluster)
    if not chosen:
        raise RecipeError(
            f"{cluster.metadata.name}: no role has replicasFrom: {c.REPLICAS_FROM_SCALER}; "
            "autoscalers scale only roles whose EPDRoleScaler owns the number"
        )
    make = scaled_object if keda else hpa
    return [make(cluster, r, t) for r in chosen]
