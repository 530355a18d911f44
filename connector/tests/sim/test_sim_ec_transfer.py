"""The EC control protocol + Mooncake push, in one process: reserve, write, verify, wait."""

from __future__ import annotations

import asyncio
import socket

import pytest

from epd_connector.sim import ec
from epd_connector.sim.media import encoder_output
from epd_connector.transport import Engine

_ENGINES: dict[str, Engine] = {}


def _engine(name: str) -> Engine:
    # Shared across the module: tearing an engine down takes the library about a second.
    if name not in _ENGINES:
        _ENGINES[name] = Engine("127.0.0.1")
    return _ENGINES[name]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _consumer(slab: int = 8 << 20) -> tuple[ec.ECReceiver, ec.ControlServer, Engine]:
    engine = _engine("consumer")
    rx = ec.ECReceiver(engine, 0, slab)
    srv = ec.ControlServer(rx, "127.0.0.1", _port())
    await srv.start()
    return rx, srv, engine


def test_push_lands_verified_and_frees_on_cancel() -> None:
    async def run() -> None:
        rx, srv, _ = await _consumer()
        producer = _engine("producer")
        items = [
            ec.PushItem(f"t{i}", f"h{i}", encoder_output(f"h{i}", 64 * 1024)) for i in range(3)
        ]
        waiter = asyncio.create_task(rx.wait_ready("t1", 5))  # consumer may wait first
        await ec.push(producer, f"tcp://127.0.0.1:{srv.port}", items, 5, 1024)
        got = await waiter
        assert (got.mm_hash, got.nbytes, got.state) == ("h1", 64 * 1024, "ready")
        assert rx.buffer.read(got.offset, got.nbytes) == items[1].payload
        assert (rx.items_verified, rx.bytes_verified) == (3, 3 * 64 * 1024)
        for i in range(3):
            assert rx.cancel(f"t{i}")
        assert rx.slab.used_bytes == 0
        await srv.close()
        rx.close()

    asyncio.run(run())


def test_waiting_for_a_push_that_never_comes_times_out() -> None:
    async def run() -> None:
        rx, srv, _ = await _consumer()
        with pytest.raises(TimeoutError):
            await rx.wait_ready("never", 0.2)
        await srv.close()
        rx.close()

    asyncio.run(run())


def test_push_errors() -> None:
    async def run() -> None:
        rx, srv, _ = await _consumer(slab=4096)
        producer = _engine("producer")
        big = [ec.PushItem("t", "h", b"x" * 8192)]
        with pytest.raises(ec.ECTransferError, match="buffer pool is full"):
            await ec.push(producer, f"tcp://127.0.0.1:{srv.port}", big, 5, 8)
        with pytest.raises(ec.ECTransferError, match="cannot reach"):
            await ec.push(producer, f"tcp://127.0.0.1:{_port()}", big, 5, 8)
        await srv.close()
        rx.close()

    asyncio.run(run())


def test_checksum_mismatch_is_refused() -> None:
    async def run() -> None:
        rx, srv, _ = await _consumer()
        rx.reserve({"transfer_id": "t", "mm_hash": "h", "nbytes": 128})
        res = await rx.complete(
            {
                "transfer_id": "t",
                "reservation_id": rx.transfers["t"].reservation_id,
                "sha256": "0" * 64,
            }
        )  # nothing was written
        assert res["completed"] is False
        assert rx.verify_failures == 1
        with pytest.raises(ec.ECTransferError, match="failed"):
            await rx.wait_ready("t", 1)
        await srv.close()
        rx.close()

    asyncio.run(run())


@pytest.mark.parametrize("address", ["http://h:1", "tcp://h", "h:1", "tcp://:5"])
def test_consumer_zmq_must_be_tcp_host_port(address: str) -> None:
    with pytest.raises(ValueError, match="consumer_zmq"):
        ec.parse_consumer_zmq(address)


def test_consumer_zmq_ipv6() -> None:
    assert ec.parse_consumer_zmq("tcp://[fd00::5]:15000") == ("fd00::5", 15000)
