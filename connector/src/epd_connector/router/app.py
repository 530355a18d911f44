"""The router's HTTP server and request flows: E -> PD (E/PD) and E -> P -> D (E/P/D).

One request is a bounded sequence of attempts. An attempt picks the EC consumer (PD, or P) and
one of its DP ranks, encodes every media item on an encoder (one call per item, concurrently,
each item retried on another encoder on failure) with `consumer_zmq` naming that pod and rank,
then calls the consumer with `X-data-parallel-rank` set to the same rank and, by default, the
media by reference (protocol.by_reference: the consumer never preprocesses the pixels). A failed
consumer call (connection error, timeout, 5xx - an EC delivery failure is a plain 500 in vLLM
0.33) starts a new attempt with fresh transfer ids, on another pod where there is one. Once a
byte has gone to the client nothing is retried; a stream that breaks after that ends with an SSE
error event. Engine 4xx answers go back to the client unchanged. A stage that finds no pod
waits in a bounded queue (`_acquire`); which pods are candidates (health, outlier ejection,
panic) is pods.Pool's decision. docs/router.md describes all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from epd_connector.launch import wiring
from epd_connector.launch.config import LaunchConfig, LaunchConfigError, RoleName
from epd_connector.launch.router_options import LIVENESS_PATH, RouterOptions
from epd_connector.launch.routing import RoutingTable, load_table, revision_service
from epd_connector.launch.rules import DEFAULT_KV_BOOTSTRAP_PORT

from . import protocol
from .discovery import Discovery, Target, parse_static
from .errors import ClientFacingError, UpstreamFailed, UpstreamRejected, error_response
from .metrics import RouterMetrics
from .pods import Pod, Pool, by_affinity, eligible_revisions, least_loaded, round_robin

__all__ = ["Router", "RouterOptions"]

log = logging.getLogger(__name__)

DP_HEADER = "X-data-parallel-rank"
JSON = "application/json"
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


@dataclass
class _Budget:
    retries_left: int
    excluded: dict[str, set[str]] = field(default_factory=dict)

    def exclude(self, role: str, pod: str) -> None:
        self.excluded.setdefault(role, set()).add(pod)

    def of(self, role: str) -> set[str]:
        return self.excluded.get(role, set())


@dataclass
class _Req:
    """One client request as the flows see it."""

    http: web.Request
    route: str
    body: dict[str, Any]
    raw: bytes  # the body as received: forwarded as is where the router changes nothing
    refs: list[protocol.MediaRef]
    budget: _Budget
    started: float
    encoders_used: set[str] = field(default_factory=set)  # by the current attempt
    revision: str | None = None  # the wiring revision the current attempt is pinned to


class Router:
    def __init__(self, config: LaunchConfig, opts: RouterOptions) -> None:
        self.config, self.opts = config, opts
        self.topology = config.topology
        self.consumer_role: RoleName = wiring.ec_consumer_role(config)
        self.served = {config.model.served_model_name or config.model.name}
        opts.check()
        self.by_reference = opts.consumer_media == "reference"
        self._turns = itertools.count()  # encoder_routing round-robin
        self.metrics = RouterMetrics()
        self.pools: dict[str, Pool] = {}
        for role in config.present_roles():
            launch = config.role(role)
            # Empty until discovery's first refresh (static pods included: `_targets`).
            self.pools[role] = Pool(role, launch.port, launch.parallelism.data, opts)
        # Wiring revision -> its view of the launch config (ports, DP sizes, connectors): ""
        # is the launch config itself until a routing table says otherwise.
        self.views: dict[str, LaunchConfig] = {"": config}
        self._table: RoutingTable | None = None
        self._table_stamp: tuple[int, int] | None = None
        self._engine_ids: dict[str, dict[str, str]] = {}
        self.session: aiohttp.ClientSession | None = None
        self.discovery: Discovery | None = None
        # Woken when a pod may have become available: a request released one, or discovery
        # changed the rotation. Requests that found no pod wait on it (bounded, see _acquire).
        self._capacity = asyncio.Condition()
        self._queued = 0
        self._wakers: set[asyncio.Task[None]] = set()

    # ---- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.opts.max_body_bytes, middlewares=[_openai_http_errors]
        )
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get(LIVENESS_PATH, self.live),
                web.get("/metrics", self.metrics_view),
            ]
        )
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.opts.pool_size, limit_per_host=self.opts.pool_per_host, keepalive_timeout=30
        )
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.discovery = Discovery(
            self.pools,
            self._targets,
            self.session,
            dns_refresh_s=self.opts.dns_refresh_s,
            health_interval_s=self.opts.health_interval_s,
            health_timeout_s=self.opts.health_timeout_s,
            on_change=self._update_gauges,
        )
        await self.discovery.start()

    async def _stop(self, _: web.Application) -> None:
        if self.discovery is not None:
            await self.discovery.stop()
        if self.session is not None:
            await self.session.close()

    # ---- where the pods are ------------------------------------------------------------------

    def _targets(self) -> list[Target]:
        """Discovery's targets: per live wiring revision of the routing table, each role's
        revision Service (or static list); without a table, the launch config's role Services
        (or --static-pods)."""
        self._reload_routing()
        out: list[Target] = []
        if self._table is None:
            for role, pool in self.pools.items():
                launch = self.config.role(role)  # type: ignore[arg-type]
                if role in self.opts.static_pods:
                    static = tuple(self.opts.static_pods[role])
                    out.append(Target(role, "", pool.port, pool.dp_size, static=static))
                else:
                    out.append(Target(role, "", pool.port, pool.dp_size, self._dns(launch.service)))
            return out
        for rev in self._table.revisions:
            cfg = rev.config
            for role in cfg.present_roles():
                launch = cfg.role(role)
                port, dp = launch.port, launch.parallelism.data
                if rev.static is not None:
                    pods = tuple(parse_static(",".join(rev.static.get(role, [])), port))
                    out.append(Target(role, rev.wiring, port, dp, static=pods))
                else:
                    name = self._dns(revision_service(launch.service, rev.wiring))
                    out.append(Target(role, rev.wiring, port, dp, name))
        return out

    def _dns(self, service: str) -> str:
        return f"{service}.{self.config.namespace}.{self.opts.dns_suffix}"

    def _reload_routing(self) -> None:
        """Re-read the routing table when its file changed (the kubelet swaps a ConfigMap
        volume's files atomically); a table that cannot be read keeps the last good one."""
        path = self.opts.routing_file
        if not path:
            return
        try:
            st = os.stat(path)
        except OSError:
            return  # not written yet (or no table): keep what we route by
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._table_stamp:
            return
        try:
            table = load_table(path)
        except LaunchConfigError as exc:
            log.warning("routing table not used: %s", exc)
            return
        self._table, self._table_stamp = table, stamp
        self.views = {"": self.config} | {r.wiring: r.config for r in table.revisions}
        log.info("routing table: revisions %s", ", ".join(r.wiring for r in table.revisions))

    def _view(self, revision: str) -> LaunchConfig:
        return self.views.get(revision, self.config)

    def _revisions_for(self, req: _Req) -> set[str] | None:
        """The revisions the next pick of `req` may use: its own once pinned. None (any) when
        no revision can serve it whole right now: the first pick then pins one, and the stage
        that lacks pods is the one that queues and names itself in the 503."""
        if req.revision is not None:
            return {req.revision}
        needed = ["prefill", "decode"] if self.topology == "E/P/D" else ["decode"]
        if req.refs:
            needed.append("encoder")
        return eligible_revisions(self.pools, needed, time.monotonic()) or None

    def _update_gauges(self) -> None:
        now = time.monotonic()
        for role, pool in self.pools.items():
            self.metrics.pods_in_rotation.labels(role).set(len(pool.in_rotation(now)))
            self.metrics.panic.labels(role).set(int(pool.panicking(now)))
        if self._queued:
            task = asyncio.get_running_loop().create_task(self._wake(all_waiters=True))
            self._wakers.add(task)
            task.add_done_callback(self._wakers.discard)

    async def _wake(self, *, all_waiters: bool = False) -> None:
        async with self._capacity:
            if all_waiters:
                self._capacity.notify_all()
            else:
                self._capacity.notify()

    # ---- plain endpoints ---------------------------------------------------------------------

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vllm",
                        "root": self.config.model.name,
                    }
                    for name in sorted(self.served)
                ],
            }
        )

    async def live(self, _: web.Request) -> web.Response:
        """Liveness: the process answers, whatever its pools hold (router_options says why)."""
        return web.json_response({"status": "alive"})

    async def health(self, _: web.Request) -> web.Response:
        now = time.monotonic()
        counts = {role: len(pool.in_rotation(now)) for role, pool in self.pools.items()}
        needed = [r for r in ("prefill", "decode") if r in self.pools]
        # Serving is what counts: in panic the router serves through pods out of rotation.
        ok = all(self.pools[r].candidates(set(), now) for r in needed)
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "pods": counts}, status=200 if ok else 503
        )

    async def metrics_view(self, _: web.Request) -> web.Response:
        self._update_gauges()
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "completion")

    # ---- request handling --------------------------------------------------------------------

    async def _handle(self, request: web.Request, route: str) -> web.StreamResponse:
        started = time.monotonic()
        self.metrics.inflight.inc()
        outcome = "success"
        try:
            raw, body = await self._read_body(request, route)
            resp = await self._run(request, route, raw, body, started)
            outcome = request.get("epd_outcome", "success")
        except ClientFacingError as exc:
            resp = exc.response()
            outcome = _outcome_of(exc.status)
        except UpstreamRejected as exc:
            resp = exc.response()
            outcome = "client_error"
        finally:
            self.metrics.inflight.dec()
        self.metrics.of(self.metrics.requests, route, outcome).inc()
        self.metrics.of(self.metrics.request_seconds, route).observe(time.monotonic() - started)
        return resp

    async def _read_body(self, request: web.Request, route: str) -> tuple[bytes, dict[str, Any]]:
        limit = self.opts.max_body_bytes
        too_big = ClientFacingError(
            413, f"request body exceeds {limit} bytes", "RequestEntityTooLarge"
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_big from None
        try:
            body = orjson.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClientFacingError(
                400, f"request body is not valid JSON: {exc}", "BadRequestError"
            ) from None
        if not isinstance(body, dict):
            raise ClientFacingError(400, "request body must be a JSON object", "BadRequestError")
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or model not in self.served):
            raise ClientFacingError(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        if route == "chat" and not isinstance(body.get("messages"), list):
            raise ClientFacingError(400, "`messages` must be a list", "BadRequestError", "messages")
        if route == "completion" and not isinstance(body.get("prompt"), str | list):
            raise ClientFacingError(
                400, "`prompt` must be a string or a list", "BadRequestError", "prompt"
            )
        return raw, body

    async def _run(
        self, request: web.Request, route: str, raw: bytes, body: dict[str, Any], started: float
    ) -> web.StreamResponse:
        refs = protocol.media_refs(body) if route == "chat" else []
        req = _Req(request, route, body, raw, refs, _Budget(self.opts.retries), started)
        while True:
            req.encoders_used = set()
            req.revision = None  # each attempt picks its revision afresh
            try:
                if self.topology == "E/PD":
                    return await self._attempt_epd(req)
                return await self._attempt_e_p_d(req)
            except UpstreamFailed as exc:
                self._spend(req.budget, exc)
                if exc.role == self.consumer_role and exc.status == 500:
                    # vLLM reports an EC delivery failure as a plain 500 from the consumer; the
                    # push may have failed on the encoder's side, so re-encode elsewhere too.
                    for key in req.encoders_used:
                        req.budget.exclude("encoder", key)

    def _spend(self, budget: _Budget, exc: UpstreamFailed) -> None:
        """Account one failed upstream call; raise the client-facing error when out of budget."""
        pool = self.pools.get(exc.role)
        if pool is not None and exc.pod in pool.pods:
            left = pool.request_failed(pool.pods[exc.pod], time.monotonic(), refused=exc.pod_down)
            if left and not exc.pod_down:
                self.metrics.ejections.labels(exc.role).inc()
                log.warning("%s pod %s ejected after failed requests", exc.role, exc.pod)
            if left:
                self._update_gauges()
        log.warning("attempt failed: %s", exc)
        if budget.retries_left <= 0:
            if exc.timeout:
                raise ClientFacingError(
                    504, f"upstream timed out: {exc}", "GatewayTimeout"
                ) from exc
            raise ClientFacingError(
                502, f"upstream failed after {self.opts.retries} retries: {exc}", "BadGateway"
            ) from exc
        budget.retries_left -= 1
        budget.exclude(exc.role, exc.pod)
        reason = (
            "timeout"
            if exc.timeout
            else ("pod_down" if exc.pod_down else f"http_{exc.status}" if exc.status else "error")
        )
        self.metrics.retries.labels(exc.role, reason).inc()

    async def _pick(self, role: str, req: _Req) -> Pod:
        """A pod of `role` for `req`, of its pinned revision (the first pick pins it)."""
        pool, budget = self.pools[role], req.budget
        pod = await self._acquire(
            role,
            lambda: least_loaded(
                pool.candidates(budget.of(role), time.monotonic(), self._revisions_for(req))
            ),
        )
        if req.revision is None:
            req.revision = pod.revision
            self.metrics.of(self.metrics.revision_requests, pod.revision).inc()
        return pod

    async def _acquire(self, role: str, choose: Callable[[], Pod | None]) -> Pod:
        """The pod `choose` picks; when there is none, wait in the bounded queue until one is
        free (a request ends, or a pod enters rotation) or the queue timeout passes."""
        pod = choose()
        if pod is not None:
            return pod
        opts, pool = self.opts, self.pools[role]
        if self._queued >= opts.queue_size:
            raise self._unavailable(role, pool, "the queue is full")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + opts.queue_timeout_s
        self._queued += 1
        self.metrics.queued.labels(role).inc()
        try:
            async with self._capacity:
                while (pod := choose()) is None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise self._unavailable(
                            role, pool, f"none became available within {opts.queue_timeout_s}s"
                        )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._capacity.wait(), left)
            return pod
        finally:
            self._queued -= 1
            self.metrics.queued.labels(role).dec()

    @staticmethod
    def _unavailable(role: str, pool: Pool, why: str) -> ClientFacingError:
        now = time.monotonic()
        known, ready = len(pool.pods), len(pool.in_rotation(now))
        return ClientFacingError(
            503,
            f"{role} stage: no {role} pod available ({why}; {known} known, {ready} in rotation)",
            "ServiceUnavailable",
        )

    @asynccontextmanager
    async def _using(self, pod: Pod, rank: int) -> AsyncIterator[None]:
        pod.acquire(rank)
        try:
            yield
        finally:
            pod.release(rank)
            if self._queued:
                await self._wake()

    async def _attempt_epd(self, req: _Req) -> web.StreamResponse:
        pd = await self._pick("decode", req)
        rank = pd.least_loaded_rank()
        async with self._using(pd, rank):
            body = await self._encode_all(req, pd, rank) if req.refs else req.body
            return await self._final(req, pd, rank, body)

    async def _attempt_e_p_d(self, req: _Req) -> web.StreamResponse:
        p = await self._pick("prefill", req)
        rank = p.least_loaded_rank()
        transfer_id = protocol.new_transfer_id()
        async with self._using(p, rank):
            p_body = await self._encode_all(req, p, rank) if req.refs else req.body
            kv_cfg = self._view(p.revision).kv
            mooncake = kv_cfg is None or kv_cfg.connector == "MooncakeConnector"
            kv = (
                protocol.mooncake_prefill_params(transfer_id)
                if mooncake
                else protocol.nixl_prefill_params()
            )
            t0 = time.monotonic()
            answer = await self._call_json(
                p,
                rank,
                PATHS[req.route],
                protocol.prefill_request(p_body, kv),
                timeout_s=self.opts.prefill_timeout_s,
            )
            self.metrics.of(self.metrics.stage_seconds, "prefill").observe(time.monotonic() - t0)
            if mooncake:
                if protocol.finish_reason(answer) == "stop":
                    # P sampled EOS: Mooncake KV sends nothing and this answer is final.
                    return await self._reply_with(req, answer)
                engine_id = await self._engine_id(p, rank)
                bootstrap = f"http://{_hostport(p.host, self._bootstrap_port(p))}"
                d_params = protocol.mooncake_decode_params(bootstrap, engine_id, transfer_id)
            else:
                got = answer.get("kv_transfer_params")
                if not isinstance(got, dict):
                    raise UpstreamFailed(
                        "prefill", p.key, "answer without kv_transfer_params", pod_down=False
                    )
                d_params = got
        d = await self._pick("decode", req)
        d_rank = d.least_loaded_rank()
        # D gets P's body (media by reference, when rewritten): as a KV consumer it accepts
        # metadata-only items too, and its EC items are dropped by decode_request.
        async with self._using(d, d_rank):
            return await self._final(req, d, d_rank, protocol.decode_request(p_body, d_params))

    def _bootstrap_port(self, p: Pod) -> int:
        kv = self._view(p.revision).kv
        return kv.bootstrap_port if kv is not None else DEFAULT_KV_BOOTSTRAP_PORT

    async def _engine_id(self, p: Pod, rank: int) -> str:
        """Mooncake KV `remote_engine_id` of P's DP rank, from P's bootstrap server `/query`."""
        cached = self._engine_ids.get(p.key)
        if cached is None or str(rank) not in cached:
            url = f"http://{_hostport(p.host, self._bootstrap_port(p))}/query"
            assert self.session is not None
            async with (
                self._upstream_errors("prefill", p, self.opts.prefill_timeout_s),
                self.session.get(url, timeout=self._timeout(10.0)) as resp,
            ):
                if resp.status != 200:
                    raise UpstreamFailed(
                        "prefill",
                        p.key,
                        f"bootstrap /query HTTP {resp.status}",
                        pod_down=False,
                        status=resp.status,
                    )
                data = await resp.json()
            cached = {str(k): str(v["engine_id"]) for k, v in data.items()}
            self._engine_ids[p.key] = cached
        if str(rank) not in cached:
            raise UpstreamFailed(
                "prefill", p.key, f"bootstrap lists no DP rank {rank}", pod_down=False
            )
        return cached[str(rank)]

    # ---- encoders ----------------------------------------------------------------------------

    async def _encode_all(self, req: _Req, consumer: Pod, rank: int) -> dict[str, Any]:
        view = self._view(consumer.revision)
        # ECMooncakeConnector pushes to the consumer named per request; ECExampleConnector
        # shares a volume keyed by mm_hash and needs no target (protocol.py).
        ec_push = view.ec.connector == "ECMooncakeConnector"
        consumer_zmq = wiring.consumer_zmq(view, consumer.host, rank) if ec_push else None
        t0 = time.monotonic()
        results: list[protocol.Encoded] = [protocol.Encoded("", "", "", {})] * len(req.refs)

        async def one(ref: protocol.MediaRef) -> None:
            results[ref.index] = await self._encode_one(req, ref, consumer_zmq)

        try:
            async with asyncio.TaskGroup() as group:
                for ref in req.refs:
                    group.create_task(one(ref))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        self.metrics.of(self.metrics.stage_seconds, "encode").observe(time.monotonic() - t0)
        body = protocol.by_reference(req.body, req.refs, results) if self.by_reference else req.body
        if not ec_push:
            return body
        return protocol.with_ec_items(body, [(e.mm_hash, e.transfer_id) for e in results])

    async def _encode_one(
        self, req: _Req, ref: protocol.MediaRef, consumer_zmq: str | None
    ) -> protocol.Encoded:
        pool = self.pools["encoder"]
        while True:
            enc = await self._acquire(
                "encoder", lambda: self._pick_encoder(pool, req, ref.content_key)
            )
            transfer_id = protocol.new_transfer_id()
            body = protocol.encoder_request(
                req.body, ref, consumer_zmq, transfer_id, with_uuid=self.by_reference
            )
            req.encoders_used.add(enc.key)
            try:
                async with self._using(enc, 0):
                    answer = await self._call_json(
                        enc, None, PATHS["chat"], body, timeout_s=self.opts.encoder_timeout_s
                    )
                try:
                    return protocol.encoded_item(answer, ref, transfer_id)
                except ValueError as exc:
                    raise UpstreamFailed("encoder", enc.key, str(exc), pod_down=False) from exc
            except UpstreamFailed as exc:
                self._spend(req.budget, exc)

    def _pick_encoder(self, pool: Pool, req: _Req, content_key: str) -> Pod | None:
        pods = pool.candidates(req.budget.of("encoder"), time.monotonic(), self._revisions_for(req))
        if self.opts.encoder_routing == "round-robin":
            return round_robin(pods, next(self._turns))
        return by_affinity(pods, content_key, self.opts.affinity_load_factor)

    # ---- upstream calls ----------------------------------------------------------------------

    def _timeout(
        self, total: float | None, sock_read: float | None = None
    ) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=total, sock_connect=self.opts.connect_timeout_s, sock_read=sock_read
        )

    @asynccontextmanager
    async def _upstream_errors(self, role: str, pod: Pod, timeout_s: float) -> AsyncIterator[None]:
        """Map transport failures of one upstream call to UpstreamFailed."""
        try:
            yield
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailed(
                role, pod.key, f"cannot connect: {exc.os_error}", pod_down=True
            ) from exc
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamFailed(
                role, pod.key, f"no answer within {timeout_s}s", pod_down=False, timeout=True
            ) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamFailed(
                role, pod.key, f"{type(exc).__name__}: {exc}", pod_down=False
            ) from exc

    async def _call_json(
        self, pod: Pod, rank: int | None, path: str, body: dict[str, Any], *, timeout_s: float
    ) -> dict[str, Any]:
        role = pod.role
        assert self.session is not None
        headers = {"Content-Type": JSON}
        if rank is not None:
            headers[DP_HEADER] = str(rank)
        self.metrics.of(self.metrics.upstream_requests, role, pod.key).inc()
        async with (
            self._upstream_errors(role, pod, timeout_s),
            self.session.post(
                pod.base_url + path,
                data=orjson.dumps(body),
                headers=headers,
                timeout=self._timeout(timeout_s),
            ) as resp,
        ):
            data = await resp.read()
            _raise_for_status(role, pod, resp, data)
            answer = orjson.loads(data)
        if not isinstance(answer, dict):
            raise UpstreamFailed(role, pod.key, "answer is not a JSON object", pod_down=False)
        self._succeeded(pod)
        return answer

    def _succeeded(self, pod: Pod) -> None:
        self.pools[pod.role].request_succeeded(pod, time.monotonic())

    async def _final(
        self, req: _Req, pod: Pod, rank: int, body: dict[str, Any]
    ) -> web.StreamResponse:
        """The last hop: its answer goes to the client, streamed chunk by chunk if asked."""
        assert self.session is not None
        role, started = pod.role, req.started
        stream = bool(body.get("stream"))
        timeout = (
            self._timeout(None, self.opts.stream_idle_timeout_s)
            if stream
            else self._timeout(self.opts.request_timeout_s)
        )
        limit = self.opts.stream_idle_timeout_s if stream else self.opts.request_timeout_s
        t0 = time.monotonic()
        self.metrics.of(self.metrics.upstream_requests, role, pod.key).inc()
        async with (
            self._upstream_errors(role, pod, limit),
            self.session.post(
                pod.base_url + PATHS[req.route],
                # Unchanged (text in E/PD): the bytes as received, not parsed and re-encoded.
                data=req.raw if body is req.body else orjson.dumps(body),
                headers={DP_HEADER: str(rank), "Content-Type": JSON},
                timeout=timeout,
            ) as up,
        ):
            if not stream or up.status >= 400:
                data = await up.read()
                _raise_for_status(role, pod, up, data)
                self._succeeded(pod)
                now = time.monotonic()
                self.metrics.of(self.metrics.stage_seconds, "ttft").observe(now - started)
                self.metrics.of(self.metrics.stage_seconds, "decode").observe(now - t0)
                return web.Response(body=data, status=up.status, content_type=up.content_type)
            # Nothing has reached the client until the first chunk is in hand, so a pod
            # that dies before answering is still retried.
            first = await up.content.readany()
            if not first:
                raise UpstreamFailed(role, pod.key, "stream ended before any data", pod_down=False)
            self._succeeded(pod)
            out = web.StreamResponse(
                status=up.status,
                headers={
                    "Content-Type": up.headers.get("Content-Type", "text/event-stream"),
                    "Cache-Control": "no-cache",
                },
            )
            await out.prepare(req.http)
            self.metrics.of(self.metrics.stage_seconds, "ttft").observe(time.monotonic() - started)
            await self._pump(req.http, out, first, up.content.iter_any(), pod)
            self.metrics.of(self.metrics.stage_seconds, "decode").observe(time.monotonic() - t0)
            return out

    async def _pump(
        self,
        request: web.Request,
        out: web.StreamResponse,
        first: bytes,
        chunks: AsyncIterator[bytes],
        pod: Pod,
    ) -> None:
        role = pod.role
        try:
            await out.write(first)
            try:
                async for chunk in chunks:
                    await out.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                request["epd_outcome"] = "upstream_error"
                log.warning("%s %s broke mid-stream: %r", role, pod.key, exc)
                err = {
                    "error": {
                        "message": f"upstream {role} failed mid-stream",
                        "type": "BadGateway",
                        "param": None,
                        "code": 502,
                    }
                }
                await out.write(f"data: {json.dumps(err)}\n\ndata: [DONE]\n\n".encode())
            await out.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            request["epd_outcome"] = "client_gone"

    async def _reply_with(self, req: _Req, answer: dict[str, Any]) -> web.StreamResponse:
        """Send an already complete engine answer, as SSE when the client asked to stream."""
        self.metrics.of(self.metrics.stage_seconds, "ttft").observe(time.monotonic() - req.started)
        answer = {k: v for k, v in answer.items() if k != "kv_transfer_params"}
        if not req.body.get("stream"):
            return web.json_response(answer)
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await out.prepare(req.http)
        await out.write(protocol.as_sse(answer))
        await out.write_eof()
        return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _raise_for_status(role: str, pod: Pod, resp: aiohttp.ClientResponse, data: bytes) -> None:
    if resp.status >= 500:
        raise UpstreamFailed(
            role, pod.key, f"HTTP {resp.status}", pod_down=False, status=resp.status
        )
    if resp.status >= 400:
        raise UpstreamRejected(resp.status, data, resp.content_type or "application/json")


def _outcome_of(status: int) -> str:
    if status < 400:
        return "success"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "timeout"
    return "client_error" if status < 500 else "upstream_error"


@web.middleware
async def _openai_http_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and methods answer with an OpenAI-style body, like everything else."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, type(exc).__name__)
