"""Mooncake TransferEngine helpers: P2PHANDSHAKE init, pinned host buffers, checked writes.

vLLM 0.33's Mooncake EC connector (`ec_connector/mooncake/transfer.py`) drives the engine the same
way: `initialize(host, "P2PHANDSHAKE", protocol, "")`, a session named `host:rpc_port`, memory
registered up front and `batch_transfer_sync_write` into the peer's registered slab. The
simulator and the transport preflight use this module so they exercise the real engine, not a
stand-in. The engine calls block; async callers run them in a thread.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import threading
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class TransportError(RuntimeError):
    """A Mooncake engine call failed; the message names the call and the peer."""


class Region(Protocol):
    """Memory the engine can register: host memory (HostBuffer) or device memory such as a
    CUDA tensor's storage (the CUDA build of the engine registers GPU addresses directly)."""

    @property
    def address(self) -> int: ...

    @property
    def size(self) -> int: ...


class HostBuffer:
    """Page-aligned anonymous memory with a stable address (what the engine registers)."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"buffer size must be > 0, got {size}")
        self.size = size
        self._map = mmap.mmap(-1, size)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self.address: int = ctypes.addressof(self._anchor)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._map[offset : offset + len(data)] = data

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._map[offset : offset + length]

    def view(self, offset: int, length: int) -> memoryview:
        self._check(offset, length)
        return memoryview(self._map)[offset : offset + length]

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} outside buffer of {self.size} bytes")

    def close(self) -> None:
        # The ctypes anchor pins an export of the mmap; drop it before closing.
        del self._anchor
        self._map.close()


def _load_engine_class() -> Any:
    # Imported on first use: the module stays importable (and its errors readable) on hosts
    # without the native library.
    try:
        from mooncake.engine import TransferEngine  # noqa: PLC0415
    except ImportError as exc:  # e.g. libibverbs1 missing, or the package not installed
        raise TransportError(
            f"cannot import mooncake.engine.TransferEngine ({exc}); install the "
            "`transport` extra (mooncake-transfer-engine) and the libibverbs1 system library"
        ) from exc
    return TransferEngine


class Engine:
    """One initialised TransferEngine in P2PHANDSHAKE mode (no metadata server)."""

    def __init__(self, hostname: str, protocol: str = "tcp") -> None:
        cls = _load_engine_class()
        self.hostname = hostname
        self.protocol = protocol
        self._engine = cls()
        ret = self._engine.initialize(hostname, "P2PHANDSHAKE", protocol, "")
        if ret != 0:
            raise TransportError(
                f"TransferEngine.initialize({hostname!r}, P2PHANDSHAKE, {protocol!r}) "
                f"returned {ret}"
            )
        self._lock = threading.Lock()
        self._registered: dict[int, int] = {}

    @property
    def session(self) -> str:
        """The name peers write to: `<hostname>:<rpc port>` (vLLM's `dst_session`)."""
        return f"{self.hostname}:{self._engine.get_rpc_port()}"

    def register(self, buf: Region) -> None:
        with self._lock:
            ret = self._engine.register_memory(buf.address, buf.size)
            if ret != 0:
                raise TransportError(f"register_memory({buf.size} bytes) returned {ret}")
            self._registered[buf.address] = buf.size

    def unregister(self, buf: Region) -> None:
        with self._lock:
            if self._registered.pop(buf.address, None) is not None:
                self._engine.unregister_memory(buf.address)

    def write(self, session: str, src: int, dst: int, length: int) -> None:
        ret = self._engine.transfer_sync_write(session, src, dst, length)
        if ret != 0:
            raise TransportError(
                f"transfer_sync_write to {session} ({length} bytes) returned {ret}"
            )

    def batch_write(
        self, session: str, srcs: list[int], dsts: list[int], lengths: list[int]
    ) -> None:
        if not srcs:
            return
        ret = self._engine.batch_transfer_sync_write(session, srcs, dsts, lengths)
        if ret != 0:
            raise TransportError(
                f"batch_transfer_sync_write to {session} ({len(srcs)} items, "
                f"{sum(lengths)} bytes) returned {ret}"
            )

    def read(self, session: str, dst: int, src: int, length: int) -> None:
        """Pull `length` bytes from the peer's `src` into local `dst`."""
        ret = self._engine.transfer_sync_read(session, dst, src, length)
        if ret != 0:
            raise TransportError(
                f"transfer_sync_read from {session} ({length} bytes) returned {ret}"
            )

    def close(self) -> None:
        with self._lock:
            for address in list(self._registered):
                self._engine.unregister_memory(address)
            self._registered.clear()


@dataclass(frozen=True)
class PreflightResult:
    ok: bool
    session: str
    protocol: str
    nbytes: int
    detail: str


def preflight(hostname: str, protocol: str = "tcp", nbytes: int = 1 << 20) -> PreflightResult:
    """Initialise an engine on `hostname`, write a pattern to itself through the transport, compare.

    This is the check a pod can run before it serves: the engine starts, memory registers, and
    the chosen protocol actually carries bytes on the advertised address.
    """
    pattern = bytes((i * 131 + 7) % 251 for i in range(min(nbytes, 4096)))
    payload = (pattern * (nbytes // len(pattern) + 1))[:nbytes]
    try:
        engine = Engine(hostname, protocol)
    except TransportError as exc:
        return PreflightResult(False, "", protocol, nbytes, str(exc))
    buf = HostBuffer(2 * nbytes)
    try:
        engine.register(buf)
        buf.write(0, payload)
        engine.write(engine.session, buf.address, buf.address + nbytes, nbytes)
        ok = buf.read(nbytes, nbytes) == payload
        detail = "bytes round-tripped" if ok else "bytes differ after the write"
        return PreflightResult(ok, engine.session, protocol, nbytes, detail)
    except TransportError as exc:
        return PreflightResult(False, engine.session, protocol, nbytes, str(exc))
    finally:
        engine.close()
        buf.close()
