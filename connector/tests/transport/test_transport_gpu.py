"""GPU tier: the Mooncake transfer engine (CUDA build, as in the engine image) moving
GPU-resident encoder outputs between two engines, the way vLLM's EC Mooncake connector moves a
producer's staging slab into a consumer's receive slab.

Marked `gpu`: deselected by default (pyproject addopts), so CI never runs it. `pytest -m gpu`
runs it on a machine with an NVIDIA GPU, torch with CUDA and `mooncake-transfer-engine-cuda13`
(see connector/engine-requirements.txt); there a missing GPU is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from epd_connector.transport.engine import Engine

pytestmark = pytest.mark.gpu


class CudaRegion:
    """A CUDA tensor's storage as an engine-registrable region."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self.address: int = tensor.data_ptr()
        self.size: int = tensor.numel() * tensor.element_size()


def _torch() -> Any:
    import torch  # noqa: PLC0415 - only on GPU hosts

    assert torch.cuda.is_available(), "the gpu tier needs a CUDA device"
    return torch


@pytest.mark.parametrize(
    ("tokens", "hidden"),
    [
        (1, 8),  # smallest item
        (1_024, 3_584),  # ~7 MiB: one image's encoder output of a 7B VL model
        (8_192, 4_096),  # 64 MiB: a large multi-image prompt
    ],
)
def test_gpu_encoder_output_moves_between_engines(tokens: int, hidden: int) -> None:
    torch = _torch()
    gen = torch.Generator(device="cuda").manual_seed(tokens * 31 + hidden)
    src = torch.randn((tokens, hidden), dtype=torch.bfloat16, device="cuda", generator=gen)
    dst = torch.zeros_like(src)
    producer, consumer = Engine("127.0.0.1"), Engine("127.0.0.1")
    try:
        src_region, dst_region = CudaRegion(src), CudaRegion(dst)
        producer.register(src_region)
        consumer.register(dst_region)
        producer.write(consumer.session, src_region.address, dst_region.address, src_region.size)
        torch.cuda.synchronize()
        assert torch.equal(src, dst)
        want = hashlib.sha256(src.view(torch.uint8).cpu().numpy().tobytes()).hexdigest()
        got = hashlib.sha256(dst.view(torch.uint8).cpu().numpy().tobytes()).hexdigest()
        assert got == want
    finally:
        producer.close()
        consumer.close()


def test_gpu_batch_write_places_items_at_their_offsets() -> None:
    """Several items in one batch into one receive slab, as `batch_transfer_sync_write` does
    for a multi-image request; every item lands at its own offset and nothing else changes."""
    torch = _torch()
    sizes = [4_096, 65_536, 1 << 20]
    items = [torch.full((n,), i + 1, dtype=torch.uint8, device="cuda") for i, n in enumerate(sizes)]
    slab = torch.zeros(sum(sizes) + 4_096, dtype=torch.uint8, device="cuda")
    producer, consumer = Engine("127.0.0.1"), Engine("127.0.0.1")
    try:
        for t in items:
            producer.register(CudaRegion(t))
        slab_region = CudaRegion(slab)
        consumer.register(slab_region)
        offsets, off = [], 0
        for n in sizes:
            offsets.append(off)
            off += n
        producer.batch_write(
            consumer.session,
            [t.data_ptr() for t in items],
            [slab_region.address + o for o in offsets],
            sizes,
        )
        torch.cuda.synchronize()
        for i, (o, n) in enumerate(zip(offsets, sizes, strict=True)):
            assert bool((slab[o : o + n] == i + 1).all())
        assert int(slab[sum(sizes) :].sum()) == 0
    finally:
        producer.close()
        consumer.close()


def test_gpu_transfer_throughput_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints GB/s for GPU->GPU over the TCP transport (a figure, not a timed assertion)."""
    torch = _torch()
    producer, consumer = Engine("127.0.0.1"), Engine("127.0.0.1")
    try:
        for mib in (1, 16, 64):
            n = mib << 20
            src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
            dst = torch.zeros_like(src)
            s, d = CudaRegion(src), CudaRegion(dst)
            producer.register(s)
            consumer.register(d)
            producer.write(consumer.session, s.address, d.address, n)  # warm-up
            reps = 5
            start = time.perf_counter()
            for _ in range(reps):
                producer.write(consumer.session, s.address, d.address, n)
            torch.cuda.synchronize()
            secs = (time.perf_counter() - start) / reps
            assert torch.equal(src, dst)
            with capsys.disabled():
                print(f"\ngpu->gpu tcp transfer {mib:>3} MiB: {n / secs / 1e9:.2f} GB/s")
            producer.unregister(s)
            consumer.unregister(d)
    finally:
        producer.close()
        consumer.close()
