"""The engine image (connector/Dockerfile) without a Docker engine: what it installs is what the
tests install, its entry point is the launcher, and hadolint finds nothing.

The Dockerfile installs exactly connector/engine-requirements.txt (with --no-deps) and the
local epd-connector; hack/install-vllm-env.sh installs the same file into the cached vLLM env,
and the `vllm`-marked tests below read the versions back from that env and run the launcher
on the env's Python (vLLM's dependency set, as in the image).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from connector.tests.launch.launch_samples import POD, VALID
from connector.tests.vllm_contract.vllm_harness import vllm_python
from e2e.paths import REPO
from epd_connector.launch.pod import DEFAULT_LAUNCH_CONFIG
from epd_connector.launch.store import ENV_STORE_CONFIG, store_files

DOCKERFILE = REPO / "connector" / "Dockerfile"
ENGINE_REQUIREMENTS = REPO / "connector" / "engine-requirements.txt"
VLLM_ENV_REQUIREMENTS = REPO / "hack" / "vllm-env-requirements.txt"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file in which every line must be `name==version`."""
    out: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"{path.name}: {line!r} is not an exact pin"
        out[_normalise(match.group(1))] = match.group(2)
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_base_image_is_vllm_0_33_0() -> None:
    steps = instructions(DOCKERFILE)
    # The base is a build argument (a mirror of the same image may be passed); its default is
    # what `docker build` uses.
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    froms = [a for word, a in steps if word == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    assert args["BASE_IMAGE"] == "vllm/vllm-openai:v0.33.0"


def test_installs_exactly_the_engine_requirements_and_the_launcher() -> None:
    steps = instructions(DOCKERFILE)
    copies = {args.split()[-1]: args.split()[0] for word, args in steps if word == "COPY"}
    assert copies["/opt/epd/engine-requirements.txt"] == "connector/engine-requirements.txt"
    installs = [
        shlex.split(args.split("&&")[0])
        for word, args in steps
        if word == "RUN" and "pip install" in args
    ]
    assert installs == [
        ["python3", "-m", "pip", "install", "--no-cache-dir", "--no-deps",
         "-r", "/opt/epd/engine-requirements.txt"],
        ["python3", "-m", "pip", "install", "--no-cache-dir", "--no-deps", "/opt/epd/connector"],
    ]  # fmt: skip
    assert copies["/opt/epd/connector/src"] == "connector/src"


def test_entry_point_is_the_launcher_in_vllm_mode() -> None:
    steps = instructions(DOCKERFILE)
    assert [args for word, args in steps if word == "ENTRYPOINT"] == ['["epd-engine"]']
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "EPD_ENGINE=vllm" in env.split()
    assert f"EPD_LAUNCH_CONFIG={DEFAULT_LAUNCH_CONFIG}" in env.split()


def test_mooncake_build_matches_the_cpu_twin_the_tests_use() -> None:
    engine = pins(ENGINE_REQUIREMENTS)
    # CUDA 13 build: vLLM 0.33.0 runs on torch 2.14.0+cu130
    assert pins(VLLM_ENV_REQUIREMENTS)["torch"] == "2.14.0"
    cuda13 = engine["mooncake-transfer-engine-cuda13"]
    assert cuda13 == metadata.version("mooncake-transfer-engine-non-cuda")
    transport_extra = (REPO / "connector" / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"mooncake-transfer-engine-non-cuda=={cuda13}"' in transport_extra


@pytest.mark.process
@pytest.mark.parametrize(
    ("dockerfile", "clean"),
    [
        (DOCKERFILE.read_text(encoding="utf-8"), True),
        # proves the linter bites: unpinned base image (DL3007) and pip without pins (DL3013)
        ("FROM vllm/vllm-openai:latest\nRUN pip install mooncake-transfer-engine\n", False),
    ],
    ids=["connector/Dockerfile", "known-bad"],
)
def test_hadolint(tmp_path: Path, dockerfile: str, clean: bool) -> None:
    target = tmp_path / "Dockerfile"
    target.write_text(dockerfile, encoding="utf-8")
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", "--failure-threshold", "style",
         str(target)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    findings = json.loads(done.stdout or "[]")
    if clean:
        assert (done.returncode, findings) == (0, [])
    else:
        assert done.returncode != 0
        assert {f["code"] for f in findings} >= {"DL3007", "DL3013"}


def _env_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    script = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for n in json.loads(sys.argv[1]):\n"
        "    try:\n        out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError:\n        out[n] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(python), "-c", script, json.dumps(names)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return {_normalise(k): v for k, v in json.loads(done.stdout).items()}


@pytest.mark.vllm
@pytest.mark.parametrize("requirements", [ENGINE_REQUIREMENTS, VLLM_ENV_REQUIREMENTS])
def test_vllm_env_has_exactly_the_pinned_versions(requirements: Path) -> None:
    wanted = pins(requirements)
    got = _env_versions(vllm_python(), sorted(wanted))
    assert got == wanted
    assert pins(VLLM_ENV_REQUIREMENTS)["vllm"] == "0.33.0"


@pytest.mark.vllm
def test_launcher_runs_on_the_vllm_dependency_set(tmp_path: Path) -> None:
    """The image installs epd-connector --no-deps next to vLLM: the launcher must work there."""
    cfg = tmp_path / "launch.json"
    cfg.write_text(VALID["epd-everything"].to_json(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPD_", "POD_", "VLLM_"))}
    env.update(
        PYTHONPATH=str(REPO / "connector" / "src"),
        EPD_LAUNCH_CONFIG=str(cfg),
        EPD_ROLE="encoder",
        POD_IP="10.244.3.3",
        POD_NAME="demo-encoder-0",
        POD_NAMESPACE="llm",
    )
    runs = {
        str(python): subprocess.run(
            [str(python), "-m", "epd_connector.launch.cli", "--dry-run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for python in (vllm_python(), Path(sys.executable))
    }
    for python, done in runs.items():
        assert done.returncode == 0, f"{python}: {done.stderr}"
    plans = [json.loads(done.stdout) for done in runs.values()]
    assert plans[0]["argv"] == plans[1]["argv"]
    assert plans[0]["env"] == plans[1]["env"] == {"VLLM_HOST_IP": "10.244.3.3"}


@pytest.mark.vllm
def test_engine_env_reads_our_store_config_and_ships_the_master(tmp_path: Path) -> None:
    """encoderCache.shared relies on the engine image for three things: vLLM 0.33 reads the
    Store config file the launcher writes (MooncakeStoreConfig, its own validation), the
    Mooncake wheel carries the Store client, and the `mooncake_master` the operator runs."""
    cfg = VALID["epd-shared-store"]
    [(_, text)] = store_files(cfg, "encoder", POD).items()
    path = tmp_path / "store.json"
    path.write_text(text, encoding="utf-8")
    probe = (
        "import dataclasses, importlib.util, json\n"
        "from vllm.distributed.mooncake_store import MooncakeStoreConfig\n"
        "c = MooncakeStoreConfig.load_from_config()\n"
        "print(json.dumps({'config': dataclasses.asdict(c),\n"
        "                  'store': importlib.util.find_spec('mooncake.store') is not None}))\n"
    )
    python = vllm_python()
    done = subprocess.run(
        [str(python), "-c", probe],
        env={**os.environ, ENV_STORE_CONFIG: str(path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = json.loads(text)
    assert got["config"] == {**want, "tenant_id": "default"}
    assert got["store"] is True
    assert (python.parent / "mooncake_master").exists()
