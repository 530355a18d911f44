"""The ONLY module that talks to the Kubernetes API (kopf's own watch streams aside).

Plain JSON over one urllib3 connection pool, with the credentials reconcile.login finds
(a kubeconfig or the pod's ServiceAccount) and no generated models in between: render
produces dicts, plan compares dicts, and the apiserver answers dicts. Every call here maps to
one RBAC rule in the Helm chart (charts/epd-operator/templates/rbac.yaml); keep the two in
step.

Writes (server-side apply, delete, status apply, event create) are counted per
(kind, verb) so the metrics endpoint and the tests can prove that a resync with nothing to do
writes nothing; reads (list, watch) are counted the same way, so they can prove it reads
nothing either (reconcile.cache keeps what the watches below deliver).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from epd_operator import __version__
from epd_operator.api import constants as c
from epd_operator.reconcile import login

log = logging.getLogger(__name__)

# Keep-alive connections in the pool: one per worker thread of the reconcile pool, plus the
# resync burst and the watches.
POOL_SIZE = 32
# Who we are in the apiserver's logs and its per-client metrics.
USER_AGENT = f"epd-operator/{__version__}"
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0  # a watch passes its own read timeout
# What is retried inside one request (client-go's habits): a connection never made, and an
# answer the apiserver marks with Retry-After (429 while it sheds load or while a new CRD's
# storage initializes; 503), whatever the verb, since it was not processed. Never a read that
# timed out or broke: that request may have been processed. The last answer is returned as is.
RETRY = urllib3.Retry(
    total=8,
    connect=3,
    read=0,
    redirect=0,
    status=5,
    other=0,
    allowed_methods=None,
    respect_retry_after_header=True,
    raise_on_status=False,
    backoff_factor=0.2,
)
# TCP keepalive with client-go's timings (probe after 30 s idle, every 15 s, give up after 9):
# a watch whose connection died silently breaks within minutes and is re-listed, without any
# API request at idle. urllib3 replaces its default options (TCP_NODELAY) with these, so they
# are kept first.
KEEPALIVE_SOCKET_OPTIONS = [
    *urllib3.connection.HTTPConnection.default_socket_options,
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 9))
        if hasattr(socket, name)  # macOS spells the idle time differently
    ),
]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def base(self, namespace: str | None) -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.kind} is namespaced: a namespace is required")
            return f"{root}/namespaces/{quote(namespace)}/{self.plural}"
        return f"{root}/{self.plural}"

    def collection(self, namespace: str | None) -> str:
        """The collection to list/watch: one namespace, or all of them when None."""
        if namespace or not self.namespaced:
            return self.base(namespace)
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{root}/{self.plural}"


# Every kind render may produce. observe() lists exactly these, so prune can only ever see
# (and delete) objects of these kinds; a test checks render emits nothing else.
CHILD_KINDS: tuple[Kind, ...] = (
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind(c.API_VERSION, c.SCALER_KIND, c.SCALER_PLURAL),
)
SCALER = CHILD_KINDS[-1]
# Kinds whose CRD may be missing (an operator upgraded without `kubectl apply -f crds/`:
# `helm upgrade` installs no new CRD). Listing one yields nothing instead of failing the pass;
# applying one fails with a message that says what to install.
OPTIONAL_KINDS = frozenset({SCALER.kind})
EPDCLUSTER = Kind(f"{c.GROUP}/{c.VERSION}", c.KIND, c.PLURAL)
NODE = Kind("v1", "Node", "nodes", namespaced=False)
EVENT = Kind("v1", "Event", "events")
# Objects per page of a cache's LIST (kube-apiserver's own page size for its clients' lists
# is 500; smaller pages bound what one page holds while parsed).
LIST_PAGE = 250
POD = Kind("v1", "Pod", "pods")  # read only (list_pods, and the pod cache's list + watch)
_BY_KIND = {(k.api_version, k.kind): k for k in (*CHILD_KINDS, EPDCLUSTER, NODE, EVENT)}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    try:
        return _BY_KIND[(str(obj.get("apiVersion")), str(obj.get("kind")))]
    except KeyError:
        raise ValueError(
            f"unsupported kind {obj.get('apiVersion')}/{obj.get('kind')}: "
            "add it to reconcile.kube.CHILD_KINDS and to the chart's RBAC"
        ) from None


class KubeError(Exception):
    """An API call failed; `status` is the HTTP code (0 when no answer came back)."""

    def __init__(self, verb: str, what: str, status: int, message: str) -> None:
        super().__init__(f"{verb} {what}: HTTP {status}: {message}")
        self.verb = verb
        self.what = what
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404


class WriteCounter:
    """Thread-safe count of API writes by (kind, verb), with an optional listener (metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self.listeners: list[Callable[[str, str], None]] = []

    def add(self, kind: str, verb: str) -> None:
        with self._lock:
            self._counts[(kind, verb)] += 1
        for fn in self.listeners:
            fn(kind, verb)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


# (method, path with query, headers, JSON-able body or None) -> (HTTP status, raw body)
Transport = Callable[[str, str, Mapping[str, str], Any], tuple[int, bytes]]
# (path with query, headers, read timeout in seconds) -> (HTTP status, the response's lines
# as they arrive; the whole body when the status is not 2xx). Closing the iterator ends the
# request.
Streamer = Callable[[str, Mapping[str, str], float], tuple[int, Iterator[str]]]


@dataclass(frozen=True)
class Listing:
    """One LIST: the items (apiVersion/kind filled in) and the collection's resourceVersion,
    from which a watch continues."""

    items: list[dict[str, Any]]
    resource_version: str


def _no_streamer(
    path: str, headers: Mapping[str, str], timeout: float
) -> tuple[int, Iterator[str]]:
    raise KubeError("watch", path, 0, "this Kube has no streaming transport")


class Kube:
    """Synchronous API access for one operator process (thread-safe; reconcile runs in a
    thread pool)."""

    def __init__(
        self,
        transport: Transport,
        field_manager: str = c.FIELD_MANAGER,
        streamer: Streamer = _no_streamer,
    ) -> None:
        self._transport = transport
        self._streamer = streamer
        self.field_manager = field_manager
        self.writes = WriteCounter()
        # Reads by (kind, verb): list, watch (one per watch request, not per event).
        self.reads = WriteCounter()
        # The last request the apiserver answered 401 (our credentials stopped working:
        # the ServiceAccount or its token is gone), until a request succeeds again. The
        # liveness probe reads it instead of asking the API itself.
        self.unauthorized: KubeError | None = None

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """The credentials `login.login` finds (a named kubeconfig, the pod's ServiceAccount,
        else KUBECONFIG), over one keep-alive pool; a 401 logs in again, once."""
        return cls.over(Session(lambda: login.login(kubeconfig, context)))

    @classmethod
    def over(cls, session: Session) -> Kube:
        """A Kube whose requests and watches go through `session`."""

        def transport(
            method: str, path: str, headers: Mapping[str, str], body: Any
        ) -> tuple[int, bytes]:
            resp = session.request(method, path, headers, encode(body), preload=True)
            return resp.status, resp.data

        def streamer(
            path: str, headers: Mapping[str, str], timeout: float
        ) -> tuple[int, Iterator[str]]:
            resp = session.request("GET", path, headers, None, preload=False, read_timeout=timeout)
            if not 200 <= resp.status < 300:
                try:
                    return resp.status, iter([resp.read().decode(errors="replace")])
                finally:
                    resp.release_conn()
            return resp.status, _stream_lines(resp)

        return cls(transport, streamer=streamer)

    # -- plumbing -----------------------------------------------------------------------------

    def _call(
        self,
        verb: str,
        what: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            status, raw = self._transport(method, path, headers, body)
        except Exception as exc:  # connection refused, TLS, timeouts: one error type upward
            raise KubeError(verb, what, 0, str(exc)) from exc
        self._answered(verb, what, status, raw)
        out: dict[str, Any] = json.loads(raw) if raw else {}
        return out

    def _answered(self, verb: str, what: str, status: int, raw: bytes) -> None:
        """Raise KubeError for a non-2xx answer; keep track of refused credentials."""
        if 200 <= status < 300:
            self.unauthorized = None
            return
        err = KubeError(verb, what, status, _api_message(raw))
        if status == 401:
            self.unauthorized = err
        raise err

    # -- reads --------------------------------------------------------------------------------

    def list_children(self, namespace: str, instance: str) -> list[dict[str, Any]]:
        """Every object of CHILD_KINDS carrying our labels for `instance` in `namespace`."""
        selector = f"{c.LABEL_INSTANCE}={instance},{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
        out: list[dict[str, Any]] = []
        for kind in CHILD_KINDS:
            self.reads.add(kind.kind, "list")
            try:
                body = self._call(
                    "list",
                    f"{kind.plural} in {namespace}",
                    "GET",
                    kind.base(namespace),
                    query={"labelSelector": selector},
                )
            except KubeError as exc:
                if exc.not_found and kind.kind in OPTIONAL_KINDS:
                    continue
                raise
            for item in body.get("items") or []:
                # List items omit apiVersion/kind; plan keys objects by them.
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                out.append(item)
        return out

    def list_pods(self, namespace: str, instance: str) -> list[dict[str, Any]]:
        """The engine pods of `instance` (read-only: their status carries the transport
        preflight reports; pods are never written, so they are no CHILD_KINDS)."""
        selector = f"{c.LABEL_INSTANCE}={instance},{c.LABEL_NAME}={c.APP_NAME}"
        self.reads.add(POD.kind, "list")
        body = self._call(
            "list",
            f"pods in {namespace}",
            "GET",
            POD.base(namespace),
            query={"labelSelector": selector},
        )
        return list(body.get("items") or [])

    def list_nodes(self) -> list[dict[str, Any]]:
        self.reads.add(NODE.kind, "list")
        body = self._call("list", "nodes", "GET", NODE.base(None))
        return list(body.get("items") or [])

    def list_kind(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str = "",
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Listing:
        """Every object of `kind` in `namespace` (all namespaces: None) matching the label
        `selector`: the start (and re-list) of a watch-fed cache. Read in pages of
        LIST_PAGE objects (`limit` / `continue`, one consistent snapshot), each item passed
        through `keep` as its page arrives: only one page of whole objects is held at a time,
        never a fleet's listing (the engine pods of 1,000 clusters) as parsed JSON."""
        path = kind.collection(namespace)
        what = f"{kind.plural} in {namespace or 'all namespaces'}"
        items: list[dict[str, Any]] = []
        rv, token = "", ""
        while True:
            query = {"limit": str(LIST_PAGE)}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            self.reads.add(kind.kind, "list")
            body = self._call("list", what, "GET", path, query=query)
            meta = body.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            for item in body.get("items") or []:
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(keep(item) if keep is not None else item)
            token = str(meta.get("continue") or "")
            if not token:
                return Listing(items, rv)

    def watch_kind(
        self,
        kind: Kind,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_s: int,
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) of `kind` after `resource_version`, with bookmarks,
        for at most `timeout_s` (the apiserver ends the watch then). A watch that can no
        longer continue from `resource_version` raises KubeError with status 410: re-list."""
        path = kind.collection(namespace)
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_s),
        }
        if selector:
            query["labelSelector"] = selector
        what = f"{kind.plural} in {namespace or 'all namespaces'}"
        self.reads.add(kind.kind, "watch")
        try:
            status, lines = self._streamer(
                f"{path}?{urlencode(query)}", {"Accept": "application/json"}, timeout_s + 30.0
            )
        except KubeError:
            raise
        except Exception as exc:
            raise KubeError("watch", what, 0, str(exc)) from exc
        raw = b"" if 200 <= status < 300 else "".join(lines).encode()
        self._answered("watch", what, status, raw)
        try:
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    err = event.get("object") or {}
                    raise KubeError(
                        "watch", what, int(err.get("code") or 0), str(err.get("message") or err)
                    )
                obj = event.get("object") or {}
                obj.setdefault("apiVersion", kind.api_version)
                obj.setdefault("kind", kind.kind)
                yield event
        except KubeError:
            raise
        except Exception as exc:  # the connection broke mid-stream
            raise KubeError("watch", what, 0, str(exc)) from exc
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()

    # -- writes -------------------------------------------------------------------------------

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of one whole object (we own every field we send; force takes
        fields back from hand edits)."""
        kind = kind_of(obj)
        meta = obj.get("metadata") or {}
        name, ns = str(meta.get("name")), meta.get("namespace")
        what = f"{kind.kind} {ns}/{name}"
        self.writes.add(kind.kind, "apply")
        return self._call(
            "apply",
            what,
            "PATCH",
            f"{kind.base(ns)}/{quote(name)}",
            query={"fieldManager": self.field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )

    def delete(self, obj: Mapping[str, Any]) -> None:
        kind = kind_of(obj)
        meta = obj.get("metadata") or {}
        name, ns = str(meta.get("name")), meta.get("namespace")
        self.writes.add(kind.kind, "delete")
        # Background: the garbage collector removes the pods; we do not wait for them.
        body = {"propagationPolicy": "Background"}
        uid = meta.get("uid")
        if uid:
            # Only the object we planned to delete, never a same-named successor.
            body["preconditions"] = {"uid": uid}  # type: ignore[assignment]
        try:
            self._call(
                "delete",
                f"{kind.kind} {ns}/{name}",
                "DELETE",
                f"{kind.base(ns)}/{quote(name)}",
                body=body,
            )
        except KubeError as exc:
            if not exc.not_found:
                raise

    def apply_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of the EPDCluster status subresource. Fields we set before and
        no longer set (e.g. a removed role) are dropped by the apiserver."""
        self.writes.add(c.KIND, "apply-status")
        body = {
            "apiVersion": EPDCLUSTER.api_version,
            "kind": EPDCLUSTER.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        return self._call(
            "apply status",
            f"{c.KIND} {namespace}/{name}",
            "PATCH",
            f"{EPDCLUSTER.base(namespace)}/{quote(name)}/status",
            query={"fieldManager": self.field_manager, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set an EPDRoleScaler's spec.replicas through its /scale subresource, as HPA does
        (an update, not an apply: our field manager's apply never owns the number)."""
        self.writes.add(SCALER.kind, "scale")
        return self._call(
            "scale",
            f"{SCALER.kind} {namespace}/{name}",
            "PATCH",
            f"{SCALER.base(namespace)}/{quote(name)}/scale",
            query={"fieldManager": self.field_manager},
            body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def apply_scaler_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply of an EPDRoleScaler's status subresource."""
        self.writes.add(SCALER.kind, "apply-status")
        body = {
            "apiVersion": SCALER.api_version,
            "kind": SCALER.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        return self._call(
            "apply status",
            f"{SCALER.kind} {namespace}/{name}",
            "PATCH",
            f"{SCALER.base(namespace)}/{quote(name)}/status",
            query={"fieldManager": self.field_manager, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )

    def create_event(
        self,
        involved: Mapping[str, Any],
        event_type: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        """One core/v1 Event about `involved` (shown by `kubectl describe epdc`)."""
        meta = involved.get("metadata") or {}
        ns = str(meta.get("namespace"))
        ts = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": ns,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": c.FIELD_MANAGER},
            "reportingComponent": c.FIELD_MANAGER,
            "reportingInstance": c.FIELD_MANAGER,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        self.writes.add("Event", "create")
        self._call("create event", f"Event in {ns}", "POST", EVENT.base(ns), body=event)


def _stream_lines(resp: urllib3.BaseHTTPResponse) -> Iterator[str]:
    """The lines of a streaming response, each as soon as its newline arrives (the apiserver
    flushes one watch event per line, in its own chunk); the connection goes back to the pool
    when the iterator is closed or exhausted."""
    pending = bytearray()
    try:
        for chunk in resp.stream(None):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                pending += chunk[start:end]
                line = pending.decode(errors="replace")
                pending.clear()
                start = end + 1
                yield line
            pending += chunk[start:]
        if pending:
            yield pending.decode(errors="replace")
    finally:
        resp.close()
        resp.release_conn()


def encode(body: Any) -> bytes | None:
    """A request body as compact JSON (JSON is YAML too: server-side apply takes it)."""
    return None if body is None else json.dumps(body, separators=(",", ":")).encode()


class Session:
    """Authenticated HTTP to one apiserver: a keep-alive urllib3 pool for one set of
    credentials, replaced when the apiserver refuses them (401) and logging in again finds
    new ones."""

    def __init__(
        self, login_now: Callable[[], login.Credentials], pool_size: int = POOL_SIZE
    ) -> None:
        self._login = login_now
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._creds, self._pool = self._connect()

    def _connect(self) -> tuple[login.Credentials, urllib3.PoolManager]:
        creds = self._login()
        ssl_args: dict[str, Any] = {}
        if creds.server.startswith("https:"):
            ssl_args["ssl_context"] = creds.ssl_context()
            if creds.insecure:
                ssl_args.update(cert_reqs="CERT_NONE", assert_hostname=False)
                # Said once here, not by urllib3 on every request.
                log.warning("TLS verification is off for %s (%s)", creds.server, creds.origin)
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        pool_args: dict[str, Any] = {
            "maxsize": self._pool_size,
            "retries": RETRY,
            "socket_options": KEEPALIVE_SOCKET_OPTIONS,
            **ssl_args,
        }
        if creds.proxy_url:
            return creds, urllib3.ProxyManager(creds.proxy_url, **pool_args)
        return creds, urllib3.PoolManager(**pool_args)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        preload: bool,
        read_timeout: float = REQUEST_TIMEOUT_S,
    ) -> urllib3.BaseHTTPResponse:
        """`method` `path` (with its query) as sent; the response unread when not `preload`
        (the caller reads, then releases it). Connection failures raise urllib3's errors."""
        for attempt in (1, 2):
            with self._lock:
                creds, pool = self._creds, self._pool
            resp = pool.request(
                method,
                creds.server.rstrip("/") + path,
                headers={"User-Agent": USER_AGENT, **headers, **creds.headers()},
                body=body,
                preload_content=preload,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=read_timeout),
            )
            if resp.status != 401 or attempt == 2 or not self._relogin(creds):
                return resp
            resp.drain_conn()
            resp.release_conn()
        raise AssertionError("unreachable")

    def _relogin(self, refused: login.Credentials) -> bool:
        """Log in again after `refused` got a 401; True when that found other credentials
        (another thread may have done it already: then those are used)."""
        with self._lock:
            if self._creds != refused:
                return True
            try:
                creds, pool = self._connect()
            except (login.LoginError, OSError) as exc:  # OSError: unreadable files, bad PEM
                log.warning("logging in again after HTTP 401 failed: %s", exc)
                return False
            if creds == refused:
                return False
            log.info("logged in again after HTTP 401: %s", creds.origin)
            self._creds, self._pool = creds, pool
            return True


def _api_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode(errors="replace")[:500]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:500]
