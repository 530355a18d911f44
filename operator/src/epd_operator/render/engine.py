"""The per-role objects: a headless Service and a StatefulSet of `epd-engine` pods.

Values are written in the form the apiserver stores them (canonical quantities, explicit
`protocol: TCP`, `fieldRef.apiVersion: v1`, ...) so a read-back compares equal and a no-op
resync writes nothing.
"""

from __future__ import annotations

import math
from typing import Any

from epd_connector.launch import routing
from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.drain import ENV_DRAIN_SECONDS
from epd_connector.launch.routing import wiring_revision
from epd_connector.launch.wiring import ec_consumer_role

from ..api import constants as c
from ..api.layout import (
    MODEL_CACHE_MOUNT,
    MODEL_MOUNT,
    SHM_MOUNT,
    VOLUME_EC_SHARED,
    VOLUME_LAUNCH_CONFIG,
    VOLUME_MODEL,
    VOLUME_MODEL_CACHE,
    VOLUME_SHM,
)
from ..api.models import EPDCluster, EPDClusterSpec, ResourceRequirements, RoleSpec
from ..api.operator_config import OperatorConfig
from ..api.quantity import canonical_quantity
from .launch import role_checksum
from .names import metadata, role_name, selector_labels, stable_hash
from .podparts import PORT_NAME, configmap_volume, field_env, health_probe
from .preflight import preflight_container
from .store import encoder_pinned_bytes, raise_memory

ENGINE_CONTAINER = "engine"


