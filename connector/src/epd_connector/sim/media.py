"""Multimodal items of an OpenAI request, as the simulated engine sees them.

Finds the media parts of a chat request in prompt order, loads image bytes (data: URLs decode
locally, http(s) URLs are fetched, like vLLM's media connector), and derives what a real encoder
would: an identifier from the content (vLLM hashes the content when no uuid is given) and a
deterministic synthetic encoder output of `tokens x hidden x 2` bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

MEDIA_PART_TYPES = {
    "image_url": "image",
    "input_audio": "audio",
    "audio_url": "audio",
    "video_url": "video",
}
EMBEDS_PART_TYPES = {"image_embeds": "image", "audio_embeds": "audio", "video_embeds": "video"}


class MediaError(ValueError):
    """The request names media the engine cannot load; vLLM answers 400 for these."""


@dataclass(frozen=True)
class MediaPart:
    index: int
    modality: str
    part: dict[str, Any]

    @property
    def url(self) -> str | None:
        for key in ("image_url", "audio_url", "video_url"):
            value = self.part.get(key)
            if isinstance(value, dict):
                url = value.get("url")
                return url if isinstance(url, str) else None
            if isinstance(value, str):
                return value
        return None

    @property
    def is_embeds(self) -> bool:
        return self.part.get("type") in EMBEDS_PART_TYPES


def media_parts(body: dict[str, Any]) -> list[MediaPart]:
    """Media parts of a chat request, in prompt order (vLLM orders mm_features the same way)."""
    found: list[MediaPart] = []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return found
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            modality = MEDIA_PART_TYPES.get(str(kind)) or EMBEDS_PART_TYPES.get(str(kind))
            if modality is not None:
                found.append(MediaPart(len(found), modality, part))
    return found


def prompt_text(body: dict[str, Any]) -> str:
    """All text of a chat or completion request, joined (what the simulated tokenizer counts)."""
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    if isinstance(body.get("prompt"), list):
        return " ".join(str(p) for p in body["prompt"])
    texts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return " ".join(texts)


def decode_data_url(url: str) -> bytes:
    header, sep, data = url.partition(",")
    if not sep:
        raise MediaError("malformed data: URL (no ',')")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise MediaError(f"data: URL is not valid base64: {exc}") from exc
    return data.encode()


async def load_media(part: MediaPart, session: aiohttp.ClientSession, timeout_s: float) -> bytes:
    """The raw bytes of a media part; MediaError when they cannot be had."""
    url = part.url
    if url is None:
        raise MediaError(f"media item {part.index}: no URL in part {part.part.get('type')!r}")
    if url.startswith("data:"):
        return decode_data_url(url)
    if url.startswith(("http://", "https://")):
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                if resp.status != 200:
                    raise MediaError(
                        f"media item {part.index}: fetching {url} returned HTTP {resp.status}"
                    )
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MediaError(f"media item {part.index}: cannot fetch {url}: {exc!r}") from exc
    raise MediaError(f"media item {part.index}: unsupported URL scheme in {url[:40]!r}")


def identifier(model: str, modality: str, content: bytes, uuid: str | None = None) -> str:
    """The mm identifier: the uuid verbatim if given, else a hash of model + content."""
    if uuid:
        return uuid
    h = hashlib.sha256()
    h.update(model.encode())
    h.update(b"\0")
    h.update(modality.encode())
    h.update(b"\0")
    h.update(content)
    return h.hexdigest()


def encoder_output(mm_hash: str, nbytes: int) -> bytes:
    """Deterministic synthetic encoder output for one item (same hash -> same bytes)."""
    return random.Random(mm_hash).randbytes(nbytes)


def checksum(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def grid_thw(tokens: int) -> list[int]:
    """A Qwen-VL-style image_grid_thw whose merged (2x2) patch count equals `tokens`."""
    h = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
    return [1, 2 * h, 2 * (tokens // h)]
