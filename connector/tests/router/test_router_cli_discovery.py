"""`epd-router` options and discovery against the real resolver and real HTTP health checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from epd_connector.router.__main__ import build_parser, main
from epd_connector.router.app import RouterOptions
from epd_connector.router.discovery import Discovery, Target, resolve
from epd_connector.router.pods import Pool

CONFIG = {
    "cluster": "c",
    "namespace": "ns",
    "model": {"name": "m"},
    "roles": {"encoder": {"service": "c-enc"}, "decode": {"service": "c-dec"}},
}


def test_help_documents_every_option() -> None:
    text = build_parser().format_help()
    for f in fields(RouterOptions):
        assert "--" + f.name.replace("_", "-") in text, f.name
    assert "--launch-config" in text


BAD_ARGS = [
    (["--static-pods", "decode"], "expected ROLE=HOST"),
    (["--static-pods", "prefill=10.0.0.1"], "has no prefill role"),
    (["--static-pods", "decode=10.0.0.1:99999"], "out of range"),
    (["--retries", "many"], "invalid int value"),
]


@pytest.mark.parametrize(("args", "error"), BAD_ARGS)
def test_bad_arguments_exit_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    cfg = tmp_path / "launch.json"
    cfg.write_text(json.dumps(CONFIG))
    with pytest.raises(SystemExit) as exit_info:
        main(["--launch-config", str(cfg), *args])
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err


def test_unreadable_launch_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--launch-config", str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2
    assert "cannot read launch config" in capsys.readouterr().err


@pytest.mark.process
def test_entry_point_help_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "epd_connector.router", "--help"],
        capture_output=True,
        check=False,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert "--static-pods" in proc.stdout


def test_resolve_real_names() -> None:
    assert "127.0.0.1" in (asyncio.run(resolve("localhost")) or [])
    assert asyncio.run(resolve("no-such-service.invalid")) == []


def test_discovery_puts_healthy_pods_in_rotation_and_drops_failing_ones() -> None:
    async def scenario() -> None:
        healthy = {"ok": True}

        async def health(_: web.Request) -> web.Response:
            return web.Response(status=200 if healthy["ok"] else 503)

        app = web.Application()
        app.add_routes([web.get("/health", health)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        pools = {"decode": Pool("decode", port, 1), "encoder": Pool("encoder", port, 1)}
        async with aiohttp.ClientSession() as session:
            d = Discovery(
                pools,
                lambda: [
                    Target("decode", "", port, 1, "localhost"),
                    Target("encoder", "", port, 1, "gone.invalid"),
                ],
                session,
                dns_refresh_s=60,
                health_interval_s=60,
                health_timeout_s=1,
            )
            await d.refresh_dns()
            # localhost may also resolve to ::1, where nothing listens: only 127.0.0.1 is in.
            assert [p.key for p in pools["decode"].in_rotation()] == [f"127.0.0.1:{port}"]
            assert pools["encoder"].pods == {}
            healthy["ok"] = False  # a draining engine answers 503
            await d.check_all()
            assert pools["decode"].in_rotation() == []
            healthy["ok"] = True
            await d.check_all()
            assert pools["decode"].in_rotation()
        await runner.cleanup()

    asyncio.run(scenario())
