"""Pure request rewriting for the EPD flows (vLLM 0.33.0 wire protocol; no I/O here).

Checked against vLLM 0.33.0's source:
- `ec_transfer_params` is accepted on chat/completions requests (`chat_completion/protocol.py`,
  passed on via `extra_args`) and returned only in non-streaming bodies
  (`chat_completion/serving.py`: `ChatCompletionResponse(..., ec_transfer_params=...)`), so the
  encoder call is `stream: false`;
- the encoder's answer is keyed by mm_hash, each entry echoing `transfer_id`
  (`ec_connector/mooncake/scheduler.py::request_finished`);
- the consumer matches `ec_items[i]` to the i-th item in prompt order when its `mm_hash` is absent
  or equal, else by `mm_hash` (`scheduler.py::_request_transfer_id`), so the router sends one
  entry per item, in order, with the mm_hash the encoder reported;
- Mooncake KV: P gets `{do_remote_decode: true, do_remote_prefill: false, transfer_id}` and
  `max_tokens=1`; D gets `{do_remote_decode: false, do_remote_prefill: true,
  remote_bootstrap_addr, remote_engine_id, transfer_id}` (`kv_connector/v1/mooncake/
  mooncake_connector.py::update_state_after_alloc`); P sends KV only when it finished
  length-capped (`request_finished`), so a P answer that stopped is final;
- NIXL: P gets `do_remote_decode: true` and its answer's `kv_transfer_params` go to D unchanged;
- ECExampleConnector has no push: the encoder writes each output to the shared volume under its
  mm_hash (`ec_connector/example_connector.py::save_caches`) and answers with
  `ec_transfer_params` {mm_hash: {item_indices, metadata}} (`request_finished`); the consumer
  loads a file that exists when it schedules the request, and encodes by itself otherwise. So
  the consumer is called only after every encoder call has answered;
- preprocessing once (`consumer_media="reference"`): the encoder's `metadata` holds the fields
  its model declares as sizing the placeholder (`embedding_fields` roles "metadata" in
  `multimodal/parse.py`, collected by `ec_connector/utils.py::collect_ec_item_metadata`, e.g.
  Qwen2-VL's `image_grid_thw`). An EC consumer (and a KV consumer) sets
  `allow_missing_mm_embeddings` and accepts an `<modality>_embeds` part that carries only those
  fields plus a `uuid` (`config/vllm.py`), so it never loads or preprocesses the pixels. Both
  sides must derive the same mm_hash, so the encoder gets the same `uuid` on the raw item.
  An item whose metadata is empty (a model that declares none for the modality, or a processor
  cache hit under `--mm-processor-cache-type shm`) is sent raw (with its uuid); a request with
  audio (or video with `use_audio_in_video`) stays raw as a whole when any item lacks metadata,
  because audio processors may consume other modalities' placeholders. vLLM's own EPD proxy
  (`examples/disaggregated/disaggregated_encoder/disagg_epd_proxy.py`) applies the same rules.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

CONSUMER_MEDIA_MODES = ("reference", "raw")
DEFAULT_CONSUMER_MEDIA = "reference"

MEDIA_TYPES = {
    "image_url": "image",
    "input_audio": "audio",
    "audio_url": "audio",
    "video_url": "video",
    "image_embeds": "image",
    "audio_embeds": "audio",
    "video_embeds": "video",
}
# Raw media part type -> the embeds part type a consumer gets instead (reference mode).
EMBEDS_OF = {
    "image_url": "image_embeds",
    "audio_url": "audio_embeds",
    "input_audio": "audio_embeds",
    "video_url": "video_embeds",
}
# Request keys that change multimodal identifiers; the encoder must see the same values.
MM_KWARGS_KEYS = ("mm_processor_kwargs", "media_io_kwargs")


@dataclass(frozen=True)
class MediaRef:
    index: int  # position among the request's media items (prompt order)
    part: dict[str, Any]
    content_key: str  # affinity key: a hash of the item as sent (data: URLs carry the content)

    @property
    def raw(self) -> bool:
        """Pixels (or samples) the consumer would have to load and preprocess itself."""
        return self.part.get("type") in EMBEDS_OF

    @property
    def uuid(self) -> str:
        """The item's identifier: the client's `uuid`, else derived from the content, so a
        repeat of the same item keys the same encoder cache entry."""
        given = self.part.get("uuid")
        return given if isinstance(given, str) and given else self.content_key


@dataclass(frozen=True)
class Encoded:
    """What one encoder call reported for one item."""

    mm_hash: str
    transfer_id: str
    modality: str
    metadata: dict[str, Any]


def media_refs(body: dict[str, Any]) -> list[MediaRef]:
    refs: list[MediaRef] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return refs
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") in MEDIA_TYPES:
                key = hashlib.sha256(orjson.dumps(part, option=orjson.OPT_SORT_KEYS)).hexdigest()
                refs.append(MediaRef(len(refs), part, key))
    return refs


def new_transfer_id() -> str:
    """Fresh for every attempt: vLLM rejects a transfer_id reused within its 300 s tombstone."""
    return uuid.uuid4().hex


def encoder_request(
    body: dict[str, Any],
    ref: MediaRef,
    consumer_zmq: str | None,
    transfer_id: str,
    *,
    with_uuid: bool = False,
) -> dict[str, Any]:
    """One encoder call per media item: only that item, non-streaming, with the EC target
    (`consumer_zmq` None: a connector without push, such as ECExampleConnector). `with_uuid`
    (reference mode) names the item by `ref.uuid`, the identifier the consumer will get."""
    part = {**ref.part, "uuid": ref.uuid} if with_uuid and ref.raw else ref.part
    req: dict[str, Any] = {
        "messages": [{"role": "user", "content": [part]}],
        "stream": False,
    }
    if consumer_zmq is not None:
        req["ec_transfer_params"] = {
            "consumer_zmq": consumer_zmq,
            "ec_items": [{"transfer_id": transfer_id}],
        }
    if "model" in body:
        req["model"] = body["model"]
    for key in MM_KWARGS_KEYS:
        if key in body:
            req[key] = body[key]
    return req


def encoded_item(response: dict[str, Any], ref: MediaRef, transfer_id: str) -> Encoded:
    """What the encoder reported for the item sent with `transfer_id`; ValueError if nothing."""
    params = response.get("ec_transfer_params")
    if not isinstance(params, dict) or not params:
        raise ValueError("encoder answer has no ec_transfer_params")
    found = next(
        (
            (h, e)
            for h, e in params.items()
            if isinstance(e, dict) and e.get("transfer_id") == transfer_id
        ),
        None,
    )
    if found is None and len(params) == 1:
        found = next(iter(params.items()))
    if found is None:
        raise ValueError(f"encoder answer names no item with transfer_id {transfer_id}")
    mm_hash, entry = found
    entry = entry if isinstance(entry, dict) else {}
    metadata = entry.get("metadata")
    modality = entry.get("modality")
    return Encoded(
        str(mm_hash),
        transfer_id,
        modality if isinstance(modality, str) else MEDIA_TYPES[str(ref.part.get("type"))],
        metadata if isinstance(metadata, dict) else {},
    )


def with_ec_items(body: dict[str, Any], items: list[tuple[str, str]]) -> dict[str, Any]:
    """The consumer request: the original body plus `ec_items` [(mm_hash, transfer_id)] in order."""
    req = dict(body)
    params = dict(req.get("ec_transfer_params") or {})
    params["ec_items"] = [{"mm_hash": h, "transfer_id": t} for h, t in items]
    req["ec_transfer_params"] = params
    return req


def _flat(values: Any) -> list[Any]:
    """vLLM stacks embeds metadata per item: [[1, 2, 4]] (one grid per item) -> [1, 2, 4]."""
    items = values if isinstance(values, list) else [values]
    return [x for v in items for x in (v if isinstance(v, list) else [v])]


def _embeds_part(ref: MediaRef, enc: Encoded) -> dict[str, Any]:
    fields = {k: _flat(v) for k, v in enc.metadata.items()}
    return {
        "type": EMBEDS_OF[str(ref.part["type"])],
        f"{enc.modality}_embeds": fields,
        "uuid": ref.uuid,
    }


def _audio_involved(body: dict[str, Any], refs: list[MediaRef]) -> bool:
    in_video = bool((body.get("mm_processor_kwargs") or {}).get("use_audio_in_video"))
    return any(
        MEDIA_TYPES.get(str(r.part.get("type"))) == "audio"
        or (r.part.get("type") == "video_url" and in_video)
        for r in refs
    )


def by_reference(
    body: dict[str, Any], refs: list[MediaRef], encoded: list[Encoded]
) -> dict[str, Any]:
    """The consumer body with each raw media item replaced by its metadata-only embeds part.

    Items the encoder reported no metadata for stay raw, with the uuid the encoder hashed; a
    request with audio stays raw as a whole when any item lacks metadata (module docstring)."""
    assert len(refs) == len(encoded)
    missing = any(r.raw and not e.metadata for r, e in zip(refs, encoded, strict=True))
    whole_raw = missing and _audio_involved(body, refs)
    at = iter(zip(refs, encoded, strict=True))
    messages: list[Any] = []
    # The same walk as media_refs, so the n-th media part met is refs[n].
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            messages.append(message)
            continue
        parts: list[Any] = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") in MEDIA_TYPES):
                parts.append(part)
                continue
            ref, enc = next(at)
            if not ref.raw:
                parts.append(part)
            elif whole_raw or not enc.metadata:
                parts.append({**part, "uuid": ref.uuid})
            else:
                parts.append(_embeds_part(ref, enc))
        messages.append({**message, "content": parts})
    return {**body, "messages": messages}


def prefill_request(body: dict[str, Any], kv_params: dict[str, Any]) -> dict[str, Any]:
    """The P call of E/P/D: one token, non-streaming, with the KV producer parameters."""
    req = copy.copy(body)
    req["max_tokens"] = 1
    if "max_completion_tokens" in req:
        req["max_completion_tokens"] = 1
    req["stream"] = False
    req.pop("stream_options", None)
    req["kv_transfer_params"] = kv_params
    return req


def mooncake_prefill_params(transfer_id: str) -> dict[str, Any]:
    return {"do_remote_decode": True, "do_remote_prefill": False, "transfer_id": transfer_id}


def mooncake_decode_params(bootstrap_addr: str, engine_id: str, transfer_id: str) -> dict[str, Any]:
    return {
        "do_remote_decode": False,
        "do_remote_prefill": True,
        "remote_bootstrap_addr": bootstrap_addr,
        "remote_engine_id": engine_id,
        "transfer_id": transfer_id,
    }


def nixl_prefill_params() -> dict[str, Any]:
    return {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }


def decode_request(body: dict[str, Any], kv_params: dict[str, Any]) -> dict[str, Any]:
    req = dict(body)
    req.pop("ec_transfer_params", None)
    req["kv_transfer_params"] = kv_params
    return req


def finish_reason(response: dict[str, Any]) -> str | None:
    choices = response.get("choices") or []
    return choices[0].get("finish_reason") if choices and isinstance(choices[0], dict) else None


def as_sse(response: dict[str, Any]) -> bytes:
    """A complete non-streaming answer re-emitted as SSE chunks (P's final answer, stream asked)."""
    chunks: list[dict[str, Any]] = []
    base = {k: response.get(k) for k in ("id", "created", "model")}
    for choice in response.get("choices") or []:
        if "message" in choice:
            msg = choice.get("message") or {}
            chunks.append(
                {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [
                        {
                            "index": choice.get("index", 0),
                            "delta": {
                                "role": msg.get("role", "assistant"),
                                "content": msg.get("content") or "",
                            },
                            "logprobs": None,
                            "finish_reason": choice.get("finish_reason"),
                        }
                    ],
                }
            )
        else:
            chunks.append(
                {
                    **base,
                    "object": "text_completion",
                    "choices": [
                        {
                            "index": choice.get("index", 0),
                            "text": choice.get("text") or "",
                            "logprobs": None,
                            "finish_reason": choice.get("finish_reason"),
                        }
                    ],
                }
            )
    out = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return out + b"data: [DONE]\n\n"
