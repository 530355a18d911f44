"""reconcile.kube's HTTP side (`Session`, `Kube.from_environment`) against a local HTTPS server
with a throwaway CA (openssl): server verification, client certificates, the 401 re-login,
and watch lines that arrive split across chunks. The same code runs against real apiservers
in every integration and e2e test (the operator process logs in through it)."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.webhook_certs import make_certs
from epd_operator import __version__
from epd_operator.reconcile.kube import EPDCLUSTER, Kube, KubeError

pytestmark = pytest.mark.process  # openssl makes the throwaway CA


class Apiserver(ThreadingHTTPServer):
    """Answers 401 unless the bearer token is `token` (when one is set) and, on TLS, a client
    certificate was shown when `need_cert`; GET .../epdclusters?watch=1 streams `events`,
    each split over two chunks."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.token: str | None = None
        self.need_cert = False
        self.events: list[dict[str, Any]] = []
        self.shed = 0  # answer this many requests 429 first ...
        self.retry_after: str | None = "0"  # ... with this Retry-After (None: without one)
        self.seen: list[tuple[str, str, str | None, bool]] = []  # method, path, auth, cert
        self.agents: set[str | None] = set()


class Handler(BaseHTTPRequestHandler):
    server: Apiserver
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any], retry_after: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._serve()

    def _serve(self) -> None:
        auth = self.headers.get("Authorization")
        cert = bool(getattr(self.connection, "getpeercert", lambda: None)())
        self.server.seen.append((self.command, self.path, auth, cert))
        self.server.agents.add(self.headers.get("User-Agent"))
        if (self.server.token and auth != f"Bearer {self.server.token}") or (
            self.server.need_cert and not cert
        ):
            self._answer(401, {"kind": "Status", "message": "Unauthorized"})
            return
        if self.server.shed:
            self.server.shed -= 1
            msg = {"kind": "Status", "message": "storage is (re)initializing"}
            self._answer(429, msg, self.server.retry_after)
            return
        if "watch=1" not in self.path:
            self._answer(200, {"kind": "EPDCluster", "metadata": {"name": "x"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for ev in self.server.events:
            line = json.dumps(ev).encode() + b"\n"
            self._chunk(line[:7])
            self._chunk(line[7:])
        self._chunk(b"")  # the last chunk: the apiserver ended the watch


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return make_certs(tmp_path / "pki")


@pytest.fixture
def server(certs: Path) -> Iterator[Apiserver]:
    srv = Apiserver()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.crt"))
    ctx.load_cert_chain(str(certs / "tls.crt"), str(certs / "tls.key"))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # the handler decides (need_cert)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_kubeconfig(path: Path, server: Apiserver, cluster: dict[str, Any], user: Any) -> str:
    url = f"https://127.0.0.1:{server.server_port}"
    doc = {
        "clusters": [{"name": "c", "cluster": {"server": url, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "t",
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_cluster_ca_is_verified_and_a_client_certificate_is_shown(
    tmp_path: Path, certs: Path, server: Apiserver
) -> None:
    server.need_cert = True
    b64 = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
    cfg = write_kubeconfig(
        tmp_path / "kc",
        server,
        {"certificate-authority-data": b64},
        {"client-certificate": str(certs / "tls.crt"), "client-key": str(certs / "tls.key")},
    )
    kube = Kube.from_environment(kubeconfig=cfg)
    assert kube.scale("ns", "x", 2)["metadata"]["name"] == "x"
    assert server.seen[-1][2:] == (None, True)  # no token; a client certificate
    assert server.agents == {f"epd-operator/{__version__}"}
    # Another CA: the server's certificate is refused before any request is answered.
    other = make_certs(tmp_path / "other")
    bad = write_kubeconfig(
        tmp_path / "bad", server, {"certificate-authority": str(other / "ca.crt")}, {}
    )
    with pytest.raises(KubeError, match="CERTIFICATE_VERIFY_FAILED"):
        Kube.from_environment(kubeconfig=bad).scale("ns", "x", 2)
    # insecure-skip-tls-verify: no CA needed (and without a certificate: 401).
    skip = write_kubeconfig(tmp_path / "skip", server, {"insecure-skip-tls-verify": True}, {})
    with pytest.raises(KubeError) as err:
        Kube.from_environment(kubeconfig=skip).scale("ns", "x", 2)
    assert err.value.status == 401


def test_a_401_logs_in_again_once_and_a_refused_new_login_is_the_answer(
    tmp_path: Path, certs: Path, server: Apiserver
) -> None:
    token = tmp_path / "token"
    token.write_text("old")
    server.token = "old"
    cfg = write_kubeconfig(
        tmp_path / "kc",
        server,
        {"certificate-authority": str(certs / "ca.crt")},
        {"tokenFile": str(token)},
    )
    kube = Kube.from_environment(kubeconfig=cfg)
    kube.scale("ns", "x", 1)
    # The token rotates (the kubelet rewrites the projected file): one 401, then the new one.
    token.write_text("new")
    server.token = "new"
    kube.scale("ns", "x", 1)
    assert [auth for _, _, auth, _ in server.seen] == ["Bearer old", "Bearer old", "Bearer new"]
    assert kube.unauthorized is None
    # Credentials withdrawn and nothing new to log in with: the 401 is the answer, once.
    server.token = "newer"
    with pytest.raises(KubeError) as err:
        kube.scale("ns", "x", 1)
    assert err.value.status == 401
    assert kube.unauthorized is err.value
    assert [auth for _, _, auth, _ in server.seen[3:]] == ["Bearer new"]


def test_watch_lines_split_across_chunks_arrive_whole(
    tmp_path: Path, certs: Path, server: Apiserver
) -> None:
    server.events = [
        {"type": "ADDED", "object": {"metadata": {"name": f"c{i}", "resourceVersion": str(i)}}}
        for i in range(3)
    ] + [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]
    cfg = write_kubeconfig(
        tmp_path / "kc", server, {"certificate-authority": str(certs / "ca.crt")}, {}
    )
    events = list(Kube.from_environment(kubeconfig=cfg).watch_kind(EPDCLUSTER, "ns", "", "", 5))
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
    assert [e["object"]["metadata"]["resourceVersion"] for e in events] == ["0", "1", "2", "9"]
    assert events[0]["object"]["kind"] == "EPDCluster"  # filled in by watch_kind
    method, path, _, _ = server.seen[-1]
    assert method == "GET"
    assert path.startswith("/apis/epd-operator.io/v1alpha1/namespaces/ns/epdclusters?watch=1")


def test_an_answer_with_retry_after_is_retried_whatever_the_verb(
    tmp_path: Path, certs: Path, server: Apiserver
) -> None:
    cfg = write_kubeconfig(
        tmp_path / "kc", server, {"certificate-authority": str(certs / "ca.crt")}, {}
    )
    kube = Kube.from_environment(kubeconfig=cfg)
    server.shed = 2  # a new CRD's storage initializing: 429 with Retry-After
    assert kube.scale("ns", "x", 1)["metadata"]["name"] == "x"  # a PATCH
    assert [m for m, _, _, _ in server.seen] == ["PATCH"] * 3
    # Without Retry-After the answer is the caller's to judge (the runtime backs off).
    server.shed, server.retry_after = 1, None
    with pytest.raises(KubeError, match="HTTP 429: storage is"):
        kube.scale("ns", "x", 1)
    assert len(server.seen) == 4
