"""Revision-pinned routing: the wiring revision of a launch config and the routing table.

Why: during a rollout two launch revisions serve at once. What an encoder and its consumer (and
a prefill and its decode) must agree on is the *wiring* (model, EC/KV connectors and ports,
protocols, buffers, every role's Service, port and parallelism), not each role's own settings
(extra args, max model length...). So pods are paired by their **wiring revision**, a hash of
the launch document with each role reduced to its wiring; a change to one role's own settings
keeps it (old encoders keep serving new decoders), a wiring change makes a new one.

The operator writes, per EPDCluster, a mutable routing table (`ROUTING_KEY` in the
`<cluster>-routing` ConfigMap): every live wiring revision with its wiring view. Each revision's
pods are found through one headless Service per (role, revision) named by `revision_service`,
selecting the pods labelled with that revision. The router re-reads the table while it runs.
Pure (the operator imports it): types, the hash and the naming rule; I/O only in `load`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import LaunchConfig, parse_json, read_text

ROUTING_SCHEMA: Final = "epd.routing/v1"
ROUTING_KEY = "routing.json"
WIRING_HASH_LEN = 8
# Role fields a peer or the router depends on; every other role field is the role's own.
_ROLE_WIRING_FIELDS = ("service", "port", "parallelism")


def wiring_view(config: LaunchConfig) -> LaunchConfig:
    """`config` with each role reduced to its wiring (what pairs and the router must agree on)."""
    raw = config.model_dump(mode="json", exclude_none=True)
    for role, launch in list(raw["roles"].items()):
        raw["roles"][role] = {k: v for k, v in launch.items() if k in _ROLE_WIRING_FIELDS}
    return LaunchConfig.model_validate(raw)


def wiring_revision(config: LaunchConfig) -> str:
    """The short hash pods of one wiring share (a label value and part of a Service name)."""
    canonical = wiring_view(config).to_json().encode()
    return hashlib.sha256(canonical).hexdigest()[:WIRING_HASH_LEN]


MAX_SERVICE_NAME = 63  # a Service name is a DNS label


def revision_service(service: str, wiring: str) -> str:
    """The headless Service of one role's pods of one wiring revision. Wiring "" is the pods
    from before wiring revisions existed: the role's own Service (it selects them all)."""
    if not wiring:
        return service
    suffix = f"-w{wiring}"
    return service[: MAX_SERVICE_NAME - len(suffix)].rstrip("-") + suffix


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RevisionRoute(_Strict):
    wiring: str = Field(
        description='The wiring revision (pod label value); "" for unlabelled, older pods.'
    )
    config: LaunchConfig = Field(description="The revision's wiring view of the launch config.")
    # Fixed addresses per role instead of the revision's Services (a router run outside a
    # cluster, the data-plane tests): "host[:port]" items.
    static: dict[str, list[str]] | None = None


class RoutingTable(_Strict):
    schema_version: Literal["epd.routing/v1"] = ROUTING_SCHEMA
    revisions: list[RevisionRoute] = Field(
        default_factory=list, description="Live wiring revisions, oldest first."
    )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True)


def table_for(configs: list[LaunchConfig], legacy: LaunchConfig | None = None) -> RoutingTable:
    """The routing table of these launch configs (oldest first); one entry per wiring.
    `legacy`: the config of pods that carry no wiring label (wiring "", found through the
    role Services); listed first, so a labelled pod that those Services also list is routed
    by its own revision (discovery keeps the last entry naming an address)."""
    seen: dict[str, LaunchConfig] = {}
    if legacy is not None:
        seen[""] = wiring_view(legacy)
    for cfg in configs:
        seen.setdefault(wiring_revision(cfg), wiring_view(cfg))
    return RoutingTable(revisions=[RevisionRoute(wiring=w, config=c) for w, c in seen.items()])


def parse_table(text: str, source: str = "routing table") -> RoutingTable:
    """Parse a routing table; errors name the key."""
    return parse_json(RoutingTable, text, source)


def load_table(path: str | Path) -> RoutingTable:
    return parse_table(read_text(path, "routing table"), source=str(path))
