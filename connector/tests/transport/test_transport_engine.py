"""The Mooncake TransferEngine helpers against the real engine over TCP on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from epd_connector.transport import Engine, HostBuffer, TransportError, preflight


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Engine, Engine]]:
    # One pair for the module: tearing an engine down takes the library about a second.
    a, b = Engine("127.0.0.1"), Engine("127.0.0.1")
    yield a, b
    a.close()
    b.close()


def test_preflight_round_trips_bytes() -> None:
    result = preflight("127.0.0.1", "tcp", 1 << 20)
    assert result.ok, result.detail
    assert result.session.startswith("127.0.0.1:")


@pytest.mark.process
def test_preflight_cli_prints_json_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "epd_connector.transport", "--host", "127.0.0.1", "--bytes", "4096"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout


def test_write_and_read_between_two_engines(engines: tuple[Engine, Engine]) -> None:
    a, b = engines
    src, dst = HostBuffer(1 << 20), HostBuffer(1 << 20)
    try:
        a.register(src)
        b.register(dst)
        payload = os.urandom(1 << 20)
        src.write(0, payload)
        a.write(b.session, src.address, dst.address, len(payload))
        assert dst.read(0, len(payload)) == payload
        src.write(0, b"\0" * 4096)
        a.read(b.session, src.address, dst.address + 4096, 4096)  # pull back a slice
        assert src.read(0, 4096) == payload[4096:8192]
        a.batch_write(
            b.session, [src.address, src.address + 8], [dst.address, dst.address + 64], [8, 8]
        )
        assert dst.read(64, 8) == src.read(8, 8)
    finally:
        a.unregister(src)
        b.unregister(dst)
        src.close()
        dst.close()


def test_writes_to_dead_peers_and_unregistered_memory_fail_fast(
    engines: tuple[Engine, Engine],
) -> None:
    a, b = engines
    buf = HostBuffer(4096)
    try:
        a.register(buf)
        with pytest.raises(TransportError, match=r"127\.0\.0\.1:1 "):
            a.write("127.0.0.1:1", buf.address, buf.address, 4096)
        with pytest.raises(TransportError, match="returned"):
            a.write(b.session, buf.address, 12345, 4096)  # b registered nothing there
    finally:
        a.unregister(buf)
        buf.close()


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, 4097), (4000, 100)])
def test_host_buffer_bounds(offset: int, length: int) -> None:
    buf = HostBuffer(4096)
    try:
        with pytest.raises(ValueError, match="outside buffer"):
            buf.read(offset, length)
    finally:
        buf.close()


def test_host_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        HostBuffer(0)
