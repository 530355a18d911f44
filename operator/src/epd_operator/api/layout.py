"""The engine and router pod layout the operator owns: volume names, mount paths and the
environment it (or the launcher) sets. The renderer builds pods from these; `api.parse`
refuses a spec that would collide with them (so they live in `api`, below both)."""

from __future__ import annotations

from collections.abc import Mapping

from . import constants as c

# Environment the operator (pod template) or the launcher (exec env) sets.
OWNED_ENV: Mapping[str, str] = {
    c.ENV_LAUNCH_CONFIG: "the operator",
    c.ENV_ROLE: "the operator",
    c.ENV_ENGINE: "the operator configuration",
    c.ENV_POD_IP: "the Downward API",
    c.ENV_POD_NAME: "the Downward API",
    c.ENV_POD_NAMESPACE: "the Downward API",
    "VLLM_HOST_IP": "the launcher (the pod IP)",
    "VLLM_MOONCAKE_BOOTSTRAP_PORT": "kvTransfer.bootstrapPort",
    "VLLM_NIXL_SIDE_CHANNEL_HOST": "the launcher (the pod IP)",
    "VLLM_NIXL_SIDE_CHANNEL_PORT": "kvTransfer.sideChannelPort",
    "HF_HOME": "the operator (model cache volume)",
}

# Volumes and mount paths the renderer adds to every engine pod.
VOLUME_LAUNCH_CONFIG = "launch-config"
VOLUME_ROUTING = "routing"  # the router's routing table (router pods only)
VOLUME_SHM = "dshm"
VOLUME_MODEL = "model"
VOLUME_MODEL_CACHE = "model-cache"
VOLUME_EC_SHARED = "ec-shared"
OWNED_VOLUMES = frozenset(
    {VOLUME_LAUNCH_CONFIG, VOLUME_SHM, VOLUME_MODEL, VOLUME_MODEL_CACHE, VOLUME_EC_SHARED}
)
# Volume kinds roles.*.volumes may use: what the chart's ValidatingAdmissionPolicy lets the
# operator's ServiceAccount mount (no Secrets, no host paths: a stolen operator token must not
# reach them through a pod; model.source.hostPath is the one read-only host path).
USER_VOLUME_SOURCES = ("configMap", "emptyDir", "persistentVolumeClaim", "ephemeral", "downwardAPI")
MODEL_MOUNT = "/models"
MODEL_CACHE_MOUNT = "/var/cache/epd"
SHM_MOUNT = "/dev/shm"
OWNED_MOUNTS = (c.LAUNCH_CONFIG_DIR, SHM_MOUNT, MODEL_MOUNT, MODEL_CACHE_MOUNT)
