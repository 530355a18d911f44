"""The control-plane image (root Dockerfile): linted, and installing what the tests install.

No Docker engine runs here, so the image is proven by proxy: its pip line names exactly the
distributions (and extras) `requirements/dev.txt` installs into the test virtualenv, its apt
line exactly the packages hack/bootstrap.sh installs, and those distributions declare every
entry point the image promises.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from e2e.paths import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def run_commands() -> list[list[str]]:
    cmds = []
    for op, rest in instructions():
        if op == "RUN":
            cmds += [shlex.split(part) for part in rest.split("&&")]
    return cmds


@pytest.mark.process
def test_hadolint_is_clean() -> None:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it is a pinned dev dependency (requirements/dev.txt)")
    proc = subprocess.run(
        [found, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pip_installs_what_the_tests_install() -> None:
    """Both installs (dependencies on the version files alone, then the sources without
    dependencies) name exactly the test virtualenv's targets; the last one is the sources'."""
    pip = [c for c in run_commands() if c[:2] == ["pip", "install"]]
    assert len(pip) == 2, pip
    dev = [
        line.split()[1]
        for line in (REPO / "requirements" / "dev.txt").read_text().splitlines()
        if line.startswith("-e ")
    ]
    for cmd in pip:
        targets = sorted(a for a in cmd[2:] if not a.startswith("-"))
        assert targets == sorted(dev), f"Dockerfile installs {targets}, tests install {dev}"
    assert "--no-deps" not in pip[0]
    assert "--no-deps" in pip[1]
    # The dependency layer must not see the source trees (else every change reinstalls all).
    steps = instructions()
    first_pip = next(
        i for i, (op, rest) in enumerate(steps) if op == "RUN" and "pip install" in rest
    )
    sources = [
        i for i, (op, rest) in enumerate(steps) if op == "COPY" and rest.split()[0].endswith("/src")
    ]
    assert sources, steps
    assert min(sources) > first_pip, steps


def test_apt_installs_what_bootstrap_installs() -> None:
    apt = [c for c in run_commands() if c[:2] == ["apt-get", "install"]]
    assert len(apt) == 1, apt
    pkgs = sorted(a.split("=")[0] for a in apt[0][2:] if not a.startswith("-"))
    boot = (REPO / "hack" / "bootstrap.sh").read_text()
    m = re.search(r"^apt_pkgs=\(([^)]*)\)", boot, re.MULTILINE)
    assert m is not None, "hack/bootstrap.sh has no apt_pkgs=(...) line"
    assert pkgs == sorted(m.group(1).split())
    # Every package pinned to a version (hadolint DL3008 asks the same).
    assert all("=" in a for a in apt[0][2:] if not a.startswith("-"))


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    users = [rest for op, rest in instructions() if op == "USER"]
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert uid != "0"
    chart_dep = (REPO / "charts" / "epd-operator" / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in chart_dep


def test_engine_is_the_simulator_and_operator_is_the_default_command() -> None:
    envs = " ".join(rest for op, rest in instructions() if op == "ENV")
    assert "EPD_ENGINE=sim" in envs
    cmd = [rest for op, rest in instructions() if op == "CMD"][-1]
    assert yaml.safe_load(cmd) == ["epd-operator"]


def test_installed_distributions_declare_every_entry_point() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    for name in ("epd-operator", "epd-router", "epdctl", "epd-engine"):
        assert name in scripts, f"{name} is not declared by the installed distributions"
