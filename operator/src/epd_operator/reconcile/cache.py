"""Watch-fed caches: what `reconcile` observes instead of asking the apiserver every pass.

- `ChildCache`: every object of `kube.CHILD_KINDS` carrying our managed-by label, indexed by
  owner ((namespace, instance label)); one watch per kind (per served namespace, or
  cluster-wide when all namespaces are served).
- `NodeCache`: every node, reduced to what the capacity check reads (`capacity.slim`), with a
  `capacity.Capacity` index rebuilt only when a node changed in a way the check can see.
- `PodCache`: our engine pods, reduced to what a pass reads of them (`PodCache.keep`: name,
  owner / role / revision labels, deletion, readiness, the launch ConfigMap mounted, the
  preflight init container's report), by owner. Started by the first pass that needs pods
  (a cluster with rdma.enabled, a rollout, an old launch ConfigMap to prune), so a fleet
  that never rolls and has no RDMA watches no pods at all.

Each (kind, namespace) has a `Reflector` thread: LIST, then WATCH from the list's
resourceVersion with bookmarks (the apiserver's own resumable stream, one event per line,
read in `kube.py`, the only module that talks to the API).
A watch that ends on its timeout resumes from the last resourceVersion (no LIST); a watch that
cannot resume (410 Gone) or breaks re-lists, and a re-list *replaces* what the cache held, so
an event missed in the gap (a child deleted meanwhile) is still seen: the object is gone
from the new listing.

The apiserver is therefore read at start, on re-list, and while a cache is known stale
(between a broken watch and its re-list; and before the first listing): `children()` /
`capacity()` answer None then and the caller reads the API directly. After our own writes
the caller `note`s what the apiserver answered, so the next pass does not act on a cache
that has not seen the watch event yet; the event, when it comes, is no news (same
resourceVersion) and triggers nothing.

`on_change(namespace, instance)` is called (from a reflector thread) for every change of a
child that is news: the handlers turn it into a reconcile of the owner.

Each reflector also says whether it is alive (`Reflector.state()`, judged by
`reconcile.health`): when the last listing, event or bookmark came, when its current watch
must have ended, and whether the apiserver refused our credentials, so the liveness probe
needs no API request.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from epd_connector.launch.preflight import INIT_CONTAINER
from epd_operator.api import constants as c
from epd_operator.api.layout import VOLUME_LAUNCH_CONFIG

from .capacity import Capacity
from .capacity import slim as slim_node
from .health import WatchState
from .kube import CHILD_KINDS, NODE, OPTIONAL_KINDS, POD, Kind, Kube, KubeError
from .revisions import mounted_launch_config

log = logging.getLogger(__name__)

CHILD_SELECTOR = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY}"
# Pods carry no managed-by label (their StatefulSet's controller makes them): our app's name.
POD_SELECTOR = f"{c.LABEL_NAME}={c.APP_NAME}"
# The pod labels a pass reads: owner, role, and the revisions (the StatefulSet controller's,
# which the rollout planner compares with updateRevision, and ours).
POD_LABELS = (
    c.LABEL_INSTANCE,
    c.LABEL_ROLE,
    "controller-revision-hash",
    c.LABEL_REVISION,
    c.LABEL_LAUNCH_REVISION,
    c.LABEL_WIRING_REVISION,
)
# A watch is renewed after a random time in this range (seconds), so the kinds' renewals
# spread out; nothing is re-listed then. The range is the apiserver's own default for a watch
# that names no timeout (--min-request-timeout 1800 s, times 1 to 2): a renewal is a request
# at idle, and a dead connection is found by TCP keepalive (kube.py), not by renewing often.
WATCH_TIMEOUT_S = (1800, 3600)
# A watch whose stream has not ended this long after its timeout is stuck (the read timeout
# ends it 30 s after the timeout; this adds the re-list's own time).
WATCH_OVERRUN_S = 90.0
# A kind whose CRD is missing (see kube.OPTIONAL_KINDS) is looked for again this often.
ABSENT_RETRY_S = 60.0
RETRY_MAX_S = 30.0

# Fastest zlib level: level 6 saves another 5% of the bytes for 10% more time.
ZLIB_LEVEL = 1

Key = tuple[str, str, str]  # (kind, namespace, name)
Owner = tuple[str, str]  # (namespace, instance)


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))


def _rv(obj: Mapping[str, Any] | None) -> int | None:
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def _owner(obj: Mapping[str, Any]) -> Owner | None:
    meta = obj.get("metadata") or {}
    inst = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
    return (str(meta.get("namespace") or ""), str(inst)) if inst else None


def newer(incoming: Mapping[str, Any], held: Mapping[str, Any] | None) -> bool:
    """Whether `incoming` may replace `held`: never an older resourceVersion (a watch event
    that predates what our own write already put there). Opaque versions: always."""
    return _not_older(_rv(incoming), _rv(held))


def _not_older(incoming: int | None, held: int | None) -> bool:
    return incoming is None or held is None or incoming >= held


class Reflector:
    """LIST + WATCH of one (kind, namespace) into a sink, in its own daemon thread."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str | None,
        selector: str,
        sink: _Sink,
        *,
        watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.selector = selector
        self.sink = sink
        self.watch_timeout_s = watch_timeout_s
        self.lists = 0  # how many times this reflector listed (start + re-lists)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Liveness (monotonic seconds): the last sign of life of the stream (a listing, an
        # event or a bookmark); the time by which the current watch must have ended; the
        # bookmarks seen (what keeps a quiet stream's resourceVersion current); the last
        # failure's status.
        self.alive_at: float | None = None
        self.deadline: float | None = None
        self.bookmarks = 0
        self.error_status: int | None = None

    def state(self) -> WatchState:
        """What `health.watch_problems` judges."""
        thread = self._thread
        return WatchState(
            name=f"{self.kind.plural} in {self.namespace or 'all namespaces'}",
            running=thread is not None and thread.is_alive() and not self._stop.is_set(),
            alive_at=self.alive_at,
            deadline=self.deadline,
            error_status=self.error_status,
        )

    @property
    def scope(self) -> tuple[str, str | None]:
        return (self.kind.kind, self.namespace)

    def start(self) -> None:
        if self._thread is None:
            self.alive_at = time.monotonic()  # starting counts: the first listing follows
            self._thread = threading.Thread(
                target=self._run,
                daemon=True,
                name=f"watch-{self.kind.plural}-{self.namespace or 'all'}",
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.run_once()
                delay = 1.0
            except KubeError as exc:
                self.deadline = None
                if exc.not_found and self.kind.kind in OPTIONAL_KINDS:
                    # No CRD: nothing of the kind can exist; look again later.
                    self.sink.replace(self.scope, [])
                    self.sink.set_synced(self.scope, True)
                    self.alive_at, self.error_status = time.monotonic(), None
                    self._stop.wait(ABSENT_RETRY_S)
                    continue
                self.error_status = exc.status
                self.sink.set_synced(self.scope, False)
                log.warning("cache of %s: %s; re-listing in %.0fs", self.kind.plural, exc, delay)
                self._stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)
            except Exception:  # a bug must not silently freeze the cache
                self.deadline = None
                self.sink.set_synced(self.scope, False)
                log.exception("cache of %s crashed; re-listing", self.kind.plural)
                self._stop.wait(delay)
                delay = min(RETRY_MAX_S, delay * 2)

    def run_once(self) -> None:
        """One LIST, then WATCH until the stop flag or an error (raised: the caller re-lists).
        A 410 (too old to resume) returns normally: re-list at once."""
        # Each item kept (slimmed) as its page arrives: a fleet's listing is never held whole.
        listing = self.kube.list_kind(self.kind, self.namespace, self.selector, keep=self.sink.keep)
        self.lists += 1
        self.alive_at, self.error_status = time.monotonic(), None
        self.sink.replace(self.scope, listing.items, kept=True)
        self.sink.set_synced(self.scope, True)
        rv = listing.resource_version
        while True:  # at least one watch, so a stopped reflector still drains one stream
            timeout_s = random.randint(*self.watch_timeout_s)
            self.deadline = time.monotonic() + timeout_s + WATCH_OVERRUN_S
            try:
                for event in self.kube.watch_kind(
                    self.kind, self.namespace, self.selector, rv, timeout_s
                ):
                    self.alive_at = time.monotonic()
                    obj = event.get("object") or {}
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if event.get("type") == "BOOKMARK":
                        self.bookmarks += 1
                    else:
                        self.sink.event(str(event.get("type")), obj)
            except KubeError as exc:
                if exc.status == 410:
                    log.info("cache of %s: watch expired; re-listing", self.kind.plural)
                    self.sink.set_synced(self.scope, False)
                    return
                raise
            self.alive_at = time.monotonic()
            if self._stop.is_set():
                return
            # The watch timed out normally: resume from the last resourceVersion.


