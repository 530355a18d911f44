"""A vLLM general plugin that counts vision-tower calls, so tests can prove who encoded pixels.

The engine tier puts this directory on PYTHONPATH of the engines it starts; vLLM loads every
`vllm.general_plugins` entry point in each of its processes (the `.dist-info` beside this file
declares one, so nothing is installed). The plugin wraps Qwen2-VL's vision transformer
`forward` and appends one line per call to the file named by EPD_VISION_PROBE_FILE:
`<pid> <number of patch rows>`. A test compares the count before and after a request: the
encoder's grows, an EC consumer's must not (start-up warm-up calls happen before).
"""

from __future__ import annotations

import functools
import os
from typing import Any

ENV_FILE = "EPD_VISION_PROBE_FILE"


def register() -> None:
    path = os.environ.get(ENV_FILE)
    if not path:
        return
    # Imported only when asked for: vLLM loads general plugins in every process, early.
    from vllm.model_executor.models import qwen2_vl  # noqa: PLC0415

    cls = qwen2_vl.Qwen2VisionTransformer
    if getattr(cls.forward, "_epd_probe", False):
        return  # plugins load more than once per process
    original = cls.forward

    @functools.wraps(original)
    def forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        rows = int(getattr(x, "shape", [0])[0])
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {rows}\n")
        return original(self, x, *args, **kwargs)

    forward._epd_probe = True  # type: ignore[attr-defined]
    cls.forward = forward  # type: ignore[method-assign]
