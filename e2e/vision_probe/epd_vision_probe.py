"""A vLLM general plugin that records who encoded and who preprocessed pixels, for the tests.

The engine tier puts this directory on PYTHONPATH of the engines it starts; vLLM loads every
`vllm.general_plugins` entry point in each of its processes (the `.dist-info` beside this file
declares one, so nothing is installed). The plugin appends one line per call to the file named
by EPD_VISION_PROBE_FILE, `<pid> <kind> <n>`:
- `vit <patch rows>`: Qwen2-VL's vision transformer `forward` (the engine core's process);
- `pre <images>`: the Hugging Face Qwen2-VL image processor's `_preprocess` (resize, normalise,
  patchify: the multimodal preprocessing vLLM runs in the API server's process).
A test compares counts before and after a request: the encoder's grow; an EC consumer's vision
tower must not run, and with media sent by reference its preprocessing must not either
(start-up profiling calls happen before).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

ENV_FILE = "EPD_VISION_PROBE_FILE"


def _record(path: str, kind: str, n: int) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"{os.getpid()} {kind} {n}\n")


def _wrap(cls: type, name: str, kind: str, size: Callable[..., int], path: str) -> None:
    original = getattr(cls, name)
    if getattr(original, "_epd_probe", False):
        return  # plugins load more than once per process

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _record(path, kind, size(*args, **kwargs))
        return original(self, *args, **kwargs)

    wrapper._epd_probe = True  # type: ignore[attr-defined]
    setattr(cls, name, wrapper)


def _rows(x: Any = None, *_: Any, **__: Any) -> int:
    return int(getattr(x, "shape", [0])[0])


def _images(images: Any = None, *_: Any, **kwargs: Any) -> int:
    images = kwargs.get("images", images)
    return len(images) if isinstance(images, list | tuple) else 1


def register() -> None:
    path = os.environ.get(ENV_FILE)
    if not path:
        return
    # Imported only when asked for: vLLM loads general plugins in every process, early.
    from vllm.model_executor.models import qwen2_vl  # noqa: PLC0415

    _wrap(qwen2_vl.Qwen2VisionTransformer, "forward", "vit", _rows, path)
    from transformers.models.qwen2_vl import image_processing_qwen2_vl  # noqa: PLC0415

    # transformers 5 has a torchvision and a PIL backend; vLLM may pick either.
    _wrap(image_processing_qwen2_vl.Qwen2VLImageProcessor, "_preprocess", "pre", _images, path)
    try:
        from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl  # noqa: PLC0415
    except ImportError:
        return
    _wrap(
        image_processing_pil_qwen2_vl.Qwen2VLImageProcessorPil, "_preprocess", "pre", _images, path
    )
