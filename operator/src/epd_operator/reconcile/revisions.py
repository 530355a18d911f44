"""Launch revisions over time: which ConfigMap each workload mounts, and which old ones go.

Pure functions of the rendered launch config and the observed objects (docs/rollouts.md):

- `launch_pins`: a workload whose live template already reads a view of the launch config
  equal to the new one (same checksum annotation) keeps mounting the ConfigMap it mounts, so
  a change that only another role reads does not restart its pods. This also carries pods
  of an operator from before revision-named ConfigMaps across the upgrade without a restart.
- `live_launch_configs`: the launch configs the cluster's launch ConfigMaps still hold, which
  feed the router's routing table (every wiring revision whose pods may still serve).
- `retained_launch_configs`: an old launch ConfigMap is deleted only when no template, no pod
  and no unfinished StatefulSet/Deployment rollout can still need it; of the unreferenced
  revision-named ones the newest `history` stay (a rollback to them reuses them by name).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from epd_connector.launch.config import CONFIGMAP_KEY, LaunchConfig, LaunchConfigError, parse
from epd_operator.api import constants as c
from epd_operator.api.layout import VOLUME_LAUNCH_CONFIG
from epd_operator.render.launch import role_checksum, router_checksum

from .status import not_rolled_out

log = logging.getLogger(__name__)

# Unreferenced revision-named launch ConfigMaps kept per EPDCluster, newest first.
LAUNCH_HISTORY = 2


def _component(obj: Mapping[str, Any]) -> str | None:
    """The workload's component (a role or the router), or None for other objects."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if obj.get("kind") == "StatefulSet" and labels.get(c.LABEL_ROLE):
        return str(labels[c.LABEL_ROLE])
    if obj.get("kind") == "Deployment" and labels.get(c.LABEL_COMPONENT) == c.COMPONENT_ROUTER:
        return c.COMPONENT_ROUTER
    return None


def mounted_launch_config(pod_spec: Mapping[str, Any]) -> str | None:
    """The launch ConfigMap a pod spec (or a template's spec) mounts."""
    for vol in pod_spec.get("volumes") or []:
        if vol.get("name") == VOLUME_LAUNCH_CONFIG:
            cm = (vol.get("configMap") or {}).get("name")
            return str(cm) if cm else None
    return None


def _template(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((obj.get("spec") or {}).get("template")) or {}


def _is_launch_configmap(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return obj.get("kind") == "ConfigMap" and labels.get(c.LABEL_COMPONENT) == c.COMPONENT_CONFIG


def launch_pins(config: LaunchConfig, observed: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """component -> the live ConfigMap it keeps mounting (components absent: the current one)."""
    objs = list(observed)
    present = {str((o.get("metadata") or {}).get("name")) for o in objs if _is_launch_configmap(o)}
    wanted: dict[str, str] = {r: role_checksum(config, r) for r in config.present_roles()}
    wanted[c.COMPONENT_ROUTER] = router_checksum(config)
    pins: dict[str, str] = {}
    for obj in objs:
        component = _component(obj)
        if component not in wanted:
            continue
        template = _template(obj)
        checksum = ((template.get("metadata") or {}).get("annotations") or {}).get(
            c.ANNOTATION_CONFIG_CHECKSUM
        )
        mounted = mounted_launch_config(template.get("spec") or {})
        if checksum == wanted[component] and mounted in present:
            pins[str(component)] = str(mounted)
    return pins


def live_launch_configs(
    observed: Iterable[Mapping[str, Any]],
) -> tuple[list[LaunchConfig], LaunchConfig | None]:
    """(configs of the wiring-labelled launch ConfigMaps, oldest first; the newest config of
    the ones without a wiring label, whose pods carry none either, or None). A ConfigMap that
    does not parse is left out (its pods cannot have started from it either)."""
    labelled: list[tuple[str, LaunchConfig]] = []
    legacy: tuple[str, LaunchConfig] | None = None
    for obj in observed:
        if not _is_launch_configmap(obj):
            continue
        meta = obj.get("metadata") or {}
        try:
            config = parse(
                str((obj.get("data") or {}).get(CONFIGMAP_KEY, "")), str(meta.get("name"))
            )
        except LaunchConfigError as exc:
            log.warning("launch ConfigMap left out of the routing table: %s", exc)
            continue
        born = str(meta.get("creationTimestamp") or "")
        if c.LABEL_WIRING_REVISION in (meta.get("labels") or {}):
            labelled.append((born, config))
        elif legacy is None or born >= legacy[0]:
            legacy = (born, config)
    labelled.sort(key=lambda pair: pair[0])
    return [cfg for _, cfg in labelled], legacy[1] if legacy else None


def retained_launch_configs(
    candidates: Sequence[Mapping[str, Any]],
    referenced: Iterable[str],
    workloads: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    history: int = LAUNCH_HISTORY,
) -> set[str]:
    """Names among the prune `candidates` (launch ConfigMaps not rendered any more) to keep.

    `referenced` are the ConfigMaps the desired templates mount; `workloads` the observed
    StatefulSets/Deployments (while one has not finished rolling out, its controller may
    still recreate a pod from an older template, so nothing goes); `pods` the cluster's pods.
    """
    names = [str((o.get("metadata") or {}).get("name")) for o in candidates]
    if not_rolled_out(workloads):
        return set(names)
    keep = set(referenced) | {
        m for p in pods if (m := mounted_launch_config(p.get("spec") or {})) is not None
    }
    kept = {n for n in names if n in keep}
    spare = sorted(
        (
            o
            for o in candidates
            if str((o.get("metadata") or {}).get("name")) not in keep
            and c.LABEL_LAUNCH_REVISION in ((o.get("metadata") or {}).get("labels") or {})
        ),
        key=lambda o: (
            str((o.get("metadata") or {}).get("creationTimestamp") or ""),
            str((o.get("metadata") or {}).get("name")),
        ),
        reverse=True,
    )
    kept |= {str((o.get("metadata") or {}).get("name")) for o in spare[:history]}
    return kept
