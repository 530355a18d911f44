"""Encoder-cache transfer, simulated with real bytes over the Mooncake TransferEngine.

Consumer side (the PD pod in E/PD, the prefill pod in E/P/D): one control server per DP rank at
`ec_port + dp_rank * tp`, i.e. the port named in `consumer_zmq`. Producer side (the encoder):
`push()` dials that address. The ops and their fields follow vLLM 0.33.0's
`ec_connector/mooncake/control.py` + `worker.py` (`peers`, `reserve_batch` -> `reservation_id`,
`dst_session`, `dst_ptr`, `write`; `complete_batch`; `cancel`; `status`). Two deliberate
differences, both because the simulator runs without pyzmq: frames are newline-delimited JSON on
a plain TCP socket instead of ZMQ REQ/REP, and `complete_batch` items carry a `sha256` of the
payload that the consumer checks against what landed in its slab before the item counts as
ready (vLLM trusts the transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from epd_connector.transport import Engine, HostBuffer, TransportError

from .media import checksum
from .slab import Slab, SlabFull

log = logging.getLogger(__name__)

_MAX_LINE = 1 << 20
RESERVATION_TTL_S = 300.0


class ECTransferError(RuntimeError):
    """A push to a consumer failed; the consumer will time out waiting for it."""


@dataclass
class Transfer:
    transfer_id: str
    mm_hash: str = ""
    reservation_id: str = ""
    offset: int = -1
    nbytes: int = 0
    state: str = "awaited"  # awaited -> reserved -> ready | failed
    sha256: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    touched: float = field(default_factory=time.monotonic)


class ECReceiver:
    """The receive slab of one consumer DP rank and the table of transfers into it."""

    def __init__(self, engine: Engine, dp_rank: int, slab_bytes: int) -> None:
        self.engine = engine
        self.dp_rank = dp_rank
        self.buffer = HostBuffer(slab_bytes)
        engine.register(self.buffer)
        self.slab = Slab(slab_bytes)
        self.transfers: dict[str, Transfer] = {}
        self.bytes_verified = 0
        self.items_verified = 0
        self.verify_failures = 0

    def _get(self, transfer_id: str) -> Transfer:
        t = self.transfers.get(transfer_id)
        if t is None:
            t = self.transfers[transfer_id] = Transfer(transfer_id)
        t.touched = time.monotonic()
        return t

    def reserve(self, item: dict[str, Any]) -> dict[str, Any]:
        transfer_id = str(item["transfer_id"])
        nbytes = int(item["nbytes"])
        t = self._get(transfer_id)
        if t.state in ("reserved", "ready"):
            if t.mm_hash != str(item["mm_hash"]) or t.nbytes != nbytes:
                raise ValueError("conflicting reservation for transfer_id")
        else:
            try:
                t.offset = self.slab.alloc(nbytes)
            except SlabFull as exc:
                raise RuntimeError(str(exc)) from exc
            t.mm_hash, t.nbytes, t.state = str(item["mm_hash"]), nbytes, "reserved"
            t.reservation_id = uuid.uuid4().hex
        return {
            "reservation_id": t.reservation_id,
            "dst_session": self.engine.session,
            "dst_ptr": self.buffer.address + t.offset,
            "nbytes": nbytes,
            "write": t.state == "reserved",
            "ready": t.state == "ready",
            "cached": False,
        }

    async def complete(self, item: dict[str, Any]) -> dict[str, Any]:
        t = self.transfers.get(str(item["transfer_id"]))
        if t is None or t.reservation_id != str(item.get("reservation_id")):
            return {"completed": False, "became_ready": False}
        if t.state == "ready":
            return {"completed": True, "became_ready": False}
        view = self.buffer.view(t.offset, t.nbytes)
        # Big payloads hash off the event loop so other requests keep flowing.
        got = await asyncio.to_thread(checksum, view) if t.nbytes > (4 << 20) else checksum(view)
        if got != item.get("sha256"):
            self.verify_failures += 1
            log.error("EC transfer %s: checksum mismatch (%d bytes)", t.transfer_id, t.nbytes)
            t.state = "failed"
            t.ready.set()
            return {"completed": False, "became_ready": False, "error": "checksum mismatch"}
        t.sha256, t.state = got, "ready"
        self.bytes_verified += t.nbytes
        self.items_verified += 1
        t.ready.set()
        return {"completed": True, "became_ready": True}

    def cancel(self, transfer_id: str) -> bool:
        t = self.transfers.pop(transfer_id, None)
        if t is None:
            return False
        if t.offset >= 0:
            self.slab.free(t.offset)
        return True

    async def wait_ready(self, transfer_id: str, timeout_s: float) -> Transfer:
        """Wait for a verified push; TimeoutError after `timeout_s` (vLLM's push_wait_timeout_s)."""
        t = self._get(transfer_id)
        await asyncio.wait_for(t.ready.wait(), timeout_s)
        if t.state != "ready":
            raise ECTransferError(f"transfer {transfer_id}: {t.state}")
        return t

    def reap(self, ttl_s: float = RESERVATION_TTL_S) -> None:
        now = time.monotonic()
        for tid in [tid for tid, t in self.transfers.items() if now - t.touched > ttl_s]:
            self.cancel(tid)

    def close(self) -> None:
        self.engine.unregister(self.buffer)
        self.buffer.close()


class ControlServer:
    """Serves the consumer ops for one DP rank on `host:port` (one JSON object per line)."""

    def __init__(self, receiver: ECReceiver, host: str, port: int) -> None:
        self.receiver, self.host, self.port = receiver, host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=_MAX_LINE
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, "result": await self._handle(json.loads(line))}
                except Exception as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _handle(self, req: dict[str, Any]) -> Any:
        op = req.get("op")
        r = self.receiver
        if op == "peers":
            return {"ports": [self.port]}
        if op in ("reserve", "reserve_batch"):
            items = req["items"] if op == "reserve_batch" else [req]
            results: list[dict[str, Any]] = []
            for item in items:
                try:
                    results.append({"ok": True, "result": r.reserve(item)})
                except Exception as exc:
                    results.append({"ok": False, "error": str(exc)})
            if op == "reserve":
                if not results[0]["ok"]:
                    raise RuntimeError(results[0]["error"])
                return results[0]["result"]
            return {"items": results}
        if op in ("complete", "complete_batch"):
            items = req["items"] if op == "complete_batch" else [req]
            done = [await r.complete(item) for item in items]
            return {"items": done} if op == "complete_batch" else done[0]
        if op == "cancel":
            return {"cancelled": r.cancel(str(req["transfer_id"]))}
        if op == "status":
            t = r.transfers.get(str(req["transfer_id"]))
            return (
                None
                if t is None
                else {"mm_hash": t.mm_hash, "ready": t.state == "ready", "nbytes": t.nbytes}
            )
        raise ValueError(f"unknown control op: {op!r}")