class _Sink:
    """What a Reflector feeds: the store of one cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objs: dict[Key, Any] = {}  # key -> entry (`keep`)
        self._synced: dict[tuple[str, str | None], bool] = {}

    def set_synced(self, scope: tuple[str, str | None], synced: bool) -> None:
        with self._lock:
            self._synced[scope] = synced

    def synced(self, scopes: Iterable[tuple[str, str | None]]) -> bool:
        with self._lock:
            return all(self._synced.get(s, False) for s in scopes)

    def _in_scope(self, key: Key, scope: tuple[str, str | None]) -> bool:
        return key[0] == scope[0] and (scope[1] is None or key[1] == scope[1])

    def replace(
        self, scope: tuple[str, str | None], items: list[dict[str, Any]], kept: bool = False
    ) -> None:
        """A (re-)listing: exactly `items` is what exists in `scope` now (`kept`: already
        passed through `keep`). Objects missing from it were deleted while we were not
        watching: they go, as if their DELETED event had come."""
        entries = items if kept else [self.keep(o) for o in items]
        fresh = {self._entry_key(e): e for e in entries}
        with self._lock:
            gone = [k for k in self._objs if self._in_scope(k, scope) and k not in fresh]
            changed = []
            for k in gone:
                changed.append(self._objs.pop(k))
            for k, o in fresh.items():
                if self._objs.get(k) != o:
                    changed.append(o)
                self._objs[k] = o
            self._after(changed)
        self._announce(changed)

    def event(self, etype: str, obj: Mapping[str, Any]) -> None:
        k = _key(obj)
        if etype == "DELETED":
            with self._lock:
                held = self._objs.get(k)
                if held is None or not self._fresher(obj, held):
                    return
                del self._objs[k]
                self._after([held])
            self._announce([held])
            return
        # Judged by resourceVersion before `keep` (which compresses a child): most events of a
        # busy fleet are the echo of our own write, already held at that version.
        with self._lock:
            held = self._objs.get(k)
            if held is not None and not self._newer_version(obj, held):
                return
        kept = self.keep(obj)
        with self._lock:
            held = self._objs.get(k)
            if not self._fresher(obj, held) or held == kept:
                return  # older than, or the same as, what we hold: no news
            self._objs[k] = kept
            self._after([kept])
        self._announce([kept])

    def note(self, obj: Mapping[str, Any]) -> None:
        """What the apiserver answered to our own write: hold it now (the watch event that
        follows is then no news), unless the cache already holds something newer."""
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            return  # not an object (a test double's answer)
        kept = self.keep(obj)
        k = self._entry_key(kept)
        with self._lock:
            held = self._objs.get(k)
            if self._fresher(obj, held):
                self._objs[k] = kept
                self._after([kept])

    def note_deleted(self, obj: Mapping[str, Any]) -> None:
        with self._lock:
            held = self._objs.pop(_key(obj), None)
            if held is not None:
                self._after([held])

    # Hooks of the caches. An entry is what `keep` made of an object: by default a dict of
    # the same shape (slimmed), which the accessors below read like the object itself.
    def keep(self, obj: Mapping[str, Any]) -> Any:
        return dict(obj)

    def _entry_key(self, entry: Any) -> Key:
        return _key(entry)

    def _entry_rv(self, entry: Any) -> int | None:
        return _rv(entry)

    def _entry_owner(self, entry: Any) -> Owner | None:
        return _owner(entry)

    def _fresher(self, obj: Mapping[str, Any], held: Any) -> bool:
        """Whether `obj` is not older than the `held` entry (None: nothing held)."""
        return _not_older(_rv(obj), None if held is None else self._entry_rv(held))

    def _newer_version(self, obj: Mapping[str, Any], held: Any) -> bool:
        """Whether `obj` has a newer resourceVersion than the `held` entry, or either is not
        a number (then only the content can tell). The same version is the same object."""
        incoming, mine = _rv(obj), self._entry_rv(held)
        return incoming is None or mine is None or incoming > mine

    def _after(self, changed: list[Any]) -> None:
        """Under the lock: keep indexes in step with `changed` entries."""

    def _announce(self, changed: list[Any]) -> None:
        """Outside the lock: tell whoever listens."""


class _ByOwner(_Sink):
    """A store indexed by owner ((namespace, instance label)) that tells `on_change` which
    owners' objects changed, fed by one reflector per (kind, served namespace): cluster-wide
    ones when `namespaces` is empty (all served)."""

    def __init__(
        self,
        kube: Kube,
        kinds: Iterable[Kind],
        selector: str,
        namespaces: list[str],
        *,
        on_change: Callable[[str, str], None] | None,
        watch_timeout_s: tuple[int, int],
    ) -> None:
        super().__init__()
        self.on_change = on_change
        self._by_owner: dict[Owner, set[Key]] = {}
        self._owner_of: dict[Key, Owner] = {}
        scopes: list[str | None] = list(namespaces) or [None]
        self._all_namespaces = not namespaces
        self.reflectors = [
            Reflector(kube, kind, ns, selector, self, watch_timeout_s=watch_timeout_s)
            for kind in kinds
            for ns in scopes
        ]

    def _scope(self, kind: Kind, namespace: str) -> tuple[str, str | None]:
        """The reflector scope that holds `kind` in `namespace`."""
        return (kind.kind, None if self._all_namespaces else namespace)

    def _owned(self, namespace: str, instance: str) -> list[Any]:
        """Under the lock: the objects of one owner."""
        keys = self._by_owner.get((namespace, instance)) or ()
        return [self._objs[k] for k in sorted(keys) if k in self._objs]

    def _after(self, changed: list[Any]) -> None:
        for o in changed:
            k, owner = self._entry_key(o), self._entry_owner(o)
            # An object's owner label may change (a hand edit): index it under the new one.
            old = self._owner_of.pop(k, None)
            if old is not None:
                keys = self._by_owner.get(old)
                if keys is not None:
                    keys.discard(k)
                    if not keys:
                        del self._by_owner[old]
            if k in self._objs and owner is not None:
                self._owner_of[k] = owner
                self._by_owner.setdefault(owner, set()).add(k)

    def _announce(self, changed: list[Any]) -> None:
        if self.on_change is None:
            return
        for owner in sorted({o for o in map(self._entry_owner, changed) if o is not None}):
            self.on_change(*owner)


@dataclass(frozen=True, slots=True)
class _Child:
    """A cached child: what the store and its index read, and the whole object `packed`. A
    slotted object, not dicts: at a fleet's 15,000 children the entries' own overhead was
    larger than the packed objects."""

    kind: str
    namespace: str
    name: str
    rv: int | None
    instance: str | None
    packed: bytes


class ChildCache(_ByOwner):
    """Our children, by owner. `namespaces`: the served ones (empty: all)."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str],
        on_change: Callable[[str, str], None] | None = None,
        watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S,
    ) -> None:
        super().__init__(
            kube,
            CHILD_KINDS,
            CHILD_SELECTOR,
            namespaces,
            on_change=on_change,
            watch_timeout_s=watch_timeout_s,
        )
        self._zdicts: dict[str, bytes] = {}  # kind -> the preset dictionary of `_pack`

    def start(self) -> None:
        for r in self.reflectors:
            r.start()

    def stop(self) -> None:
        for r in self.reflectors:
            r.stop()

    def children(self, namespace: str, instance: str) -> list[dict[str, Any]] | None:
        """The children of `instance` in `namespace`, or None while any child kind's cache
        for that namespace is stale (the caller lists from the API then)."""
        if not self.synced(self._scope(k, namespace) for k in CHILD_KINDS):
            return None
        with self._lock:
            owned: list[_Child] = self._owned(namespace, instance)
        # Fresh objects: the caller may change them as it likes.
        return [json.loads(self._unpack(o.kind, o.packed)) for o in owned]

    def keep(self, obj: Mapping[str, Any]) -> _Child:
        """The object as compressed compact JSON beside the few fields the store and its index
        read. A pass reads whole objects (it compares them with what it renders), rarely: the
        children of 300 minimal EPDClusters as they come from the apiserver are 7.4 MiB of
        compact JSON and 1.0 MiB compressed (`_pack`); decoding one owner's children costs
        about a millisecond. managedFields are dropped: they are most of an object's size and
        nothing a pass reads. The strings many entries share are interned."""
        meta = obj.get("metadata") or {}
        full = dict(obj)
        full["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        kind = sys.intern(str(obj.get("kind")))
        instance = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
        return _Child(
            kind=kind,
            namespace=sys.intern(str(meta.get("namespace") or "")),
            name=str(meta.get("name")),
            rv=_rv(obj),
            instance=sys.intern(str(instance)) if instance else None,
            packed=self._pack(kind, json.dumps(full, separators=(",", ":")).encode()),
        )

    def _entry_key(self, entry: _Child) -> Key:
        return (entry.kind, entry.namespace, entry.name)

    def _entry_rv(self, entry: _Child) -> int | None:
        return entry.rv

    def _entry_owner(self, entry: _Child) -> Owner | None:
        return (entry.namespace, entry.instance) if entry.instance else None

    def _pack(self, kind: str, raw: bytes) -> bytes:
        """zlib with a preset dictionary per kind: the first object of that kind this cache
        saw. Children of one kind differ in names and a few values, so each compresses to a
        seventh of its JSON where zlib alone gets to half. The dictionary never changes after
        it is set (setdefault is atomic), so every entry can be decoded with it."""
        packer = zlib.compressobj(ZLIB_LEVEL, zdict=self._zdicts.setdefault(kind, raw))
        return packer.compress(raw) + packer.flush()

    def _unpack(self, kind: str, packed: bytes) -> bytes:
        unpacker = zlib.decompressobj(zdict=self._zdicts[kind])
        return unpacker.decompress(packed) + unpacker.flush()


class NodeCache(_Sink):
    """Every node, slimmed to what the capacity check reads; `capacity()` is the index."""

    def __init__(self, kube: Kube, watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S) -> None:
        super().__init__()
        self.reflector = Reflector(kube, NODE, None, "", self, watch_timeout_s=watch_timeout_s)
        self._capacity: Capacity | None = None

    def start(self) -> None:
        self.reflector.start()

    def stop(self) -> None:
        self.reflector.stop()

    def keep(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        slim = slim_node(obj)
        slim["kind"] = NODE.kind
        slim["metadata"]["resourceVersion"] = (obj.get("metadata") or {}).get("resourceVersion")
        return slim

    def event(self, etype: str, obj: Mapping[str, Any]) -> None:
        # A heartbeat changes the resourceVersion only: compare without it, or every status
        # update of every node would rebuild the index.
        k = _key(obj)
        with self._lock:
            held = self._objs.get(k)
            if etype != "DELETED" and held is not None and _same_node(held, self.keep(obj)):
                held["metadata"]["resourceVersion"] = (obj.get("metadata") or {}).get(
                    "resourceVersion"
                )
                return
        super().event(etype, obj)

    def capacity(self) -> Capacity | None:
        """The index over the nodes, or None while the node cache is stale."""
        if not self.synced([self.reflector.scope]):
            return None
        with self._lock:
            if self._capacity is None:
                self._capacity = Capacity(list(self._objs.values()))
            return self._capacity

    def _after(self, changed: list[dict[str, Any]]) -> None:
        if changed:
            self._capacity = None


class PodCache(_ByOwner):
    """Our engine pods, slimmed to what a pass reads (`keep`), by owner. Its reflectors start
    on the first `pods()` call (`want`): until they have listed, `pods()` answers None and the
    caller lists from the API."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str],
        on_change: Callable[[str, str], None] | None = None,
        watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S,
    ) -> None:
        super().__init__(
            kube,
            [POD],
            POD_SELECTOR,
            namespaces,
            on_change=on_change,
            watch_timeout_s=watch_timeout_s,
        )
        self._wanted = threading.Event()
        self._stopped = False

    def want(self) -> None:
        """Start watching (once; no-op after stop)."""
        with self._lock:
            if self._wanted.is_set() or self._stopped:
                return
            self._wanted.set()
        for r in self.reflectors:
            r.start()

    @property
    def started(self) -> bool:
        return self._wanted.is_set()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        for r in self.reflectors:
            r.stop()

    def pods(self, namespace: str, instance: str) -> list[dict[str, Any]] | None:
        """The (slim) pods of `instance`, or None while the pod cache is not current (it
        starts watching then, if it was not yet)."""
        self.want()
        if not self.synced([self._scope(POD, namespace)]):
            return None
        with self._lock:
            return self._owned(namespace, instance)  # read only by the caller

    def keep(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """What TransportReady (the preflight init container's termination messages), the
        rollout planner (revision labels, deletion, the Ready condition) and the launch
        ConfigMap prune (the ConfigMap mounted) read of a pod; the rest is dropped."""
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = obj.get("status") or {}
        kept_meta: dict[str, Any] = {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": {k: labels[k] for k in POD_LABELS if k in labels},
        }
        if meta.get("deletionTimestamp"):
            kept_meta["deletionTimestamp"] = meta["deletionTimestamp"]
        mounted = mounted_launch_config(obj.get("spec") or {})
        return {
            "kind": POD.kind,
            "metadata": kept_meta,
            "spec": {"volumes": [_launch_volume(mounted)] if mounted else []},
            "status": {
                "conditions": [
                    {"type": x.get("type"), "status": x.get("status")}
                    for x in status.get("conditions") or []
                    if x.get("type") == "Ready"
                ],
                "initContainerStatuses": _preflight_reports(status),
            },
        }

    def event(self, etype: str, obj: Mapping[str, Any]) -> None:
        # Most pod updates (scheduling, IPs, container states) change nothing kept: no news,
        # only the resourceVersion moves on.
        k = _key(obj)
        with self._lock:
            held = self._objs.get(k)
            kept = self.keep(obj)
            if etype != "DELETED" and held is not None and _same_but_version(held, kept):
                if newer(obj, held):
                    held["metadata"]["resourceVersion"] = kept["metadata"]["resourceVersion"]
                return
        super().event(etype, obj)


def _launch_volume(configmap: str) -> dict[str, Any]:
    """The launch ConfigMap volume of a slim pod (what `mounted_launch_config` reads)."""
    return {"name": VOLUME_LAUNCH_CONFIG, "configMap": {"name": configmap}}


def _preflight_reports(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Of the preflight init container's status, only the termination messages (its report)."""
    return [
        {
            "name": st["name"],
            **{
                key: {"terminated": {"message": msg}}
                for key in ("state", "lastState")
                if (msg := ((st.get(key) or {}).get("terminated") or {}).get("message"))
            },
        }
        for st in status.get("initContainerStatuses") or []
        if st.get("name") == INIT_CONTAINER
    ]


def _same_but_version(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two slim pods equal but for their resourceVersion."""
    meta_a = {k: v for k, v in (a.get("metadata") or {}).items() if k != "resourceVersion"}
    meta_b = {k: v for k, v in (b.get("metadata") or {}).items() if k != "resourceVersion"}
    return meta_a == meta_b and all(a.get(f) == b.get(f) for f in ("spec", "status"))


def _same_node(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(f) == b.get(f) for f in ("spec", "status")) and (
        (a.get("metadata") or {}).get("labels") == (b.get("metadata") or {}).get("labels")
    )


class Caches:
    """The two caches of one operator process, started and stopped together."""

    def __init__(
        self,
        kube: Kube,
        namespaces: list[str],
        on_change: Callable[[str, str], None] | None = None,
        watch_timeout_s: tuple[int, int] = WATCH_TIMEOUT_S,
    ) -> None:
        self.children = ChildCache(kube, namespaces, on_change, watch_timeout_s)
        self.nodes = NodeCache(kube, watch_timeout_s)
        self.pods = PodCache(kube, namespaces, on_change, watch_timeout_s)

    def start(self) -> None:
        self.children.start()
        self.nodes.start()

    def states(self) -> list[WatchState]:
        """Every running watch's liveness (the pods' only once something wanted them)."""
        reflectors = [*self.children.reflectors, self.nodes.reflector]
        if self.pods.started:
            reflectors += self.pods.reflectors
        return [r.state() for r in reflectors]

    def synced(self) -> bool:
        """Whether every cache holds a current listing."""
        return self.children.synced(
            r.scope for r in self.children.reflectors
        ) and self.nodes.synced([self.nodes.reflector.scope])

    def stop(self) -> None:
        self.children.stop()
        self.nodes.stop()
        self.pods.stop()