def split_image(ref: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; a digest stays part of the repository."""
    if "@" in ref:
        return ref, None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, None


def engine_image(spec: EPDClusterSpec, cfg: OperatorConfig) -> str:
    image = spec.image
    if image is None:
        return cfg.engine_image
    if image.ref is not None:
        return image.ref
    default_repo, default_tag = split_image(cfg.engine_image)
    repo = image.repository or default_repo
    tag = image.tag or (default_tag if image.repository is None else None) or "latest"
    return f"{repo}:{tag}"


def ec_participant(config: LaunchConfig, role: str) -> bool:
    """Roles that read or write ECExampleConnector's shared volume: producer and consumer."""
    return role in ("encoder", ec_consumer_role(config))


def _resources(
    user: ResourceRequirements | None, extra: dict[str, int]
) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind in ("limits", "requests"):
        amounts = dict(getattr(user, kind) or {}) if user is not None else {}
        values = {k: canonical_quantity(v) for k, v in amounts.items()}
        values.update({k: str(v) for k, v in extra.items()})
        if values:
            out[kind] = dict(sorted(values.items()))
    return out


def _dump(items: list[Any] | None) -> list[dict[str, Any]]:
    return [i.model_dump(by_alias=True, exclude_none=True) for i in items or ()]


def _model_volumes(spec: EPDClusterSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    source = spec.model.source
    if source is None:
        # vLLM downloads the weights into HF_HOME: a per-pod cache on the node's disk.
        return [{"name": VOLUME_MODEL_CACHE, "emptyDir": {}}], [
            {"name": VOLUME_MODEL_CACHE, "mountPath": MODEL_CACHE_MOUNT}
        ]
    if source.pvc is not None:
        mount: dict[str, Any] = {"name": VOLUME_MODEL, "mountPath": MODEL_MOUNT, "readOnly": True}
        if source.pvc.sub_path:
            mount["subPath"] = source.pvc.sub_path
        volume = {
            "name": VOLUME_MODEL,
            "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True},
        }
        return [volume], [mount]
    if source.host_path is not None:
        volume = {
            "name": VOLUME_MODEL,
            "hostPath": {"path": source.host_path.path, "type": "Directory"},
        }
        return [volume], [{"name": VOLUME_MODEL, "mountPath": MODEL_MOUNT, "readOnly": True}]
    return [], []  # baked into the image


def pod_template(
    obj: EPDCluster, role: str, cfg: OperatorConfig, config: LaunchConfig, configmap: str
) -> dict[str, Any]:
    """The pod template of `role`; its pods mount the launch ConfigMap named `configmap`.
    Built in steps: env, volumes, the engine container, the pod spec, then the labels."""
    rs: RoleSpec = getattr(obj.spec.roles, role)
    volumes, mounts = _volumes(obj.spec, rs, role, cfg, config, configmap=configmap)
    env = _env(obj.spec, rs, role, cfg)
    container = _container(obj, rs, role, cfg, env=env, mounts=mounts)
    pod_spec = _pod_spec(obj.spec, rs, cfg, container, volumes)
    annotations = dict(rs.pod_annotations or {})
    annotations[c.ANNOTATION_CONFIG_CHECKSUM] = role_checksum(config, role)
    labels = {**dict(rs.pod_labels or {}), **selector_labels(obj.metadata.name, role)}
    # What the router pairs pods by (not a selector label: the role's workload keeps its
    # selector while its pods move from one wiring revision to the next).
    labels[c.LABEL_WIRING_REVISION] = wiring_revision(config)
    template: dict[str, Any] = {
        "metadata": {"labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }
    # The revision names this exact template; it is computed before it is added.
    labels[c.LABEL_REVISION] = stable_hash(template, 10)
    return template


def _env(
    spec: EPDClusterSpec, rs: RoleSpec, role: str, cfg: OperatorConfig
) -> list[dict[str, Any]]:
    """The pod env contract `epd-engine` reads (launch.pod), then the user's."""
    env: list[dict[str, Any]] = [
        {"name": c.ENV_ROLE, "value": role},
        {"name": c.ENV_ENGINE, "value": cfg.engine_mode},
        {"name": c.ENV_LAUNCH_CONFIG, "value": c.LAUNCH_CONFIG_PATH},
        field_env(c.ENV_POD_IP, "status.podIP"),
        field_env(c.ENV_POD_NAME, "metadata.name"),
        field_env(c.ENV_POD_NAMESPACE, "metadata.namespace"),
    ]
    if spec.model.source is None:
        env.append({"name": "HF_HOME", "value": f"{MODEL_CACHE_MOUNT}/huggingface"})
    if rs.rollout.drain_seconds:
        env.append({"name": ENV_DRAIN_SECONDS, "value": str(rs.rollout.drain_seconds)})
    return env + _dump(rs.env)  # the user's last: theirs win


def _volumes(
    spec: EPDClusterSpec,
    rs: RoleSpec,
    role: str,
    cfg: OperatorConfig,
    config: LaunchConfig,
    *,
    configmap: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, the engine container's mounts): launch config, shm, model, EC share, user's."""
    volumes: list[dict[str, Any]] = [
        configmap_volume(VOLUME_LAUNCH_CONFIG, configmap),
        {"name": VOLUME_SHM, "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm_size}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": VOLUME_LAUNCH_CONFIG, "mountPath": c.LAUNCH_CONFIG_DIR, "readOnly": True},
        {"name": VOLUME_SHM, "mountPath": SHM_MOUNT},
    ]
    model_vols, model_mounts = _model_volumes(spec)
    volumes += model_vols
    mounts += model_mounts
    shared = spec.ec_transfer.shared_storage
    if shared is not None and ec_participant(config, role):
        volumes.append(
            {"name": VOLUME_EC_SHARED, "persistentVolumeClaim": {"claimName": shared.claim_name}}
        )
        mounts.append({"name": VOLUME_EC_SHARED, "mountPath": shared.path})
    return volumes + _dump(rs.volumes), mounts + _dump(rs.volume_mounts)


def _container(
    obj: EPDCluster,
    rs: RoleSpec,
    role: str,
    cfg: OperatorConfig,
    *,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The `epd-engine` container: image, resources (+ GPUs, RDMA, Store memory), probes."""
    spec = obj.spec
    extra: dict[str, int] = {}
    if spec.device == "cuda":
        extra[c.GPU_RESOURCE] = rs.parallelism.gpus
    if spec.rdma.enabled:
        extra[spec.rdma.resource_name] = spec.rdma.count
    container: dict[str, Any] = {
        "name": ENGINE_CONTAINER,
        "image": engine_image(spec, cfg),
        "imagePullPolicy": (spec.image.pull_policy if spec.image else None)
        or cfg.image_pull_policy,
        "command": ["epd-engine"],
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": rs.port, "protocol": "TCP"}],
        "resources": raise_memory(
            _resources(rs.resources, extra),
            encoder_pinned_bytes(obj) if role == "encoder" else 0,
        ),
        # Model loading can take long: the startup probe holds off liveness until /health
        # answers once; readiness then gates traffic and liveness catches a wedged engine.
        "startupProbe": health_probe(10, math.ceil(cfg.startup_timeout_seconds / 10), 5),
        "readinessProbe": health_probe(5, 3, 5),
        "livenessProbe": health_probe(15, 4, 10),
        "volumeMounts": mounts,
    }
    if rs.rollout.drain_seconds:
        # A terminating pod finishes what it holds before vLLM gets SIGTERM (launch.drain).
        container["lifecycle"] = {"preStop": {"exec": {"command": ["epd-engine", "--drain"]}}}
    if spec.rdma.enabled:
        # Memory registration pins pages; IPC_LOCK lifts the memlock limit. Not privileged.
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    return container


def _pod_spec(
    spec: EPDClusterSpec,
    rs: RoleSpec,
    cfg: OperatorConfig,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod spec around the container: preflight, pull secrets, placement."""
    pull_secrets = list((spec.image.pull_secrets if spec.image else None) or ())
    pull_secrets += [s for s in cfg.image_pull_secrets if s not in pull_secrets]
    pod_spec: dict[str, Any] = {
        # Engines never call the Kubernetes API, and Service env vars (VLLM_PORT from a
        # Service named "vllm") would confuse vLLM's own environment parsing.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The grace period covers the preStop drain, then vLLM's own shutdown.
        "terminationGracePeriodSeconds": cfg.termination_grace_period_seconds
        + rs.rollout.drain_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    preflight = preflight_container(spec, container)
    if preflight is not None:
        pod_spec["initContainers"] = [preflight]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    if rs.node_selector:
        pod_spec["nodeSelector"] = dict(rs.node_selector)
    if rs.tolerations:
        pod_spec["tolerations"] = _dump(rs.tolerations)
    if rs.affinity:
        pod_spec["affinity"] = dict(rs.affinity)
    return pod_spec


def headless_service(obj: EPDCluster, role: str) -> dict[str, Any]:
    name = role_name(obj.metadata.name, role)
    rs: RoleSpec = getattr(obj.spec.roles, role)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(obj, name, role),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(obj.metadata.name, role),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": rs.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def revision_service(obj: EPDCluster, role: str, wiring: str, port: int) -> dict[str, Any]:
    """The headless Service of `role`'s pods of one wiring revision, which the router resolves
    for that revision (launch.routing); `port` is the role's port in that revision."""
    service = headless_service(obj, role)
    service["metadata"]["name"] = routing.revision_service(service["metadata"]["name"], wiring)
    service["spec"]["selector"] = {
        **selector_labels(obj.metadata.name, role),
        c.LABEL_WIRING_REVISION: wiring,
    }
    service["spec"]["ports"][0]["port"] = port
    return service


def statefulset(
    obj: EPDCluster, role: str, cfg: OperatorConfig, config: LaunchConfig, configmap: str
) -> dict[str, Any]:
    rs: RoleSpec = getattr(obj.spec.roles, role)
    name = role_name(obj.metadata.name, role)
    template = pod_template(obj, role, cfg, config, configmap)
    meta = metadata(obj, name, role)
    meta["labels"][c.LABEL_REVISION] = template["metadata"]["labels"][c.LABEL_REVISION]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta,
        "spec": {
            "serviceName": name,
            "replicas": rs.replicas,
            "podManagementPolicy": "Parallel",
            # reconcile.partitions lowers the partition step by step during a rollout.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "selector": {"matchLabels": selector_labels(obj.metadata.name, role)},
            "template": template,
        },
    }


def disruption_budget(obj: EPDCluster, role: str) -> dict[str, Any]:
    """The role's PodDisruptionBudget: voluntary disruptions (node drains, evictions) take
    at most `rollout.maxUnavailable` of its pods at once, the bound a rollout step keeps."""
    rs: RoleSpec = getattr(obj.spec.roles, role)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(obj, role_name(obj.metadata.name, role), role),
        "spec": {
            "maxUnavailable": rs.rollout.max_unavailable,
            "selector": {"matchLabels": selector_labels(obj.metadata.name, role)},
        },
    }