def parse_consumer_zmq(address: str) -> tuple[str, int]:
    """`tcp://host:port` (IPv6 bracketed) -> (host, port); ValueError names the problem."""
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise ValueError(f"consumer_zmq must look like tcp://<host>:<port>, got {address!r}")
    return parts.hostname, parts.port


@dataclass(frozen=True)
class PushItem:
    transfer_id: str
    mm_hash: str
    payload: bytes


class _Control:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def call(self, req: dict[str, Any]) -> Any:
        self.writer.write(json.dumps(req).encode() + b"\n")
        await self.writer.drain()
        line = await self.reader.readline()
        if not line:
            raise ECTransferError("consumer closed the control connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ECTransferError(f"op {req.get('op')}: {reply.get('error')}")
        return reply["result"]


async def push(
    engine: Engine, consumer_zmq: str, items: list[PushItem], timeout_s: float, shape_hidden: int
) -> None:
    """Reserve on the consumer, write every payload with the TransferEngine, then complete."""
    host, port = parse_consumer_zmq(consumer_zmq)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=_MAX_LINE), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise ECTransferError(f"cannot reach EC consumer {consumer_zmq}: {exc!r}") from exc
    ctl = _Control(reader, writer)
    staging = HostBuffer(sum(len(i.payload) for i in items) or 1)
    try:
        async with asyncio.timeout(timeout_s):
            await ctl.call({"op": "peers"})
            slots = await _reserve(ctl, items, shape_hidden)
            engine.register(staging)
            await _write(engine, staging, items, slots)
            await _complete(ctl, items, slots)
    except TimeoutError as exc:
        raise ECTransferError(f"EC push to {consumer_zmq} timed out after {timeout_s}s") from exc
    except (OSError, TransportError, ValueError) as exc:
        raise ECTransferError(f"EC push to {consumer_zmq} failed: {exc}") from exc
    finally:
        engine.unregister(staging)
        staging.close()
        writer.close()


async def _reserve(ctl: _Control, items: list[PushItem], shape_hidden: int) -> list[dict[str, Any]]:
    """A slot on the consumer per item (its receive buffer, or none when it has the item)."""
    reserved = await ctl.call(
        {
            "op": "reserve_batch",
            "items": [
                {
                    "transfer_id": i.transfer_id,
                    "mm_hash": i.mm_hash,
                    "nbytes": len(i.payload),
                    "shape": [len(i.payload) // (2 * shape_hidden), shape_hidden],
                    "dtype": "bfloat16",
                }
                for i in items
            ],
        }
    )
    slots = []
    for item, res in zip(items, reserved["items"], strict=True):
        if not res["ok"]:
            raise ECTransferError(f"reserve {item.transfer_id}: {res['error']}")
        slots.append(res["result"])
    return slots


async def _write(
    engine: Engine, staging: HostBuffer, items: list[PushItem], slots: list[dict[str, Any]]
) -> None:
    """Stage every payload, then one TransferEngine batch per destination session (one per
    consumer shard)."""
    batches: dict[str, tuple[list[int], list[int], list[int]]] = {}
    offset = 0
    for item, slot in zip(items, slots, strict=True):
        staging.write(offset, item.payload)
        if slot["write"]:
            srcs, dsts, lens = batches.setdefault(str(slot["dst_session"]), ([], [], []))
            srcs.append(staging.address + offset)
            dsts.append(int(slot["dst_ptr"]))
            lens.append(len(item.payload))
        offset += len(item.payload)
    for session, (srcs, dsts, lens) in batches.items():
        await asyncio.to_thread(engine.batch_write, session, srcs, dsts, lens)


async def _complete(ctl: _Control, items: list[PushItem], slots: list[dict[str, Any]]) -> None:
    """The consumer verifies each item's checksum and makes it visible."""
    done = await ctl.call(
        {
            "op": "complete_batch",
            "items": [
                {
                    "transfer_id": i.transfer_id,
                    "reservation_id": s["reservation_id"],
                    "sha256": checksum(i.payload),
                }
                for i, s in zip(items, slots, strict=True)
            ],
        }
    )
    for item, res in zip(items, done["items"], strict=True):
        if not res["completed"]:
            raise ECTransferError(f"complete {item.transfer_id}: {res.get('error', 'rejected')}")
