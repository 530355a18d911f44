"""`python -m epd_connector.sim.localcluster` stops every child it started: on SIGTERM, on SIGINT
(also when started in the background by a non-interactive shell, which ignores SIGINT), when it
is killed outright (its children die with it), and when one of its children dies (it exits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def children_of(pid: int) -> set[int]:
    """Direct children of `pid`, from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(tmp_path: Path, *, ignore_sigint: bool) -> tuple[subprocess.Popen[str], set[int]]:
    def preexec() -> None:
        if ignore_sigint:  # what `cmd &` in a non-interactive shell does
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "epd_connector.sim.localcluster",
            "--encoders",
            "1",
            "--decodes",
            "1",
            "--workdir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=preexec,  # noqa: PLW1509 - the test's own child, no threads involved
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("router: http://"), line
    kids = children_of(proc.pid)
    assert len(kids) == 3, kids  # 1 encoder, 1 decode, the router
    return proc, kids


def kill_all(proc: subprocess.Popen[str], kids: set[int]) -> None:
    """Whatever a failed test left behind."""
    proc.kill()
    for pid in kids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: set[int], timeout_s: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


@pytest.mark.parametrize(
    ("sig", "ignore_sigint"),
    [
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
        (signal.SIGINT, True),
        (signal.SIGKILL, False),
    ],
    ids=["sigterm", "sigint", "sigint-background", "sigkill"],
)
def test_signal_stops_every_child(tmp_path: Path, sig: int, ignore_sigint: bool) -> None:
    proc, kids = start(tmp_path, ignore_sigint=ignore_sigint)
    try:
        proc.send_signal(sig)
        proc.wait(30)
        assert wait_gone(kids) == set()
    finally:
        kill_all(proc, kids)


def test_a_dead_child_stops_the_rest_and_exits_non_zero(tmp_path: Path) -> None:
    proc, kids = start(tmp_path, ignore_sigint=False)
    try:
        victim = min(kids)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(30) != 0
        assert proc.stdout is not None
        assert "exited with" in proc.stdout.read()
        assert wait_gone(kids) == set()
    finally:
        kill_all(proc, kids)
