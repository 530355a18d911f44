"""kopf glue only: every trigger runs the same `reconcile()` through `Runtime.run`.

- create / update / resume of an EPDCluster, read from its watch events by
  `runtime.cause_of` (kopf's event handler: kopf's own change handlers would write a diff-base
  annotation on every create and update, one API request and a copy of the spec per object,
  and keep a cause per object while 1,000 of them change at once);
- a resync loop (started at operator startup) over every EPDCluster seen, which restores
  hand edits of children nobody watches (Services, ConfigMaps);
- changes of the children we own (ConfigMaps, Services, StatefulSets, router Deployments,
  EPDRoleScalers), seen by the runtime's watch-fed caches (not by kopf: one watch per kind
  feeds both the triggers and what passes observe), so status follows pod readiness, a
  deleted or hand-edited child is restored and a role's scale target is applied (or
  reverted) without waiting for the resync;
- every EPDCluster watch event also keeps the newest body, which every pass reads;
- a liveness probe (/healthz): fails when the API refused our credentials or a watch is lost
  (judged from the watches' own signs of life: the probe makes no API request).

Handlers return nothing (kopf would store it in status) and keep no state of their own.
kopf writes nothing to EPDClusters: no change handler (so no progress or diff-base
annotations; objects from older releases may still carry a stale
`epd-operator.io/last-handled-configuration`, which nothing reads) and no finalizer (children
go with their owner through the garbage collector; the resync is a loop, not a kopf timer,
which would add one), so an EPDCluster stays deletable while the operator is down or
uninstalled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from epd_operator.api import constants as c
from epd_operator.reconcile import login

from .runtime import Options, Runtime, cause_of

__all__ = ["Options", "Runtime", "configure", "register"]

log = logging.getLogger(__name__)

WATCH_RENEW_S = 1800


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    """kopf settings of this operator (also used by the tests that run it)."""
    # Never added (no handler needs one), but named under our prefix should one ever be.
    settings.persistence.finalizer = f"{c.KOPF_PREFIX}/finalizer"
    # kopf would post an Event per handler run (every resync): we post our own, on flips.
    settings.posting.enabled = False
    # One replica (Deployment strategy Recreate): no peering objects, no extra RBAC.
    settings.peering.standalone = True
    settings.peering.mandatory = False
    # No cluster-wide CRD/namespace scanning: least privilege; the namespaces are explicit.
    settings.scanning.disabled = True
    settings.execution.max_workers = options.workers
    settings.networking.request_timeout = 60
    # The EPDCluster watch: renewed every 30 min (the apiserver's own shortest default), each
    # renewal being one request at idle. kopf's inactivity timeout (reconnect when no event or
    # bookmark came for 70 s by default) would add requests at idle: the apiserver's bookmarks
    # may skip minutes on a quiet kind. A dead connection ends at the client timeout at worst.
    settings.watching.server_timeout = WATCH_RENEW_S
    settings.watching.client_timeout = WATCH_RENEW_S + 60
    settings.watching.inactivity_timeout = WATCH_RENEW_S + 60


def connection_info(**_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: what `login.login()` finds, as kopf's ConnectionInfo."""
    try:
        creds = login.login()
    except login.LoginError as exc:
        raise kopf.LoginError(str(exc)) from exc
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        ca_data=creds.ca_pem,
        insecure=creds.insecure,
        username=creds.username,
        password=creds.password,
        token=creds.token,
        certificate_path=creds.cert_file,
        certificate_data=creds.cert_pem,
        private_key_path=creds.key_file,
        private_key_data=creds.key_pem,
        default_namespace=creds.namespace,
        proxy_url=creds.proxy_url,
    )


def register(registry: kopf.OperatorRegistry, runtime: Runtime) -> None:
    """Register every handler of the operator on `registry`, bound to `runtime`."""
    res = (c.GROUP, c.VERSION, c.PLURAL)

    # The same credentials reconcile.kube uses (kopf calls this again after a 401).
    kopf.on.login(registry=registry, id="login")(connection_info)

    async def start(**_: Any) -> None:
        runtime.start_resync()

    async def stop(**_: Any) -> None:
        await runtime.stop_resync()

    kopf.on.startup(registry=registry, id="start-resync")(start)

    async def healthy(**_: Any) -> dict[str, int]:
        # /healthz: a failing probe makes kopf answer 500 (PERMANENT: no kopf retry loop).
        # No API request: it judges what the watches and the last answers said.
        return runtime.check_health()

    kopf.on.probe(registry=registry, id="api", errors=kopf.ErrorsMode.PERMANENT)(healthy)
    kopf.on.cleanup(registry=registry, id="stop-resync")(stop)

    async def seen(*, type: str | None, uid: str, body: kopf.Body, **_: Any) -> None:
        # In the event loop (kopf runs sync handlers in threads): `trigger` queues a task.
        # type None: the object came in a listing (start, or a re-list after a broken watch).
        if type == "DELETED":
            runtime.forget(uid)
            return
        held, new = runtime.newest(uid), _snapshot(body)
        runtime.remember(uid, new)
        # Queue the pass and return: this object's next events need not wait for it (they
        # only bring newer bodies, which the queued pass reads). Failed passes are retried
        # by the runtime with a per-object backoff, not by kopf.
        cause = cause_of(held, new, listed=type is None)
        if cause is not None:
            runtime.trigger(cause, uid)

    kopf.on.event(*res, registry=registry, id="events")(seen)


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    # A plain dict for the worker thread: kopf's Body is a live view owned by the event loop.
    return dict(body.items())
