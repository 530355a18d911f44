"""Encoder-output hand-off: Mooncake TransferEngine over TCP vs a file write + read.

For 1, 16 and 64 MB payloads: (a) one `transfer_sync_write` from a registered buffer into a peer
engine's registered buffer over TCP on loopback (what ECMooncakeConnector does, minus the GPU),
(b) write the bytes to a file and read them back (what ECExampleConnector does with safetensors
on a shared filesystem; here a raw file write + read in the same directory, since safetensors
is not a pinned dependency: the same bytes hit the page cache, no serialisation header; with
--fsync the write is also flushed to disk). Prints GB/s (payload bytes / seconds, median of N).

    .venv/bin/python bench/transport_bench.py [--repeat N] [--dir PATH] [--fsync]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from epd_connector.transport import Engine, HostBuffer

SIZES_MB = (1, 16, 64)


def _te(size: int, repeat: int, producer: Engine, consumer: Engine) -> float:
    src, dst = HostBuffer(size), HostBuffer(size)
    producer.register(src)
    consumer.register(dst)
    payload = os.urandom(size)
    src.write(0, payload)
    times = []
    try:
        producer.write(consumer.session, src.address, dst.address, size)  # warm the session
        for _ in range(repeat):
            t0 = time.perf_counter()
            producer.write(consumer.session, src.address, dst.address, size)
            times.append(time.perf_counter() - t0)
        assert dst.read(0, size) == payload
    finally:
        producer.unregister(src)
        consumer.unregister(dst)
        src.close()
        dst.close()
    return size / statistics.median(times) / 1e9


def _file(size: int, repeat: int, directory: Path, fsync: bool) -> float:
    payload = os.urandom(size)
    path = directory / "encoder_output.bin"
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with path.open("wb") as f:
            f.write(payload)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        data = path.read_bytes()
        times.append(time.perf_counter() - t0)
        assert data == payload
        path.unlink()
    return size / statistics.median(times) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dir", type=Path, default=None, help="directory for the file variant")
    p.add_argument("--fsync", action="store_true", help="fsync the file before reading it back")
    args = p.parse_args()
    producer, consumer = Engine("127.0.0.1", "tcp"), Engine("127.0.0.1", "tcp")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="transport-bench-"))
    print(f"{'size':>6} {'mooncake TE tcp GB/s':>21} {'file write+read GB/s':>21} {'ratio':>6}")
    for mb in SIZES_MB:
        size = mb * 1_000_000
        te = _te(size, args.repeat, producer, consumer)
        fs = _file(size, args.repeat, directory, args.fsync)
        print(f"{mb:>4}MB {te:>21.2f} {fs:>21.2f} {te / fs:>6.2f}")
    producer.close()
    consumer.close()


if __name__ == "__main__":
    main()
