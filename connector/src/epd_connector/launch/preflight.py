"""The transport preflight: which transport this pod's transfers will really use.

Mooncake falls back to TCP without an error when a pod asked for RDMA cannot do it (the
device-plugin resource did not reach the pod, no HCA, a driver or GID problem): the transfer
engine logs "No RDMA devices found" and `initialize(..., "rdma", ...)` still returns 0, checked
on this machine. Transfers then run 10-100x slower and nothing says so. `epd-engine --preflight`
looks before the engine starts: what the launch config asks for (`asked`), what the pod sees
(`observe`: RDMA device nodes, InfiniBand devices in sysfs, the HCAs Mooncake's own topology
discovery finds, the memlock limit) and decides (`decide`, pure) which transport results.

How the result leaves the pod without API credentials: the operator renders the preflight as
an init container of every engine pod that asks for RDMA (same image, same RDMA resource, same
capabilities as the engine, so it sees what the engine will see) and the report is its
termination message (`/dev/termination-log`). The kubelet copies that into the pod status
(`initContainerStatuses[].state.terminated.message`), where the operator reads it with a
read-only `list pods`. No port, no operator-to-pod network path, no token in the pod, and the
report survives an engine crash loop. Devices do not change while a pod lives, so once per pod
start is enough.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .argv import effective_kv
from .config import LaunchConfig, RoleName
from .store import uses_store
from .wiring import ec_role, kv_role

REPORT_VERSION: Final = 1
TERMINATION_LOG: Final = "/dev/termination-log"
ENV_PREFLIGHT_OUT: Final = "EPD_PREFLIGHT_OUT"
INIT_CONTAINER: Final = "transport-preflight"
Reason = Literal["RDMA", "TCPRequested", "NoRDMADevice", "TCPFallback"]
# Why a pod that asked for RDMA will not get it, in the order an operator should fix them.
FALLBACK_REASONS: Final = ("NoRDMADevice", "TCPFallback")


@dataclass(frozen=True)
class Probe:
    """What the pod sees. `hcas` None: Mooncake is not importable here (then sysfs decides)."""

    uverbs: tuple[str, ...] = ()
    ib_devices: tuple[str, ...] = ()
    hcas: tuple[str, ...] | None = None
    memlock_bytes: int | None = None  # RLIMIT_MEMLOCK; None is unlimited


def asked(config: LaunchConfig, role: RoleName) -> dict[str, str]:
    """The Mooncake transports this role's transfers use, by what they move."""
    out: dict[str, str] = {}
    if config.ec.connector == "ECMooncakeConnector" and ec_role(config, role) is not None:
        out["ec"] = config.ec.protocol
    if kv_role(config, role) is not None:
        kv = effective_kv(config)
        if kv.connector == "MooncakeConnector":
            out["kv"] = kv.protocol
    if uses_store(config, role):
        out["store"] = config.ec.protocol
    return out


def decide(want: Mapping[str, str], probe: Probe) -> dict[str, Any]:
    """The report: the transport the pod will use, a reason and a message for people."""
    rdma_asked = sorted(k for k, v in want.items() if v == "rdma")
    hcas = probe.hcas if probe.hcas is not None else probe.ib_devices
    reason: Reason
    if not rdma_asked:
        reason, transport = "TCPRequested", "tcp"
        message = "TCP as configured" if want else "no Mooncake transfer in this role"
    elif hcas and probe.uverbs:
        reason, transport = "RDMA", "rdma"
        message = f"RDMA for {', '.join(rdma_asked)} over {', '.join(hcas)}"
    elif not probe.uverbs and not probe.ib_devices:
        reason, transport = "NoRDMADevice", "tcp"
        message = (
            f"{', '.join(rdma_asked)} asked for RDMA but the pod sees no RDMA device "
            "(no /dev/infiniband/uverbs*, no /sys/class/infiniband): the RDMA resource "
            "did not reach it; Mooncake falls back to TCP"
        )
    else:
        reason, transport = "TCPFallback", "tcp"
        message = (
            f"{', '.join(rdma_asked)} asked for RDMA; the pod sees "
            f"{', '.join(probe.ib_devices or probe.uverbs)} but Mooncake finds no "
            "usable HCA (driver, GID or permissions): it falls back to TCP"
        )
    if transport == "rdma" and probe.memlock_bytes is not None:
        message += (
            f"; memlock limit {probe.memlock_bytes} bytes (registration needs it "
            "unlimited: IPC_LOCK)"
        )
    return {
        "v": REPORT_VERSION,
        "asked": dict(sorted(want.items())),
        "transport": transport,
        "reason": reason,
        "message": message,
        "hcas": list(hcas),
        "uverbs": len(probe.uverbs),
    }


def _mooncake_hcas() -> tuple[str, ...] | None:
    try:
        from mooncake.engine import TransferEngine  # noqa: PLC0415 - native, optional
    except ImportError:
        return None
    # {"cpu:0": [[preferred HCAs], [other HCAs]], "cuda:0": ...}: the discovery Mooncake's
    # rdma transport runs in initialize(), without initializing anything.
    topology = json.loads(TransferEngine().get_local_topology())
    names = {hca for lists in topology.values() for group in lists for hca in group}
    return tuple(sorted(names))


def observe(root: Path = Path("/")) -> Probe:
    """Look at this pod (`root` lets tests point at a fake tree; Mooncake looks at the real
    one, so it is only asked when `root` is the real root)."""
    uverbs = tuple(sorted(p.name for p in (root / "dev/infiniband").glob("uverbs*")))
    sysfs = root / "sys/class/infiniband"
    ib = tuple(sorted(p.name for p in sysfs.iterdir())) if sysfs.is_dir() else ()
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return Probe(
        uverbs=uverbs,
        ib_devices=ib,
        hcas=_mooncake_hcas() if root == Path("/") else None,
        memlock_bytes=None if soft == resource.RLIM_INFINITY else soft,
    )


def report_text(report: Mapping[str, Any]) -> str:
    """One compact JSON line (the kubelet keeps at most 4096 bytes of a termination message)."""
    return json.dumps(report, sort_keys=True, separators=(",", ":"))


def parse_report(text: str | None) -> dict[str, Any] | None:
    """A report read back from a pod status; None when absent or not ours."""
    if not text:
        return None
    try:
        got = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    if not isinstance(got, dict) or got.get("v") != REPORT_VERSION:
        return None
    return got


def output_path(env: Mapping[str, str]) -> str | None:
    """Where `--preflight` writes its report besides stdout: $EPD_PREFLIGHT_OUT, else the
    termination log when the container has one."""
    chosen = env.get(ENV_PREFLIGHT_OUT, "").strip()
    if chosen:
        return chosen
    return TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None
