"""Fixtures of the multi-process data-plane tests: loopback clusters of simulator pods + router,
and a loopback HTTP server that serves images (for http:// image URLs)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dataplane_support import MAX_BODY

from epd_connector.sim.localcluster import LocalCluster


@pytest.fixture(scope="module")
def epd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """E/PD: 2 encoders, 2 PD pods with 2 DP ranks each."""
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("epd")),
        encoders=2,
        decodes=2,
        decode_dp=2,
        sim_args={"decode": ["--decode-delay-per-token-s", "0.05"]},
        router_args=["--max-body-bytes", str(MAX_BODY)],
    )
    with c:
        yield c


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if not self.path.startswith("/img/"):
            self.send_error(404)
            return
        data = f"http-pixels:{self.path}".encode() * 64
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
