"""Request builders and metric helpers shared by the data-plane tests."""

from __future__ import annotations

import base64
from typing import Any

MODEL = "Qwen/Qwen3-VL-8B-Instruct"
MAX_BODY = 1 << 20  # the data-plane router's body limit (small, so the 413 case stays cheap)


def image_url(seed: str) -> str:
    return "data:image/png;base64," + base64.b64encode(f"pixels:{seed}".encode() * 64).decode()


def chat(
    *images: str, text: str = "describe", max_tokens: int = 4, stream: bool = False
) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in images]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))
