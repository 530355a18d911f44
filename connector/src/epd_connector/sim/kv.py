"""Prefill -> decode KV handoff, simulated with real bytes over the Mooncake TransferEngine.

The prefill pod stages a synthetic KV blob per transfer in a registered slab and serves, on its
side port, what vLLM 0.33.0's Mooncake KV bootstrap server serves (`GET /query` ->
`{dp_rank: {engine_id, worker_addr: {tp: {pp: addr}}}}`, `kv_connector/v1/mooncake/
mooncake_utils.py`) plus one simulator route, `GET /sim/kv/{id}` -> `{session, addr, nbytes,
sha256}`, that stands in for the worker-to-worker handshake. The decode pod reads the blob with
`transfer_sync_read` (the real consumer pulls too) and checks the checksum.
With NixlConnector the same side server sits on `side_channel_port + dp_rank` and the blob is
keyed by `remote_request_id`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from epd_connector.transport import Engine, HostBuffer, TransportError

from .media import checksum, encoder_output
from .slab import Slab, SlabFull

KV_TTL_S = 120.0


class KVTransferError(RuntimeError):
    pass


@dataclass
class _Staged:
    offset: int
    nbytes: int
    sha256: str
    created: float


class KVSource:
    """Prefill side: staged KV blobs and the side-port routes that describe them."""

    def __init__(
        self, engine: Engine, slab_bytes: int, engine_ids: list[str], host: str, port: int
    ) -> None:
        self.engine = engine
        self.buffer = HostBuffer(slab_bytes)
        engine.register(self.buffer)
        self.slab = Slab(slab_bytes)
        self.staged: dict[str, _Staged] = {}
        self.engine_ids = engine_ids
        self.host, self.port = host, port

    def stage(self, key: str, seed: str, nbytes: int) -> None:
        self.reap()
        nbytes = max(64, min(nbytes, self.slab.size // 4))
        try:
            offset = self.slab.alloc(nbytes)
        except SlabFull as exc:
            raise KVTransferError(f"KV slab full: {exc}") from exc
        data = encoder_output(f"kv:{seed}", nbytes)
        self.buffer.write(offset, data)
        self.staged[key] = _Staged(offset, nbytes, checksum(data), time.monotonic())

    def release(self, key: str) -> None:
        st = self.staged.pop(key, None)
        if st is not None:
            self.slab.free(st.offset)

    def reap(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.staged.items() if now - s.created > KV_TTL_S]:
            self.release(key)

    def routes(self) -> list[web.RouteDef]:
        async def query(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    str(dp): {
                        "engine_id": eid,
                        "worker_addr": {"0": {"0": f"tcp://{self.host}:{self.port}"}},
                    }
                    for dp, eid in enumerate(self.engine_ids)
                }
            )

        async def describe(request: web.Request) -> web.Response:
            st = self.staged.get(request.match_info["key"])
            if st is None:
                return web.json_response({"error": "unknown transfer"}, status=404)
            return web.json_response(
                {
                    "session": self.engine.session,
                    "addr": self.buffer.address + st.offset,
                    "nbytes": st.nbytes,
                    "sha256": st.sha256,
                }
            )

        async def done(request: web.Request) -> web.Response:
            self.release(request.match_info["key"])
            return web.json_response({"released": True})

        return [
            web.get("/query", query),
            web.get("/sim/kv/{key}", describe),
            web.post("/sim/kv/{key}/done", done),
        ]

    def close(self) -> None:
        self.engine.unregister(self.buffer)
        self.buffer.close()


async def pull(
    engine: Engine, session: aiohttp.ClientSession, base_url: str, key: str, timeout_s: float
) -> int:
    """Read one staged KV blob from a prefill pod and verify it; returns the byte count."""
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(f"{base_url}/sim/kv/{key}") as resp:
                if resp.status != 200:
                    raise KVTransferError(f"KV {key} at {base_url}: HTTP {resp.status}")
                desc = await resp.json()
            nbytes = int(desc["nbytes"])
            local = HostBuffer(nbytes)
            try:
                engine.register(local)
                await asyncio.to_thread(
                    engine.read, str(desc["session"]), local.address, int(desc["addr"]), nbytes
                )
                if checksum(local.view(0, nbytes)) != desc["sha256"]:
                    raise KVTransferError(f"KV {key}: checksum mismatch")
            finally:
                engine.unregister(local)
                local.close()
            async with session.post(f"{base_url}/sim/kv/{key}/done") as resp:
                await resp.read()
            return nbytes
    except (aiohttp.ClientError, TimeoutError, TransportError, KeyError, ValueError) as exc:
        raise KVTransferError(f"KV pull {key} from {base_url}: {exc!r}") from exc
