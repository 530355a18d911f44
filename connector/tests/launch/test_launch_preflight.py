"""The transport preflight: what each role asks for, the decision table, the probe on a fake
tree, and `epd-engine --preflight` for real on this machine (no RDMA device: the fallback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.tests.launch.launch_samples import VALID
from epd_connector.launch.preflight import (
    Probe,
    asked,
    decide,
    observe,
    parse_report,
    report_text,
)

EPD_ENGINE = shutil.which("epd-engine", path=str(Path(sys.executable).parent))

ASKED = [
    ("epd-minimal", "encoder", {"ec": "rdma"}),
    ("epd-minimal", "decode", {"ec": "rdma"}),
    ("e-p-d-mooncake", "prefill", {"ec": "rdma", "kv": "rdma"}),
    ("e-p-d-mooncake", "decode", {"kv": "rdma"}),  # no EC config on E/P/D decode
    ("e-p-d-tcp", "prefill", {"ec": "tcp", "kv": "tcp"}),
    ("e-p-d-nixl", "decode", {}),  # NIXL is no Mooncake transport
    ("epd-ec-example", "encoder", {}),
    ("epd-shared-store", "encoder", {"ec": "tcp", "store": "tcp"}),
    ("epd-shared-store", "decode", {"ec": "tcp"}),
]


@pytest.mark.parametrize(("name", "role", "want"), ASKED, ids=[f"{n}/{r}" for n, r, _ in ASKED])
def test_asked(name: str, role: str, want: dict[str, str]) -> None:
    assert asked(VALID[name], role) == want  # type: ignore[arg-type]


RDMA = {"ec": "rdma", "kv": "rdma"}
DECIDE = [
    # (id, asked, probe, transport, reason, message fragment)
    ("tcp-asked", {"ec": "tcp"}, Probe(), "tcp", "TCPRequested", "TCP as configured"),
    ("nothing-asked", {}, Probe(), "tcp", "TCPRequested", "no Mooncake transfer"),
    ("rdma-ok", RDMA, Probe(("uverbs0",), ("mlx5_0",), ("mlx5_0",)), "rdma", "RDMA",
     "RDMA for ec, kv over mlx5_0"),
    ("rdma-ok-without-mooncake", {"ec": "rdma"}, Probe(("uverbs0",), ("mlx5_0",), None), "rdma",
     "RDMA", "over mlx5_0"),
    ("no-device", RDMA, Probe((), (), ()), "tcp", "NoRDMADevice", "sees no RDMA device"),
    ("no-device-mooncake-absent", RDMA, Probe(), "tcp", "NoRDMADevice", "did not reach it"),
    ("device-but-no-hca", {"kv": "rdma"}, Probe(("uverbs0",), ("mlx5_0",), ()), "tcp",
     "TCPFallback", "Mooncake finds no usable HCA"),
    ("sysfs-without-uverbs", {"ec": "rdma"}, Probe((), ("mlx5_0",), ("mlx5_0",)), "tcp",
     "TCPFallback", "sees mlx5_0"),
    ("memlock-limited", {"ec": "rdma"}, Probe(("uverbs0",), ("mlx5_0",), ("mlx5_0",), 65536),
     "rdma", "RDMA", "memlock limit 65536"),
]  # fmt: skip


@pytest.mark.parametrize("row", DECIDE, ids=[d[0] for d in DECIDE])
def test_decide(row: tuple[str, dict[str, str], Probe, str, str, str]) -> None:
    _, want, probe, transport, reason, fragment = row
    report = decide(want, probe)
    assert (report["transport"], report["reason"]) == (transport, reason)
    assert fragment in report["message"]
    assert report["asked"] == want
    assert parse_report(report_text(report)) == report  # survives the termination message
    assert len(report_text(report)) < 4096  # the kubelet keeps at most 4096 bytes


def test_observe_reads_device_nodes_and_sysfs(tmp_path: Path) -> None:
    (tmp_path / "dev" / "infiniband").mkdir(parents=True)
    (tmp_path / "dev" / "infiniband" / "uverbs0").touch()
    (tmp_path / "dev" / "infiniband" / "rdma_cm").touch()
    (tmp_path / "sys" / "class" / "infiniband" / "mlx5_0").mkdir(parents=True)
    probe = observe(tmp_path)
    assert (probe.uverbs, probe.ib_devices, probe.hcas) == (("uverbs0",), ("mlx5_0",), None)
    assert observe(tmp_path / "empty") == Probe(memlock_bytes=probe.memlock_bytes)


def test_parse_report_ignores_what_is_not_ours() -> None:
    assert parse_report(None) is None
    assert parse_report("Error: something else") is None
    assert parse_report('{"v": 99}') is None


def _preflight(tmp_path: Path, name: str, role: str) -> tuple[dict[str, Any], dict[str, Any]]:
    assert EPD_ENGINE is not None
    cfg = tmp_path / "launch.json"
    cfg.write_text(VALID[name].to_json(), encoding="utf-8")
    out = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPD_", "POD_"))}
    env.update(EPD_LAUNCH_CONFIG=str(cfg), EPD_ROLE=role, EPD_PREFLIGHT_OUT=str(out))
    done = subprocess.run(
        [EPD_ENGINE, "--preflight"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    return printed, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.process
def test_real_preflight_on_this_machine_finds_the_tcp_fallback(tmp_path: Path) -> None:
    # This machine has no RDMA device: exactly the case of a pod the resource did not reach.
    assert not Path("/dev/infiniband").exists()
    printed, written = _preflight(tmp_path, "e-p-d-mooncake", "prefill")
    assert printed == written
    assert (written["transport"], written["reason"]) == ("tcp", "NoRDMADevice")
    assert written["asked"] == {"ec": "rdma", "kv": "rdma"}
    assert written["hcas"] == []  # Mooncake's own discovery found none either


@pytest.mark.process
def test_real_preflight_with_tcp_asked_is_fine(tmp_path: Path) -> None:
    _, written = _preflight(tmp_path, "e-p-d-tcp", "decode")
    assert (written["transport"], written["reason"]) == ("tcp", "TCPRequested")
