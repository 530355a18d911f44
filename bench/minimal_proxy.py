"""The floor a Python router cannot go below: a pass-through HTTP proxy on the same stack as
`epd-router` (aiohttp on uvloop, one keep-alive pool), with no parsing, routing, retries or
metrics. bench/router_bench.py runs it beside the router so the router's own cost is visible.

    python bench/minimal_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    session: list[aiohttp.ClientSession] = []

    async def start(_: web.Application) -> None:
        session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)))

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with session[0].post(
            upstream + request.path, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            data = await resp.read()
            return web.Response(body=data, status=resp.status, content_type=resp.content_type)

    app = web.Application()
    app.on_startup.append(start)
    app.add_routes([web.post("/v1/chat/completions", forward)])
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
