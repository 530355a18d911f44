"""The one way tests load the committed samples: crds/samples/*.yaml (valid) and
crds/samples/invalid/*.yaml (with their `# rejected-by / # path / # expect` headers), for the
API, render, reconcile and integration tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.paths import SAMPLES

INVALID = SAMPLES / "invalid"


@dataclass(frozen=True)
class InvalidSample:
    path: Path
    rejected_by: str  # "apiserver" | "operator"
    field: str
    expect: str
    expect_parse: str

    @property
    def name(self) -> str:
        return self.path.stem

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def obj(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.text())
        return loaded


def valid_samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.yaml"))


def sample_path(name: str) -> Path:
    """crds/samples/<name>.yaml (a missing sample fails here, by name)."""
    path = SAMPLES / f"{name}.yaml"
    assert path.exists(), f"no sample {name!r} in {SAMPLES}"
    return path


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def sample(name: str) -> dict[str, Any]:
    """A fresh copy of a valid sample, as a dict (callers may change it)."""
    return load(sample_path(name))


def invalid_samples() -> list[InvalidSample]:
    out = []
    for path in sorted(INVALID.glob("*.yaml")):
        headers: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition(":")
            if sep and key in ("rejected-by", "path", "expect", "expect-parse"):
                headers[key] = value.strip()
        missing = {"rejected-by", "path", "expect"} - headers.keys()
        if missing:
            raise AssertionError(f"{path}: header(s) {sorted(missing)} missing")
        if headers["rejected-by"] not in ("apiserver", "operator"):
            raise AssertionError(f"{path}: rejected-by must be apiserver or operator")
        out.append(
            InvalidSample(
                path=path,
                rejected_by=headers["rejected-by"],
                field=headers["path"],
                expect=headers["expect"],
                expect_parse=headers.get("expect-parse", headers["expect"]),
            )
        )
    return out
