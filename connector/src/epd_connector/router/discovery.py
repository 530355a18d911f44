"""Where the pods are: DNS A records of each role's headless Service (or a static list), plus
the health checks that put pods into rotation and take them out."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import aiohttp

from .pods import Pod, Pool

log = logging.getLogger(__name__)


def parse_static(spec: str, default_port: int) -> list[tuple[str, int]]:
    """`host[:port],host[:port]` (IPv6 as `[addr]:port`) -> [(host, port)]; ValueError if bad."""
    out: list[tuple[str, int]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_s = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, _, port_s = item.partition(":")
        else:
            host, port_s = item, ""
        if not host:
            raise ValueError(f"empty host in {spec!r}")
        try:
            port = int(port_s) if port_s else default_port
        except ValueError:
            raise ValueError(f"bad port {port_s!r} in {spec!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range in {spec!r}")
        out.append((host, port))
    return out


async def resolve(name: str) -> list[str] | None:
    """A/AAAA records of `name`, sorted; [] when the name does not exist, None on other errors."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            return []
        log.warning("DNS lookup of %s failed: %s", name, exc)
        return None
    return sorted({str(info[4][0]) for info in infos})


class Discovery:
    """Keeps every pool in sync with DNS (or its static list) and health-checks its pods."""

    def __init__(
        self,
        pools: dict[str, Pool],
        dns_names: dict[str, str],
        session: aiohttp.ClientSession,
        *,
        dns_refresh_s: float,
        health_interval_s: float,
        health_timeout_s: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.pools, self.dns_names, self.session = pools, dns_names, session
        self.dns_refresh_s, self.health_interval_s = dns_refresh_s, health_interval_s
        self.health_timeout_s = health_timeout_s
        self.on_change = on_change
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.refresh_dns()
        await self.check_all()
        self._tasks = [
            asyncio.create_task(self._dns_loop()),
            asyncio.create_task(self._health_loop()),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def refresh_dns(self) -> None:
        new: list[Pod] = []
        for role, name in self.dns_names.items():
            ips = await resolve(name)
            if ips is None:
                continue  # transient resolver error: keep what we had
            pool = self.pools[role]
            before = set(pool.pods)
            new += pool.sync((ip, pool.port) for ip in ips)
            if set(pool.pods) != before:
                log.info("%s pods from %s: %s", role, name, ", ".join(sorted(pool.pods)) or "none")
        if new:
            await asyncio.gather(*(self.check(p) for p in new))
        self.on_change()

    async def check(self, pod: Pod) -> None:
        reason: str | None = None
        try:
            async with self.session.get(
                f"{pod.base_url}/health",
                timeout=aiohttp.ClientTimeout(total=self.health_timeout_s),
            ) as resp:
                ok = resp.status == 200
                reason = None if ok else "status"
        except TimeoutError:
            ok, reason = False, "timeout"
        except (aiohttp.ClientError, OSError):
            ok, reason = False, "refused"
        if self.pools[pod.role].health_result(pod, ok, reason):
            log.info(
                "%s pod %s %s rotation%s",
                pod.role,
                pod.key,
                "enters" if ok else "leaves",
                "" if ok else f" ({reason})",
            )

    async def check_all(self) -> None:
        pods = [p for pool in self.pools.values() for p in pool.pods.values()]
        await asyncio.gather(*(self.check(p) for p in pods))
        self.on_change()

    async def _dns_loop(self) -> None:
        if not self.dns_names:
            return
        while True:
            await asyncio.sleep(self.dns_refresh_s)
            await self.refresh_dns()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_all()
