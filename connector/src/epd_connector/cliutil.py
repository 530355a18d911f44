"""Command-line helpers of our processes: flags generated from a settings dataclass (the
router's and the simulator's: one `--flag-name` per field, typed by its default, optionally
overridable from the environment, so a knob is declared once (the dataclass) and documented
once (its help text)), and tying a child's life to its parent's."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type[Any],
    helps: Mapping[str, str],
    *,
    env_prefix: str | None = None,
    skip: Collection[str] = (),
) -> None:
    """Add `--<field-name>` for every field of `cls` (a dataclass whose fields all have
    defaults). With `env_prefix`, `<PREFIX><FIELD>` in the environment replaces the default;
    a value of the wrong type is a usage error naming the variable."""
    defaults = cls()
    for f in fields(cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        kind = type(default)
        where = ""
        if env_prefix is not None:
            env = env_prefix + f.name.upper()
            where = f"env {env}; "
            if env in os.environ:
                try:
                    default = kind(os.environ[env])
                except ValueError:
                    parser.error(f"{env}={os.environ[env]!r}: expected {kind.__name__}")
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{helps[f.name]} ({where}default %(default)s)",
        )


def dataclass_values(
    args: argparse.Namespace, cls: type[Any], skip: Collection[str] = ()
) -> dict[str, Any]:
    """The parsed values of the flags `add_dataclass_flags` added, as constructor kwargs."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in skip}


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM this process when its parent thread exits (Linux `PR_SET_PDEATHSIG`, kept across
    exec): a child started as preexec_fn or right after fork, so none outlives a killed parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
