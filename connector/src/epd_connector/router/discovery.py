"""Where the pods are: DNS A records of each role's headless Service (or a static list), per
wiring revision when a routing table lists several (launch.routing), plus the health checks that
put pods into rotation and take them out."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from .pods import Endpoint, Pod, Pool

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


@dataclass(frozen=True)
class Target:
    """Where one role's pods of one wiring revision are: a DNS name, or fixed addresses."""

    role: str
    revision: str
    port: int
    dp_size: int
    dns_name: str | None = None
    static: tuple[tuple[str, int], ...] = ()


class Discovery:
    """Keeps every pool in sync with DNS (or its static list) and health-checks its pods.
    `targets` is asked on every refresh, so a routing table that changes is followed."""

    def __init__(
        self,
        pools: dict[str, Pool],
        targets: Callable[[], list[Target]],
        session: aiohttp.ClientSession,
        *,
        dns_refresh_s: float,
        health_interval_s: float,
        health_timeout_s: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.pools, self.targets, self.session = pools, targets, session
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
        by_role: dict[str, list[Target]] = {role: [] for role in self.pools}
        for t in self.targets():
            if t.role in by_role:
                by_role[t.role].append(t)
        for role, targets in by_role.items():
            found = await self._endpoints(targets)
            if found is None:
                continue  # transient resolver error: keep what we had
            pool = self.pools[role]
            before = {k: p.revision for k, p in pool.pods.items()}
            new += pool.sync(found)
            if {k: p.revision for k, p in pool.pods.items()} != before:
                log.info(
                    "%s pods: %s",
                    role,
                    ", ".join(
                        f"{k}@{p.revision}" if p.revision else k
                        for k, p in sorted(pool.pods.items())
                    )
                    or "none",
                )
        if new:
            await asyncio.gather(*(self.check(p) for p in new))
        self.on_change()

    @staticmethod
    async def _endpoints(targets: list[Target]) -> list[Endpoint] | None:
        out: list[Endpoint] = []
        for t in targets:
            if t.dns_name is None:
                out += [Endpoint(h, p, t.revision, t.dp_size) for h, p in t.static]
                continue
            ips = await resolve(t.dns_name)
            if ips is None:
                return None
            out += [Endpoint(ip, t.port, t.revision, t.dp_size) for ip in ips]
        return out

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
        while True:
            await asyncio.sleep(self.dns_refresh_s)
            await self.refresh_dns()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.check_all()
