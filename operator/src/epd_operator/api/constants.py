"""Names shared by everything that touches an EPDCluster: API group/version/kind, label and
annotation keys, condition types and reasons, the kopf prefix and the field manager.

One module, so the CRD generator, the renderer, the reconciler, the chart tests and the e2e
suite cannot disagree on a spelling.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# The pod environment names are the launch contract's own (explicit re-exports).
from epd_connector.launch.pod import DEFAULT_LAUNCH_CONFIG
from epd_connector.launch.pod import ENV_ENGINE as ENV_ENGINE
from epd_connector.launch.pod import ENV_LAUNCH_CONFIG as ENV_LAUNCH_CONFIG
from epd_connector.launch.pod import ENV_POD_IP as ENV_POD_IP
from epd_connector.launch.pod import ENV_POD_NAME as ENV_POD_NAME
from epd_connector.launch.pod import ENV_POD_NAMESPACE as ENV_POD_NAMESPACE
from epd_connector.launch.pod import ENV_ROLE as ENV_ROLE
from epd_connector.launch.routing import ROUTING_KEY
from epd_connector.launch.rules import ENGINE_HTTP_PORT as _ENGINE_HTTP_PORT

GROUP: Final = "epd-operator.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "EPDCluster"
LIST_KIND: Final = "EPDClusterList"
PLURAL: Final = "epdclusters"
SINGULAR: Final = "epdcluster"
SHORT_NAMES: Final = ("epdc",)
CATEGORIES: Final = ("epd",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
CRD_FILENAME: Final = f"{GROUP}_{PLURAL}.yaml"

# kopf keeps its finalizer / progress / diff-base bookkeeping under this prefix.
KOPF_PREFIX: Final = GROUP
# Our name in managedFields (server-side apply) and in the Events we post.
FIELD_MANAGER: Final = "epd-operator"

# Labels on every child object.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_VERSION: Final = "app.kubernetes.io/version"  # on the CRDs: epd_operator.__version__
LABEL_ROLE: Final = f"{GROUP}/role"
LABEL_REVISION: Final = f"{GROUP}/revision"
# On each immutable launch ConfigMap: the launch revision (hash of its content) it holds.
LABEL_LAUNCH_REVISION: Final = f"{GROUP}/launch-revision"
# On engine pod templates and launch ConfigMaps: the wiring revision (launch.routing) pods are
# paired by; the router serves a request with pods of one wiring revision only.
LABEL_WIRING_REVISION: Final = f"{GROUP}/wiring-revision"
APP_NAME: Final = "epd"
MANAGED_BY: Final = "epd-operator"

Component = Literal["encoder", "prefill", "decode", "router", "config", "store", "routing"]
COMPONENT_ROUTER: Final = "router"
COMPONENT_CONFIG: Final = "config"
COMPONENT_STORE: Final = "store"  # the shared encoder cache's mooncake_master
COMPONENT_ROUTING: Final = "routing"  # the router's mutable routing table ConfigMap

# Pod-template annotation: checksum of the launch-config part a role's pods read, so a
# config change rolls exactly the pods it affects.
ANNOTATION_CONFIG_CHECKSUM: Final = f"{GROUP}/launch-config-checksum"

# Labels users may not set on pod templates: the selector and the revision depend on them.
RESERVED_LABELS: Final = frozenset(
    {
        LABEL_NAME,
        LABEL_INSTANCE,
        LABEL_COMPONENT,
        LABEL_MANAGED_BY,
        LABEL_ROLE,
        LABEL_REVISION,
        LABEL_WIRING_REVISION,
    }
)

# Pod environment contract: rendered by the operator, read by epd-engine. One definition, the
# launch contract's own (epd_connector.launch.pod).
LAUNCH_CONFIG_PATH: Final = DEFAULT_LAUNCH_CONFIG
LAUNCH_CONFIG_DIR: Final = LAUNCH_CONFIG_PATH.rsplit("/", 1)[0]
# The router's routing table (the <cluster>-routing ConfigMap, mutable: the router re-reads it).
ROUTING_DIR: Final = "/etc/epd/routing"
ROUTING_PATH: Final = f"{ROUTING_DIR}/{ROUTING_KEY}"

# vLLM's OpenAI server port inside every engine pod, and its health endpoint.
ENGINE_HTTP_PORT: Final = _ENGINE_HTTP_PORT  # the launch contract's (rules.py)
HEALTH_PATH: Final = "/health"
GPU_RESOURCE: Final = "nvidia.com/gpu"
DEFAULT_RDMA_RESOURCE: Final = "rdma/hca_shared_devices_a"

# Condition types (kstatus-compatible: Ready is the summary, Progressing/Degraded explain it).
CONDITION_READY: Final = "Ready"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_DEGRADED: Final = "Degraded"

REASON_RECONCILED: Final = "Reconciled"
REASON_ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
REASON_ROLLOUT_PAUSED: Final = "RolloutPaused"  # spec.paused holds a rollout mid-way
# Ready stays True through a change while every role keeps its serving floor.
REASON_SERVING_DURING_ROLLOUT: Final = "ServingDuringRollout"
REASON_SPEC_INVALID: Final = "SpecInvalid"
REASON_SPEC_WARNING: Final = "SpecWarning"  # an Event: admitted, but worth a look
REASON_INSUFFICIENT_RESOURCES: Final = "InsufficientResources"
REASON_RECONCILE_ERROR: Final = "ReconcileError"
REASON_AS_EXPECTED: Final = "AsExpected"

# status.phase: a one-word summary for `kubectl get` (the conditions are the contract).
Phase = Literal["Pending", "Progressing", "Ready", "Degraded"]

# --------------------------------------------------------------------------- per-role scaling
# EPDRoleScaler: one per role of an EPDCluster, created and owned by the operator; its /scale
# subresource is what `kubectl scale`, HPA and KEDA drive (issue 17).
SCALER_KIND: Final = "EPDRoleScaler"
SCALER_LIST_KIND: Final = "EPDRoleScalerList"
SCALER_PLURAL: Final = "epdrolescalers"
SCALER_SINGULAR: Final = "epdrolescaler"
SCALER_SHORT_NAMES: Final = ("epdrs",)
SCALER_CRD_NAME: Final = f"{SCALER_PLURAL}.{GROUP}"
SCALER_CRD_FILENAME: Final = f"{GROUP}_{SCALER_PLURAL}.yaml"

# Who owns a role's replica count (roles.<role>.replicasFrom).
ReplicasFrom = Literal["Spec", "Scaler"]
REPLICAS_FROM_SPEC: Final = "Spec"
REPLICAS_FROM_SCALER: Final = "Scaler"
RoleName = Literal["encoder", "prefill", "decode"]
ROLE_NAMES: Final[tuple[RoleName, ...]] = get_args(RoleName)
MAX_ROLE_REPLICAS: Final = 1024

# Event reason when the operator clamps a role's requested replicas to its bounds.
REASON_REPLICAS_CLAMPED: Final = "ReplicasClamped"
