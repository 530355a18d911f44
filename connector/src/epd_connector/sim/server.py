"""The simulated engine's HTTP server: the OpenAI surface vLLM 0.33.0 serves, per EPD role.

What each role does with a request follows vLLM 0.33.0 (the source files named below):
- encoder (`ec_producer`): answers a non-streaming chat completion with empty output and a
  top-level `ec_transfer_params` keyed by mm_hash (`modality`, `item_indices`, `metadata`,
  `transfer_id`; `mooncake/scheduler.py::request_finished`, `utils.py::collect_ec_item_metadata`),
  then pushes each item's synthetic output to the consumer named by `consumer_zmq`;
- EC consumer (PD in E/PD, prefill in E/P/D): defers the request until every item's push has
  landed and verified, matched to `ec_items` by position or mm_hash
  (`scheduler.py::_request_transfer_id`); after the push-wait timeout it fails with HTTP 500
  "Internal server error", which is how vLLM reports it;
- with ECExampleConnector there is no push: the encoder writes each output to the shared volume
  as `<shared_storage_path>/<mm_hash>/encoder_cache.safetensors` and answers `ec_transfer_params`
  without `transfer_id`; the consumer loads a file that exists when the request arrives and
  otherwise encodes the item itself (`ec_connector/example_connector.py`), counted in
  `epd_sim_consumer_encoded_items` (what the engine tier's vision probe shows on real vLLM);
- KV producer (prefill, E/P/D) with `do_remote_decode`: stages KV only if it ended length-capped
  (an EOS first token sends nothing, as the Mooncake KV connector does); with NixlConnector it
  answers `kv_transfer_params` for the decode pod;
- KV consumer (decode, E/P/D) with `do_remote_prefill`: pulls and verifies the KV first.
Data-parallel rank comes from `X-data-parallel-rank`, as in vLLM's serving layer; EC pushes land
on the control port of one rank, so header and `consumer_zmq` must agree.
The text marker `[[sim:eos]]` in a prompt makes the first sampled token EOS (tests use it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from epd_connector.launch import wiring
from epd_connector.launch.config import LaunchConfig, LaunchConfigError
from epd_connector.launch.pod import ENV_ROLE, PodContext
from epd_connector.openai_errors import OpenAIError, error_response
from epd_connector.transport import Engine

from . import ec, kv
from .media import (
    MediaError,
    MediaPart,
    checksum,
    encoder_output,
    grid_thw,
    identifier,
    load_media,
    media_parts,
    prompt_text,
)
from .metrics import SimMetrics
from .settings import SimSettings
from .store import EncoderStore

log = logging.getLogger(__name__)

EOS_MARKER = "[[sim:eos]]"
DP_HEADER = "X-data-parallel-rank"


class RequestFailed(OpenAIError):
    """Answer the request with this error, as vLLM's server would."""


@dataclass(frozen=True)
class Output:
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int
    kv_transfer_params: dict[str, Any] | None = None


