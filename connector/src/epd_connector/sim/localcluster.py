"""A whole EPD data plane on loopback: simulator pods + `epd-router` as real processes.

Each simulated pod gets its own loopback address (127.a.b.c), so every pod uses the ports the
launch config names, exactly as pods do in a cluster; the ports themselves are picked free from
the OS. Used by the data-plane tests and the benchmarks, and by hand:
`python -m epd_connector.sim.localcluster --encoders 2 --decodes 2` prints the router URL and
runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from epd_connector.launch.argv import build_env
from epd_connector.launch.cli import write_files
from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.pod import PodContext, ordinal_of
from epd_connector.launch.store import ENV_STORE_CONFIG, store_files

from .procs import (
    Proc,
    ProcGroup,
    Stopped,
    free_port,
    http_json,
    next_loopback_ip,
    scrape,
    signals_raise,
    start_router,
    start_store_master,
    wait_healthy,
    wait_router,
    watch,
)

__all__ = ["LocalCluster", "Proc", "free_port", "http_json", "next_loopback_ip"]


@dataclass
class LocalCluster:
    workdir: Path
    encoders: int = 2
    prefills: int = 0
    decodes: int = 2
    kv_connector: str = "MooncakeConnector"
    ec_connector: str = "ECMooncakeConnector"
    decode_dp: int = 1
    push_wait_timeout_s: float = 5.0
    sim_args: dict[str, list[str]] = field(default_factory=dict)
    router_args: list[str] = field(default_factory=list)
    model: str = "Qwen/Qwen3-VL-8B-Instruct"
    # The shared encoder cache: a real mooncake_master and each encoder's segment (bytes).
    shared_store: bool = False
    store_segment_bytes: int = 64 << 20
    store_local_buffer_bytes: int = 32 << 20
    store: Proc | None = None
    store_ports: tuple[int, int] = (0, 0)
    procs: dict[str, Proc] = field(default_factory=dict)
    router: Proc | None = None
    config: dict[str, Any] = field(default_factory=dict)
    group: ProcGroup = field(init=False)

    def __post_init__(self) -> None:
        self.group = ProcGroup(self.workdir)

    # ---- setup -------------------------------------------------------------------------------

    def launch_config(self) -> dict[str, Any]:
        consumer_dp = self.decode_dp if self.prefills == 0 else 1
        roles: dict[str, Any] = {
            "encoder": {"service": "sim-encoder", "port": free_port()},
            "decode": {
                "service": "sim-decode",
                "port": free_port(),
                "parallelism": {"data": self.decode_dp},
            },
        }
        ec: dict[str, Any] = {
            "protocol": "tcp",
            "port": free_port(consumer_dp),
            "push_wait_timeout_s": self.push_wait_timeout_s,
        }
        if self.shared_store:
            self.store_ports = (free_port(), free_port())
            ec["store"] = {
                "master_address": f"127.0.0.1:{self.store_ports[0]}",
                "global_segment_size": self.store_segment_bytes,
                "local_buffer_size": self.store_local_buffer_bytes,
            }
        if self.ec_connector == "ECExampleConnector":
            # One shared directory stands in for the ReadWriteMany volume.
            ec = {
                "connector": self.ec_connector,
                "shared_storage_path": str(self.workdir / "ec-cache"),
            }
        cfg: dict[str, Any] = {
            "cluster": "sim",
            "namespace": "default",
            "model": {"name": self.model},
            "ec": ec,
            "roles": roles,
        }
        if self.prefills:
            roles["prefill"] = {"service": "sim-prefill", "port": free_port()}
            cfg["kv"] = {
                "connector": self.kv_connector,
                "protocol": "tcp",
                "bootstrap_port": free_port(),
                "side_channel_port": free_port(),
            }
        return cfg

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.launch_config()
        path = self.workdir / "launch.json"
        path.write_text(json.dumps(self.config))
        if self.shared_store:
            self.start_store()
        for role, count in (
            ("encoder", self.encoders),
            ("prefill", self.prefills),
            ("decode", self.decodes),
        ):
            for i in range(count):
                self.start_sim(role, f"{role}-{i}")
        self.router = start_router(
            self.group,
            path,
            list(self.procs.values()),
            ["--health-interval-s", "0.5", *self.router_args],
            timeout_s,
        )
        return self

    def add_router(
        self,
        *args: str,
        name: str,
        wait_rotation: bool = False,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """Another router in front of the same pods, with other options or code (`env`, e.g.
        PYTHONPATH of another version), to compare with."""
        return start_router(
            self.group,
            self.workdir / "launch.json",
            [p for p in self.procs.values() if p.role != "router"],
            ["--health-interval-s", "0.5", *args],
            name=name,
            wait_rotation=wait_rotation,
            env=env,
        )

    def start_sim(
        self, role: str, name: str, host: str | None = None, extra: list[str] | None = None
    ) -> Proc:
        host = host or next_loopback_ip()
        env = {
            "EPD_LAUNCH_CONFIG": str(self.workdir / "launch.json"),
            "EPD_ROLE": role,
            "POD_IP": host,
            "POD_NAME": name,
            "POD_NAMESPACE": "default",
            "EPD_ENGINE": "sim",
        }
        cmd = [
            sys.executable,
            "-m",
            "epd_connector.sim",
            "--host",
            host,
            *self.sim_args.get(role, []),
            *(extra or []),
        ]
        if self.shared_store and role == "encoder":
            env.update(self._store_env(role, name, host))
        proc = self.group.spawn(
            name, role, host, self.config["roles"][role]["port"], cmd=cmd, env=env
        )
        self.procs[name] = proc
        return proc

    def _store_env(self, role: str, name: str, host: str) -> dict[str, str]:
        """What `epd-engine` does for an encoder pod: write the Store config file and point
        MOONCAKE_CONFIG_PATH at it (the launcher's own functions, run dir = the workdir)."""
        config = LaunchConfig.model_validate(self.config)
        pod = PodContext.create(host, ordinal_of(name), name=name, role="encoder")
        write_files(store_files(config, "encoder", pod, str(self.workdir)))
        env = build_env(config, "encoder", pod, str(self.workdir))
        return {ENV_STORE_CONFIG: env[ENV_STORE_CONFIG]}

    def start_store(self) -> Proc:
        """(Re)start the mooncake_master on its fixed ports: a restarted master is empty."""
        self.store = start_store_master(self.group, *self.store_ports)
        return self.store

    def kill_store(self) -> None:
        """SIGKILL the master, as a crashed or evicted master pod."""
        assert self.store is not None
        self.group.stop_one(self.store, signal.SIGKILL, grace_s=5)

    def wait_ready(self, timeout_s: float) -> None:
        expected = {"encoder": self.encoders, "decode": self.decodes}
        if self.prefills:
            expected["prefill"] = self.prefills
        assert self.router is not None
        wait_router(self.group, self.router, expected, timeout_s)

    # ---- use ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    def sims(self, role: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.role == role]

    def metrics(self, proc: Proc) -> dict[str, float]:
        """Sample name{labels} -> value from a process's /metrics (labels sorted, no quotes)."""
        return scrape(proc.url + "/metrics")

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.signal(signal.SIGKILL)
        p.popen.wait(5)

    def stop_sim(self, name: str) -> None:
        """Stop one simulator and wait for it to exit (its address can then be reused)."""
        self.group.stop_one(self.procs[name])

    def restart_sim(self, name: str, extra: list[str] | None = None) -> Proc:
        """Replace one simulator with a new process on the same address (as a pod restarted
        in place, e.g. with fault flags), and wait for it to answer /health itself: the router
        may not have noticed the old one go, so its view alone says nothing about the new one."""
        old = self.procs[name]
        self.stop_sim(name)
        proc = self.start_sim(old.role, name, old.host, extra=extra)
        wait_healthy(self.group, proc, 30)
        return proc

    def terminate(self, name: str) -> None:
        """SIGTERM, as the kubelet sends a terminating pod: the sim drains, then exits."""
        self.procs[name].signal(signal.SIGTERM)

    def stop(self) -> None:
        self.group.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m epd_connector.sim.localcluster",
        description="Run simulator pods and epd-router on loopback.",
    )
    p.add_argument("--encoders", type=int, default=2)
    p.add_argument("--prefills", type=int, default=0, help="> 0 gives an E/P/D topology")
    p.add_argument("--decodes", type=int, default=2)
    p.add_argument(
        "--kv-connector",
        default="MooncakeConnector",
        choices=["MooncakeConnector", "NixlConnector"],
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/epd-localcluster"))
    args = p.parse_args(argv)
    cluster = LocalCluster(
        args.workdir, args.encoders, args.prefills, args.decodes, args.kv_connector
    )
    # Every child is stopped on the way out: normal exit, SIGTERM, SIGINT or an exception.
    with signals_raise(), contextlib.suppress(Stopped), cluster:
        print(f"router: {cluster.url}  (logs in {args.workdir}; Ctrl-C stops)", flush=True)
        watch(cluster.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
