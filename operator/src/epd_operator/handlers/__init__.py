"""kopf glue only: every trigger runs the same `reconcile()` through `Runtime.run`.

- create / update / resume of an EPDCluster;
- a resync loop (started at operator startup) over every EPDCluster seen, which restores
  hand edits of children nobody watches (Services, ConfigMaps);
- changes of the children we own (ConfigMaps, Services, StatefulSets, router Deployments,
  EPDRoleScalers), seen by the runtime's watch-fed caches (not by kopf: one watch per kind
  feeds both the triggers and what passes observe), so status follows pod readiness, a
  deleted or hand-edited child is restored and a role's scale target is applied (or
  reverted) without waiting for the resync;
- every EPDCluster watch event, to keep the newest body for the two triggers above;
- a liveness probe (/healthz): fails when the API refused our credentials or a watch is lost
  (judged from the watches' own signs of life: the probe makes no API request).

Handlers return nothing (kopf would store it in status) and keep no state of their own.
kopf's bookkeeping (finalizer, progress and diff-base annotations) lives under our prefix
`epd-operator.io`; see `configure()`. No handler needs a finalizer (children go with their
owner through the garbage collector; the resync is a loop, not a kopf timer, which would add
one), so an EPDCluster stays deletable while the operator is down or uninstalled.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from epd_operator.api import constants as c
from epd_operator.reconcile import login

from .runtime import Options, Runtime

__all__ = ["Options", "Runtime", "configure", "register"]

log = logging.getLogger(__name__)

WATCH_RENEW_S = 1800


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    """kopf settings of this operator (also used by the tests that run it)."""
    prefix = c.KOPF_PREFIX
    settings.persistence.finalizer = f"{prefix}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
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

    async def changed(*, reason: kopf.Reason | str, body: kopf.Body, uid: str, **_: Any) -> None:
        # Queue the pass and return: kopf's handling of this object's next events need not
        # wait for it (they only bring newer bodies, which the queued pass reads), and the
        # cause kopf built for this call is not held while 1,000 passes wait for 8 workers.
        # Failed passes are retried by the runtime with a per-object backoff, not by kopf.
        if runtime.newest(uid) is None:
            runtime.remember(uid, _snapshot(body))
        runtime.trigger(str(reason), uid)

    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*res, registry=registry, id="reconcile")(changed)

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

    def seen(*, type: str, uid: str, body: kopf.Body, **_: Any) -> None:
        # Runs before the change handlers of the same event: they find this body.
        if type == "DELETED":
            runtime.forget(uid)
        else:
            runtime.remember(uid, _snapshot(body))

    kopf.on.event(*res, registry=registry, id="remember")(seen)


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    # A plain dict for the worker thread: kopf's Body is a live view owned by the event loop.
    return dict(body.items())
