"""Local stand-ins for pods: loopback addresses, free ports, and child processes that never leak.

Shared by the simulator's local cluster and the real-engine clusters of the engine tier. Every
child runs in its own process group (so one `killpg` stops it and whatever it started) and is
told to die with its parent (`PR_SET_PDEATHSIG`), so a parent killed with SIGKILL or crashing
still takes its children along. `ProcGroup.stop` sends SIGTERM to every group, waits for a grace
period, then SIGKILLs what is left. `signals_raise` turns SIGTERM and SIGINT into an exception
in the main thread, so `with` blocks unwind and stop the children also when the command was
started in the background by a non-interactive shell (which starts it with SIGINT ignored).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from epd_connector.cliutil import die_with_parent

_subnet = 20 + os.getpid() % 200
_hosts = itertools.count(2)


def next_loopback_ip() -> str:
    """A loopback address of its own for each local pod (127.a.b.c; Linux routes all of /8)."""
    n = next(_hosts)
    return f"127.{_subnet}.{n // 250}.{n % 250 + 1}"


def free_port(span: int = 1) -> int:
    """A port p with p..p+span-1 free on every address right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        if port + span > 65535:
            continue
        ok = True
        for extra in range(1, span):
            with socket.socket() as s:
                try:
                    s.bind(("0.0.0.0", port + extra))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no run of {span} free ports found")


@dataclass
class Proc:
    name: str
    role: str
    host: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's whole process group (it and everything it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class ProcGroup:
    """The children of one local cluster; `stop` ends all of them."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        role: str,
        host: str,
        port: int,
        *,
        cmd: list[str],
        env: dict[str, str],
    ) -> Proc:
        """Start `cmd` with this process's environment plus `env`, output to <name>.log."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
            )
        proc = Proc(name, role, host, port, popen, log)
        self.procs.append(proc)
        return proc

    def stop_one(self, proc: Proc, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
        """Signal one child's group and wait for it (SIGKILL after `grace_s`); a child stopped
        on purpose leaves the group, so `check_alive` does not report it."""
        proc.signal(sig)
        try:
            proc.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGKILL)
            proc.popen.wait(10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every group, wait up to `grace_s` in total, SIGKILL the rest."""
        for p in self.procs:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            # The group may outlive its leader (an engine's worker processes): kill it too.
            p.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(10)

    def check_alive(self) -> None:
        """Raise with the log tail of the first child that has exited."""
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.tail()}")


def start_router(
    group: ProcGroup,
    launch_config: Path,
    pods: list[Proc],
    args: list[str],
    timeout_s: float = 60.0,
    *,
    name: str = "router",
    wait_rotation: bool = True,
    env: dict[str, str] | None = None,
) -> Proc:
    """`epd-router` on 127.0.0.1 with `pods` as its static endpoints; returns once its /health
    counts every pod of every role in rotation (`wait_rotation`), else once it answers at all
    (raises with a log tail if a child exits)."""
    roles = ("encoder", "prefill", "decode")
    static: list[str] = []
    expected: dict[str, int] = {}
    for role in roles:
        hosts = [p.host for p in pods if p.role == role]
        if hosts:
            static += ["--static-pods", f"{role}={','.join(hosts)}"]
            expected[role] = len(hosts)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "epd_connector.router",
        "--launch-config",
        str(launch_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *static,
        *args,
    ]
    router = group.spawn(name, "router", "127.0.0.1", port, cmd=cmd, env=env or {})
    wait_router(group, router, expected if wait_rotation else None, timeout_s)
    return router


def wait_router(
    group: ProcGroup, router: Proc, expected: dict[str, int] | None, timeout_s: float
) -> None:
    """Until the router's /health reports `expected` pods in rotation per role (None: until it
    answers at all)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group.check_alive()
        status, body = http_json("GET", router.url + "/health", timeout=2)
        if expected is None and status in (200, 503):
            return
        if status == 200 and body.get("pods") == expected:
            return
        time.sleep(0.1)
    raise TimeoutError(f"router not ready in {timeout_s}s; logs in {group.workdir}")


def watch(group: ProcGroup, interval_s: float = 1.0) -> None:
    """Block while every child lives: raises when one exits (or `Stopped` on a signal, inside
    `signals_raise`), so the caller's `with` blocks stop the rest."""
    while True:
        time.sleep(interval_s)
        group.check_alive()


class Stopped(Exception):
    """Raised in the main thread by SIGTERM or SIGINT while `signals_raise` is active."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGINT raise `Stopped` (SIGINT even where the shell set it to be ignored)."""

    def raise_stopped(signum: int, _: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, raise_stopped) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def http_json(
    method: str, url: str, body: Any = None, timeout: float = 30, raw: bytes | None = None
) -> tuple[int, Any]:
    """Tiny blocking HTTP client for checks: (status, parsed JSON or text); 0 if unreachable."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, {}
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


def scrape(url: str, timeout: float = 5) -> dict[str, float]:
    """Sample name{labels} -> value from a Prometheus endpoint (labels sorted, no quotes;
    `model_name` and `engine` dropped, so names do not depend on the served model)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(
                f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "engine")
            )
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def mooncake_master_path() -> str:
    """The `mooncake_master` console script of the Mooncake wheel (next to this Python)."""
    found = shutil.which("mooncake_master", path=str(Path(sys.executable).parent)) or shutil.which(
        "mooncake_master"
    )
    if found is None:
        raise RuntimeError("mooncake_master not found: install the `transport` extra")
    return found


def start_store_master(
    group: ProcGroup,
    rpc_port: int,
    metrics_port: int,
    timeout_s: float = 30.0,
    name: str = "store-master",
) -> Proc:
    """A real `mooncake_master` on 127.0.0.1 (the shared encoder cache's index), started with
    the arguments the operator renders; returns once its /health answers ok."""
    cmd = [mooncake_master_path(), f"--rpc_port={rpc_port}", f"--metrics_port={metrics_port}"]
    proc = group.spawn(name, "store", "127.0.0.1", metrics_port, cmd=cmd, env={})
    wait_healthy(group, proc, timeout_s, lambda body: bool(body.get("service_ready")))
    return proc


def wait_healthy(
    group: ProcGroup,
    proc: Proc,
    timeout_s: float,
    ready: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> None:
    """Until `proc`'s own /health answers 200 (and `ready` holds for its JSON body)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        group.check_alive()
        status, body = http_json("GET", proc.url + "/health", timeout=2)
        if status == 200 and ready(body if isinstance(body, dict) else {}):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not healthy in {timeout_s}s; log {proc.log}")