class SimEngine:
    """One simulated engine pod: role wiring from the launch config, state, and handlers."""

    def __init__(self, config: LaunchConfig, pod: PodContext, settings: SimSettings) -> None:
        if pod.role is None:  # PodContext.from_env always sets it
            raise LaunchConfigError(f"{ENV_ROLE}: the simulator needs the pod's role")
        self.config, self.pod, self.settings = config, pod, settings
        self.role = pod.role
        self.launch = config.role(self.role)
        self.model = config.model.served_model_name or config.model.name
        self.ec_role = wiring.ec_role(config, self.role)
        self.kv_role = wiring.kv_role(config, self.role)
        self.is_encoder = self.role == "encoder"
        self.is_ec_consumer = self.ec_role == "ec_consumer"
        self._encoder_cache: OrderedDict[str, None] = OrderedDict()
        # vLLM's allow_missing_mm_embeddings (config/vllm.py): EC or KV consumers.
        self.allows_missing_embeds = self.is_ec_consumer or self.kv_role in (
            "kv_consumer",
            "kv_both",
        )
        self.shared_storage = (
            Path(config.ec.shared_storage_path)
            if config.ec.connector == "ECExampleConnector" and config.ec.shared_storage_path
            else None
        )
        self.dp_size = self.launch.parallelism.data
        self.push_wait_s = config.ec.push_wait_timeout_s or settings.push_wait_timeout_s
        self.control_timeout_s = config.ec.control_timeout_s or 30.0
        self.metrics = SimMetrics(self.model, pod.name)
        self.engine: Engine | None = None
        self.store: EncoderStore | None = None  # the shared encoder cache (encoders only)
        self.receivers: list[ec.ECReceiver] = []
        self.control_servers: list[ec.ControlServer] = []
        self.kv_source: kv.KVSource | None = None
        self.kv_site: web.TCPSite | None = None
        self._kv_runners: list[web.AppRunner] = []
        self.http: aiohttp.ClientSession | None = None
        self.draining = False
        self.inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(pod.name)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def engine_ids(self) -> list[str]:
        return [f"{self.pod.name}-dp{d}" for d in range(self.dp_size)]

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        # Always TCP: simulator pods run where RDMA devices are not (kind, kwok, CI).
        self.engine = await asyncio.to_thread(Engine, self.pod.ip, "tcp")
        if self.is_encoder and self.config.ec.store is not None:
            # Like vLLM's encoder: no Store, no start (the launcher wrote its config file).
            self.store = await EncoderStore.open(self.config, self.metrics, os.environ, self.pod.ip)
        host = self.settings.host
        if self.is_ec_consumer and self.shared_storage is None:
            for d in range(self.dp_size):
                rx = ec.ECReceiver(self.engine, d, self.settings.ec_slab_bytes)
                srv = ec.ControlServer(rx, host, wiring.consumer_control_port(self.config, d))
                await srv.start()
                self.receivers.append(rx)
                self.control_servers.append(srv)
        if self.kv_role == "kv_producer" and self.config.kv is not None:
            nixl = self.config.kv.connector == "NixlConnector"
            ports = (
                [self.config.kv.side_channel_port + d for d in range(self.dp_size)]
                if nixl
                else [self.config.kv.bootstrap_port]
            )
            self.kv_source = kv.KVSource(
                self.engine, self.settings.kv_slab_bytes, self.engine_ids, self.pod.ip, ports[0]
            )
            for port in ports:
                app = web.Application()
                app.add_routes(self.kv_source.routes())
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, host, port).start()
                self._kv_runners.append(runner)
        self._spawn(self._reaper())

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for srv in self.control_servers:
            await srv.close()
        for runner in self._kv_runners:
            await runner.cleanup()
        if self.store is not None:
            self.store.close()
        if self.http is not None:
            await self.http.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(5)
            for rx in self.receivers:
                rx.reap()
            if self.kv_source is not None:
                self.kv_source.reap()

    # ---- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/v1/models", self.models),
                web.get("/metrics", self.metrics_view),
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
            ]
        )
        return app

    async def health(self, _: web.Request) -> web.Response:
        if self.settings.health_delay_s:
            await asyncio.sleep(self.settings.health_delay_s)
        if self.draining:
            return web.Response(status=503, text="draining")
        return web.Response(status=200)

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": self.config.model.name,
                        "parent": None,
                        "max_model_len": self.launch.max_model_len,
                    }
                ],
            }
        )

    async def metrics_view(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        if self.draining:
            resp: web.StreamResponse = error_response(
                503, "engine is shutting down", "ServiceUnavailableError"
            )
            self.metrics.requests.labels(kind, "503").inc()
            return resp
        if self._rng.randrange(100) < self.settings.error_percent:
            self.metrics.requests.labels(kind, "500").inc()
            return error_response(500, "injected fault", "InternalServerError")
        self.inflight += 1
        self.metrics.running.labels(**self.metrics.lbl()).inc()
        started = time.monotonic()
        try:
            resp = await self._generate(request, kind, started)
        except RequestFailed as exc:
            if exc.status >= 500:
                self.metrics.finished("error")
            resp = exc.response()
        finally:
            self.inflight -= 1
            self.metrics.running.labels(**self.metrics.lbl()).dec()
        self.metrics.requests.labels(kind, str(resp.status)).inc()
        return resp

    async def _generate(
        self, request: web.Request, kind: str, started: float
    ) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestFailed(
                400, f"request body is not valid JSON: {exc}", "BadRequestError"
            ) from exc
        if not isinstance(body, dict):
            raise RequestFailed(400, "request body must be a JSON object", "BadRequestError")
        model = body.get("model")
        if model and model not in (self.model, self.config.model.name):
            raise RequestFailed(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        dp_rank = self._dp_rank(request)
        parts = media_parts(body) if kind == "chat" else []
        text = prompt_text(body)
        prompt_tokens = len(text.split()) + len(parts) * self.settings.tokens_per_image
        if self.is_encoder:
            return await self._encode(body, parts, prompt_tokens)
        if parts and self.is_ec_consumer:
            if self.shared_storage is not None:
                await self._load_shared_outputs(parts)
            else:
                await self._await_encoder_outputs(body, parts, dp_rank)
        else:
            # Any other engine still lays out the prompt's placeholders: raw items are loaded
            # and preprocessed, metadata-only ones checked (a decode in E/P/D).
            for part in parts:
                await self._item_identity(part)
        await asyncio.sleep(self.settings.prefill_delay_s)
        kv_params = body.get("kv_transfer_params") or {}
        if self.kv_role == "kv_consumer" and kv_params.get("do_remote_prefill"):
            await self._pull_kv(kv_params)
        out = self._sample(body, text, prompt_tokens, kv_params, dp_rank)
        self.metrics.ttft.labels(**self.metrics.lbl()).observe(time.monotonic() - started)
        if body.get("stream"):
            resp = await self._stream(request, body, kind, out)
        else:
            await asyncio.sleep(
                self.settings.decode_delay_per_token_s * max(0, len(out.tokens) - 1)
            )
            resp = web.json_response(self._full_body(body, kind, out))
        self.metrics.finished(out.finish_reason)
        self.metrics.e2e.labels(**self.metrics.lbl()).observe(time.monotonic() - started)
        return resp

    def _dp_rank(self, request: web.Request) -> int:
        raw = request.headers.get(DP_HEADER)
        if raw is None:
            return 0
        try:
            rank = int(raw)
        except ValueError:
            return 0  # vLLM ignores an unparsable header
        if not 0 <= rank < self.dp_size:
            raise RequestFailed(
                400,
                f"{DP_HEADER}: rank {rank} out of range 0..{self.dp_size - 1}",
                "BadRequestError",
            )
        return rank

    # ---- encoder -----------------------------------------------------------------------------

    async def _item_identity(
        self, part: MediaPart, *, preprocess: bool = True
    ) -> tuple[str, bytes | None]:
        """(identifier, content or None for embeds items), like vLLM's get_mm_hashes; with
        `preprocess`, a raw item also costs its preprocessing (the encoder decides later)."""
        uid = part.part.get("uuid")
        if part.is_embeds:
            if not isinstance(uid, str) or not uid:
                raise RequestFailed(
                    400,
                    f"{part.part.get('type')} item {part.index} needs a uuid",
                    "BadRequestError",
                    "messages",
                )
            self._check_reference(part)
            return uid, None
        assert self.http is not None
        try:
            content = await load_media(part, self.http, self.settings.fetch_timeout_s)
        except MediaError as exc:
            raise RequestFailed(400, str(exc), "BadRequestError", "messages") from exc
        if preprocess:
            self._preprocess()
        return identifier(
            self.model, part.modality, content, uid if isinstance(uid, str) else None
        ), content

    def _preprocess(self) -> None:
        # vLLM's multimodal preprocessing is CPU work on the API server, in line.
        _burn_cpu(self.settings.preprocess_cpu_s)
        self.metrics.preprocessed_items.inc()

    def _encoder_work(self, mm_hash: str) -> None:
        """Preprocess and encode one raw item, unless the encoder's cache holds its output."""
        cache, size = self._encoder_cache, self.settings.encoder_cache_items
        if size and mm_hash in cache:
            cache.move_to_end(mm_hash)
            self.metrics.encoder_cache.labels("hit").inc()
            return
        self.metrics.encoder_cache.labels("miss").inc()
        self._preprocess()
        _burn_cpu(self.settings.encode_cpu_s)
        if size:
            cache[mm_hash] = None
            while len(cache) > size:
                cache.popitem(last=False)

    def _check_reference(self, part: MediaPart) -> None:
        """A metadata-only embeds item (no tensor), as vLLM 0.33 takes it: only where missing
        embeddings are allowed (an EC or KV consumer), and with the fields that size the
        placeholder (this simulated model is Qwen-VL-like: `<modality>_grid_thw`)."""
        value = part.part.get(str(part.part.get("type")))
        if value is not None and not isinstance(value, dict):
            return  # a tensor payload: the embedding itself came with the request
        tensor = f"{part.modality}_embeds"
        if isinstance(value, dict) and tensor in value:
            return
        if not self.allows_missing_embeds:
            raise RequestFailed(
                400,
                f"{part.part.get('type')} item {part.index}: `{tensor}` is required (only an "
                "EC or KV consumer accepts metadata-only items)",
                "BadRequestError",
                "messages",
            )
        needed = f"{part.modality}_grid_thw"
        if part.modality != "audio" and not (isinstance(value, dict) and needed in value):
            raise RequestFailed(
                400,
                f"{part.part.get('type')} item {part.index}: `{needed}` is required when the "
                "embedding is omitted",
                "BadRequestError",
                "messages",
            )
        self.metrics.referenced_items.inc()

    async def _encode(
        self, body: dict[str, Any], parts: list[MediaPart], prompt_tokens: int
    ) -> web.Response:
        """The encoder's answer: encode what the shared cache lacks, describe every item in
        `ec_transfer_params`, then push the outputs to the consumer (after the reply)."""
        ids = [await self._item_identity(p, preprocess=False) for p in parts]
        cached = await self._from_store(parts, ids)
        for mm_hash, content in ids:
            if content is not None and mm_hash not in cached:
                self._encoder_work(mm_hash)
        if not ids or any(mm_hash not in cached for mm_hash, _ in ids):
            await asyncio.sleep(self.settings.encode_delay_s)
        params = body.get("ec_transfer_params") or {}
        request_id = uuid.uuid4().hex
        out, pushes = await self._encoded_items(
            parts, ids, cached, params.get("ec_items") or [], request_id
        )
        consumer = params.get("consumer_zmq")
        if consumer and pushes:
            try:
                ec.parse_consumer_zmq(str(consumer))
            except ValueError as exc:
                raise RequestFailed(400, str(exc), "BadRequestError", "ec_transfer_params") from exc
            # vLLM pushes from the worker after encoding, not inside the HTTP reply.
            self._spawn(self._push(str(consumer), pushes))
        self.metrics.finished("stop")
        return web.json_response(self._encoder_reply(request_id, prompt_tokens, out))

    async def _from_store(
        self, parts: list[MediaPart], ids: list[tuple[str, bytes | None]]
    ) -> dict[str, bytes]:
        """The shared encoder cache first (images only, as vLLM): a hit is not encoded."""
        cached: dict[str, bytes] = {}
        if self.store is None:
            return cached
        for part, (mm_hash, content) in zip(parts, ids, strict=True):
            if part.modality == "image" and content is not None and mm_hash not in cached:
                got = await self.store.get(mm_hash, self.settings.bytes_per_image)
                if got is not None:
                    cached[mm_hash] = got
        return cached

    async def _encoded_items(
        self,
        parts: list[MediaPart],
        ids: list[tuple[str, bytes | None]],
        cached: dict[str, bytes],
        ec_items: list[Any],
        request_id: str,
    ) -> tuple[dict[str, dict[str, Any]], list[ec.PushItem]]:
        """`ec_transfer_params` by mm_hash, and the outputs to push (none with a shared
        volume: those are saved there instead)."""
        out: dict[str, dict[str, Any]] = {}
        pushes: list[ec.PushItem] = []
        for part, (mm_hash, _) in zip(parts, ids, strict=True):
            tid = _transfer_id(ec_items, part.index, mm_hash) or f"{request_id}:{part.index}"
            entry = out.setdefault(mm_hash, {"modality": part.modality, "item_indices": []})
            entry["item_indices"].append(part.index)
            entry["metadata"] = (
                {"image_grid_thw": [grid_thw(self.settings.tokens_per_image)]}
                if part.modality == "image"
                else {}
            )
            if self.shared_storage is not None:
                await asyncio.to_thread(
                    _save_shared, self.shared_storage, mm_hash, self.settings.bytes_per_image
                )
                self.metrics.encoded_items.inc()
                continue
            if _transfer_id(ec_items, part.index, mm_hash) is not None:
                entry["transfer_id"] = tid
            payload = cached.get(mm_hash)
            if payload is None:
                payload = encoder_output(mm_hash, self.settings.bytes_per_image)
                self.metrics.encoded_items.inc()
                if self.store is not None and part.modality == "image":
                    cached[mm_hash] = payload  # a repeat within the request is no new miss
                    self._spawn(self.store.put(mm_hash, payload))
            pushes.append(ec.PushItem(tid, mm_hash, payload))
        return out, pushes

    def _encoder_reply(
        self, request_id: str, prompt_tokens: int, out: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 0,
                "total_tokens": prompt_tokens,
            },
            "kv_transfer_params": None,
            "ec_transfer_params": out or None,
        }

    async def _push(self, consumer: str, items: list[ec.PushItem]) -> None:
        assert self.engine is not None
        if self._rng.randrange(100) < self.settings.drop_push_percent:
            self.metrics.ec_pushes.labels("dropped").inc()
            return
        try:
            await ec.push(
                self.engine, consumer, items, self.control_timeout_s, self.settings.hidden_size
            )
        except ec.ECTransferError as exc:
            self.metrics.ec_pushes.labels("failed").inc()
            log.warning("%s", exc)
            return
        self.metrics.ec_pushes.labels("ok").inc()
        self.metrics.ec_push_bytes.inc(sum(len(i.payload) for i in items))

    # ---- EC consumer -------------------------------------------------------------------------

    async def _load_shared_outputs(self, parts: list[MediaPart]) -> None:
        """ECExampleConnector: load what the encoder saved; encode what it did not."""
        assert self.shared_storage is not None
        for part in parts:
            mm_hash, _ = await self._item_identity(part)
            data = await asyncio.to_thread(_read_shared, self.shared_storage, mm_hash)
            if data is None or data != encoder_output(mm_hash, len(data)):
                self.metrics.consumer_encoded_items.inc()
                await asyncio.sleep(self.settings.encode_delay_s)
                continue
            self.metrics.ec_items_verified.inc()
            self.metrics.ec_bytes_verified.inc(len(data))

    async def _await_encoder_outputs(
        self, body: dict[str, Any], parts: list[MediaPart], dp_rank: int
    ) -> None:
        rx = self.receivers[dp_rank]
        ec_items = (body.get("ec_transfer_params") or {}).get("ec_items") or []
        request_id = uuid.uuid4().hex
        ids = [await self._item_identity(p) for p in parts]
        wanted = [
            (
                _transfer_id(ec_items, p.index, mm_hash) or f"{request_id}:{p.index}",
                mm_hash,
                content,
            )
            for p, (mm_hash, content) in zip(parts, ids, strict=True)
        ]
        deferred = self.metrics.waiting_reason.labels(**self.metrics.lbl(), reason="deferred")
        deferred.inc()
        try:
            got = await asyncio.gather(
                *(rx.wait_ready(tid, self.push_wait_s) for tid, _, _ in wanted),
                return_exceptions=True,
            )
        finally:
            deferred.dec()
        try:
            for (tid, mm_hash, content), res in zip(wanted, got, strict=True):
                if isinstance(res, BaseException):
                    reason = "timeout" if isinstance(res, TimeoutError) else "failed"
                    self.metrics.ec_failures.labels(reason).inc()
                    log.warning(
                        "EC wait for transfer %s (mm_hash %s…) %s", tid, mm_hash[:12], reason
                    )
                    raise RequestFailed(500, "Internal server error", "InternalServerError")
                if res.mm_hash != mm_hash or (
                    content is not None
                    and res.sha256 != checksum(encoder_output(mm_hash, res.nbytes))
                ):
                    self.metrics.ec_failures.labels("mismatch").inc()
                    raise RequestFailed(500, "Internal server error", "InternalServerError")
                self.metrics.ec_items_verified.inc()
                self.metrics.ec_bytes_verified.inc(res.nbytes)
        finally:
            for tid, _, _ in wanted:
                rx.cancel(tid)

    # ---- KV ----------------------------------------------------------------------------------

    async def _pull_kv(self, params: dict[str, Any]) -> None:
        assert self.engine is not None
        assert self.http is not None
        assert self.config.kv is not None
        if self.config.kv.connector == "NixlConnector":
            missing = [
                k
                for k in (
                    "remote_engine_id",
                    "remote_request_id",
                    "remote_host",
                    "remote_port",
                    "remote_block_ids",
                )
                if k not in params
            ]
            base = f"http://{params.get('remote_host')}:{params.get('remote_port')}"
            key = str(params.get("remote_request_id"))
        else:
            missing = [
                k
                for k in ("remote_bootstrap_addr", "remote_engine_id", "transfer_id")
                if k not in params
            ]
            base, key = str(params.get("remote_bootstrap_addr")), str(params.get("transfer_id"))
        if missing:
            raise RequestFailed(
                400,
                f"kv_transfer_params: missing {', '.join(missing)}",
                "BadRequestError",
                "kv_transfer_params",
            )
        try:
            if self.config.kv.connector == "MooncakeConnector":
                async with self.http.get(
                    f"{base}/query", timeout=aiohttp.ClientTimeout(total=10)
                ) as resp:
                    engines = {e["engine_id"] for e in (await resp.json()).values()}
                if params["remote_engine_id"] not in engines:
                    raise kv.KVTransferError(f"engine {params['remote_engine_id']} not at {base}")
            nbytes = await kv.pull(self.engine, self.http, base, key, 30.0)
        except (kv.KVTransferError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.kv_pulls.labels("failed").inc()
            log.warning("%s", exc)
            raise RequestFailed(500, "Internal server error", "InternalServerError") from exc
        self.metrics.kv_pulls.labels("ok").inc()
        self.metrics.kv_bytes.inc(nbytes)

    # ---- sampling and output ---------------------------------------------------------------

    def _sample(
        self,
        body: dict[str, Any],
        text: str,
        prompt_tokens: int,
        kv_params: dict[str, Any],
        dp_rank: int,
    ) -> Output:
        limit = (
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or self.settings.default_max_tokens
        )
        n = max(1, int(limit))
        eos = EOS_MARKER in text
        count = 1 if eos else n
        tokens = [f" tok{i}" for i in range(count)]
        finish = "stop" if eos else "length"
        out_params: dict[str, Any] | None = None
        if (
            self.kv_role == "kv_producer"
            and kv_params.get("do_remote_decode")
            and self.kv_source is not None
            and self.config.kv is not None
        ):
            nbytes = prompt_tokens * self.settings.kv_bytes_per_token
            if self.config.kv.connector == "NixlConnector":
                # NIXL hands the decode side its coordinates whatever the finish reason.
                key = uuid.uuid4().hex
                self.kv_source.stage(key, text, nbytes)
                out_params = {
                    "do_remote_prefill": True,
                    "do_remote_decode": False,
                    "remote_block_ids": [list(range(max(1, prompt_tokens // 16)))],
                    "remote_engine_id": self.engine_ids[dp_rank],
                    "remote_request_id": key,
                    "remote_host": self.pod.ip,
                    "remote_port": self.config.kv.side_channel_port + dp_rank,
                    "tp_size": self.launch.parallelism.tensor,
                    "dcp_size": 1,
                    "pp_size": self.launch.parallelism.pipeline,
                    "remote_num_tokens": prompt_tokens,
                    "transfer_mode": "pull",
                }
                self.metrics.kv_staged.inc()
            elif finish == "length" and kv_params.get("transfer_id"):
                # Mooncake KV sends only for FINISHED_LENGTH_CAPPED (mooncake_connector.py).
                self.kv_source.stage(str(kv_params["transfer_id"]), text, nbytes)
                self.metrics.kv_staged.inc()
        return Output(tokens, finish, prompt_tokens, out_params)

    def _full_body(self, body: dict[str, Any], kind: str, out: Output) -> dict[str, Any]:
        text = "".join(out.tokens)
        usage = {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": len(out.tokens),
            "total_tokens": out.prompt_tokens + len(out.tokens),
        }
        rid = uuid.uuid4().hex
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": out.finish_reason,
            }
            obj, prefix = "chat.completion", "chatcmpl"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": out.finish_reason,
            }
            obj, prefix = "text_completion", "cmpl"
        return {
            "id": f"{prefix}-{rid}",
            "object": obj,
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "kv_transfer_params": out.kv_transfer_params,
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], kind: str, out: Output
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        rid = uuid.uuid4().hex
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        prefix = "chatcmpl" if kind == "chat" else "cmpl"

        def chunk(piece: str | None, finish: str | None, first: bool = False) -> bytes:
            data: dict[str, Any] = {
                "id": f"{prefix}-{rid}",
                "object": obj,
                "created": created,
                "model": self.model,
                "choices": [_stream_choice(kind, piece, finish, first)],
            }
            if finish is not None:
                data["kv_transfer_params"] = out.kv_transfer_params
            return f"data: {json.dumps(data)}\n\n".encode()

        if kind == "chat":
            await resp.write(chunk(None, None, first=True))
        for i, tok in enumerate(out.tokens):
            if i:
                await asyncio.sleep(self.settings.decode_delay_per_token_s)
            last = i == len(out.tokens) - 1
            await resp.write(chunk(tok, out.finish_reason if last else None))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": len(out.tokens),
                "total_tokens": out.prompt_tokens + len(out.tokens),
            }
            usage_chunk: dict[str, Any] = {
                "id": f"{prefix}-{rid}",
                "object": obj,
                "created": created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _shared_file(root: Path, mm_hash: str) -> Path:
    # ECExampleConnector's layout (`_generate_filename_debug`).
    return root / mm_hash / "encoder_cache.safetensors"


def _save_shared(root: Path, mm_hash: str, nbytes: int) -> None:
    path = _shared_file(root, mm_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name per writer: two requests saving the same item at once must not share a temp file.
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(encoder_output(mm_hash, nbytes))
    tmp.replace(path)  # a consumer never sees half a file


def _read_shared(root: Path, mm_hash: str) -> bytes | None:
    try:
        return _shared_file(root, mm_hash).read_bytes()
    except OSError:
        return None


def _stream_choice(kind: str, piece: str | None, finish: str | None, first: bool) -> dict[str, Any]:
    """One streamed choice as vLLM sends it: a chat delta (the first one carries the role) or
    a completion's text."""
    if kind != "chat":
        return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
    delta: dict[str, Any] = (
        {"role": "assistant", "content": ""}
        if first
        else ({"content": piece} if piece is not None else {})
    )
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _transfer_id(ec_items: list[Any], index: int, mm_hash: str) -> str | None:
    """vLLM's matching rule: position first (if its mm_hash is absent or equal), then by mm_hash."""
    if index < len(ec_items):
        item = ec_items[index]
        if (
            isinstance(item, dict)
            and item.get("mm_hash") in (None, mm_hash)
            and item.get("transfer_id")
        ):
            return str(item["transfer_id"])
    for item in ec_items:
        if isinstance(item, dict) and item.get("mm_hash") == mm_hash and item.get("transfer_id"):
            return str(item["transfer_id"])
    return None
