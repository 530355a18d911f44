"""The simulated encoders' shared encoder cache: a real Mooncake Store through a real
`mooncake_master`, as vLLM 0.33's cross_encoder_cache uses it.

What vLLM does (ec_connector/mooncake/, `mooncake_store_embedding/`): an encode-only producer
looks each image up in the Store by a key built from the model identity and the item's
multimodal identifier; a hit is read from the Store instead of encoded, a miss is encoded and
published to the Store afterwards (a bounded queue, off the request path). A lookup or GET
error falls back to encoding. Only images are shared. The simulator does the same with the
same client (`mooncake.store.MooncakeDistributedStore`), configured from the file the launcher
wrote (MOONCAKE_CONFIG_PATH), so two encoders share outputs for real: the bytes of a hit come
from whichever encoder's segment holds them, over the Store's transport.

The client is blocking C++: calls run on worker threads, never on the event loop; lookups and
publishing have a thread each (as in vLLM, where the scheduler looks up while a publisher
thread puts), so a GET never queues behind a PUT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.store import ENV_STORE_CONFIG

from .metrics import SimMetrics

log = logging.getLogger(__name__)

# A publish queue bound, like vLLM's store_max_pending_items default: beyond it, outputs are
# not published (the next encoder encodes them again) rather than piling up.
MAX_PENDING_PUTS = 32


class StoreUnavailable(RuntimeError):
    """The Store client could not be set up (no config file, master unreachable)."""


def store_key(config: LaunchConfig, mm_hash: str) -> str:
    """The Store key of one item: vLLM's parts that the simulator has (namespace prefix,
    model identity and revision, dtype, protocol version, the multimodal identifier)."""
    extra = config.ec.extra_config
    prefix = str(extra.get("embedding_cache_prefix") or "")
    model = str(extra.get("embedding_model_identity") or config.model.name)
    key = (
        f"embedding@model:{model}@revision:{config.model.revision or 'main'}"
        f"@dtype:bfloat16@protocol:v3@id:{mm_hash}"
    )
    return f"{prefix}@{key}" if prefix else key


def read_store_config(env: Mapping[str, str]) -> dict[str, Any]:
    path = env.get(ENV_STORE_CONFIG, "").strip()
    if not path:
        raise StoreUnavailable(f"{ENV_STORE_CONFIG} is not set (epd-engine sets it)")
    try:
        loaded: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreUnavailable(f"{ENV_STORE_CONFIG}={path}: {exc}") from exc
    return loaded


class EncoderStore:
    """One encoder's Store client, with the hit / miss / byte / latency metrics."""

    def __init__(self, config: LaunchConfig, metrics: SimMetrics, client: Any) -> None:
        self.config, self.metrics, self._client = config, metrics, client
        self._gets = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-get")
        self._puts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-put")
        self._pending = 0

    @classmethod
    async def open(
        cls, config: LaunchConfig, metrics: SimMetrics, env: Mapping[str, str], local_host: str
    ) -> EncoderStore:
        """Set up the client from the launcher's file, as vLLM's `setup_mooncake_store`."""
        from mooncake.store import MooncakeDistributedStore  # noqa: PLC0415 - optional extra

        conf = read_store_config(env)
        client = MooncakeDistributedStore()
        host = env.get("MOONCAKE_REQUESTER_LOCAL_HOSTNAME") or local_host
        ret = await asyncio.to_thread(
            client.setup,
            host,
            conf["metadata_server"],
            int(conf["global_segment_size"]),
            int(conf["local_buffer_size"]),
            conf["protocol"],
            conf.get("device_name", ""),
            conf["master_server_address"],
        )
        if ret != 0:
            raise StoreUnavailable(
                f"Mooncake Store setup failed ({ret}) with master {conf['master_server_address']}"
            )
        log.info(
            "shared encoder cache: Store client up, master %s, segment %d bytes",
            conf["master_server_address"],
            conf["global_segment_size"],
        )
        return cls(config, metrics, client)

    @staticmethod
    async def _call(pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def get(self, mm_hash: str, nbytes: int) -> bytes | None:
        """The cached output of `mm_hash`, or None (a miss, or an error: then encode)."""
        started = time.perf_counter()
        try:
            data = await self._call(self._gets, self._client.get, store_key(self.config, mm_hash))
        except Exception as exc:  # a Store failure must never fail the request
            self.metrics.store_lookups.labels("error").inc()
            log.warning("Store get %s failed: %s", mm_hash, exc)
            return None
        self.metrics.store_get_seconds.observe(time.perf_counter() - started)
        if not data or len(data) != nbytes:
            # Empty: not there (or evicted, or the master restarted). Another size: not ours.
            self.metrics.store_lookups.labels("miss").inc()
            return None
        self.metrics.store_lookups.labels("hit").inc()
        self.metrics.store_get_bytes.inc(len(data))
        return bytes(data)

    async def put(self, mm_hash: str, data: bytes) -> None:
        """Publish an output (called off the request path, like vLLM's publisher)."""
        if self._pending >= MAX_PENDING_PUTS:
            self.metrics.store_puts.labels("dropped").inc()
            return
        self._pending += 1
        try:
            ret = await self._call(
                self._puts, self._client.put, store_key(self.config, mm_hash), data
            )
        except Exception as exc:
            ret = -1
            log.warning("Store put %s failed: %s", mm_hash, exc)
        finally:
            self._pending -= 1
        if ret == 0:
            self.metrics.store_puts.labels("ok").inc()
            self.metrics.store_put_bytes.inc(len(data))
        else:
            # e.g. -900 while the master is down: the item is simply not shared.
            self.metrics.store_puts.labels("failed").inc()

    def close(self) -> None:
        for pool in (self._gets, self._puts):
            pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._client.close()
        except Exception as exc:  # pragma: no cover - best effort at exit
            log.debug("Store close: %s", exc)
