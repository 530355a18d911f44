"""The owned-flag check against vLLM 0.33.0's real `vllm serve` parser (cached vLLM env).

- the committed option table (`epd_connector/launch/vllm_flags.py`) equals the parser's, so
  the abbreviation / alias matching in `launch/rules.py` cannot drift from vLLM;
- every owned-flag row of the shared table (connector/tests/rule_tables.py) is one vLLM reads
  as the owned option (or refuses outright), and every accepted row parses without touching
  an owned option: the table says what vLLM does, not what we guess.

Regenerate the table after a vLLM bump:
    .venv/bin/python connector/tests/vllm_contract/test_vllm_flags.py --write
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.tests import rule_tables as t
from connector.tests.vllm_contract.vllm_harness import vllm_python
from e2e.paths import REPO
from epd_connector.launch import rules
from epd_connector.launch.vllm_flags import VLLM_SERVE_NARGS, VLLM_SERVE_OPTIONS, VLLM_VERSION

pytestmark = pytest.mark.vllm

SCRIPT = Path(__file__).with_name("vllm_options.py")
TABLE = REPO / "connector" / "src" / "epd_connector" / "launch" / "vllm_flags.py"


def ask_vllm(python: Path, rows: list[list[str]]) -> dict[str, Any]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(VLLM_TARGET_DEVICE="cpu", VLLM_NO_USAGE_STATS="1")
    proc = subprocess.run(
        [str(python), str(SCRIPT)],
        input=json.dumps({"rows": rows}),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
        cwd="/",
    )
    if proc.returncode != 0:
        raise AssertionError(f"vllm_options.py failed:\n{proc.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


@pytest.fixture(scope="module")
def vllm() -> dict[str, Any]:
    rows = [r[1] for r in t.OWNED_FLAG_ROWS] + [r[1] for r in t.ACCEPTED_FLAG_ROWS]
    return ask_vllm(vllm_python(), rows)


def test_the_committed_option_table_is_vllms(vllm: dict[str, Any]) -> None:
    assert vllm["version"] == VLLM_VERSION
    ours, theirs = dict(VLLM_SERVE_OPTIONS), vllm["options"]
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(set(ours) - set(theirs))
    wrong = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    arity = sorted(set(VLLM_SERVE_NARGS.items()) ^ set(vllm["nargs"].items()))
    assert (missing, extra, wrong, arity) == ([], [], [], []), (
        "vllm_flags.py drifted from vLLM's parser; regenerate it with "
        "`.venv/bin/python connector/tests/vllm_contract/test_vllm_flags.py --write`"
    )


@pytest.mark.parametrize(
    "index", range(len(t.OWNED_FLAG_ROWS)), ids=[r[0] for r in t.OWNED_FLAG_ROWS]
)
def test_vllm_reads_each_refused_row_as_an_owned_option_or_refuses_it(
    vllm: dict[str, Any], index: int
) -> None:
    rid, args, at, _ = t.OWNED_FLAG_ROWS[index]
    got = vllm["rows"][index]
    if "error" in got:
        return  # vLLM itself refuses the argv: the engine would never start
    owned = rules.resolve_flag(args[at]).option
    assert owned in rules.OWNED_FLAGS, (rid, owned)
    assert vllm["dests"][owned] in got["changed"], (rid, got)


@pytest.mark.parametrize(
    "index", range(len(t.ACCEPTED_FLAG_ROWS)), ids=[r[0] for r in t.ACCEPTED_FLAG_ROWS]
)
def test_vllm_accepts_each_kept_row_without_touching_owned_options(
    vllm: dict[str, Any], index: int
) -> None:
    rid, _ = t.ACCEPTED_FLAG_ROWS[index]
    got = vllm["rows"][len(t.OWNED_FLAG_ROWS) + index]
    assert "error" not in got, (rid, got)
    owned_dests = {vllm["dests"][o] for o in rules.OWNED_FLAGS}
    assert not set(got["changed"]) & owned_dests, (rid, got)


def write_table(python: Path) -> None:
    answer = ask_vllm(python, [])
    body = "\n".join(f"    {k!r}: {v!r}," for k, v in sorted(answer["options"].items()))
    arity = "\n".join(f"    {k!r}: {v!r}," for k, v in sorted(answer["nargs"].items()))
    version = answer["version"]
    TABLE.write_text(f'''"""GENERATED from vLLM {version}'s `vllm serve` parser: every option string
it matches -> the canonical (first long) spelling of its action, and how many values each
option takes. Do not edit by hand.

Regenerate: `.venv/bin/python connector/tests/vllm_contract/test_vllm_flags.py --write` (runs
`vllm_options.py` in the cached vLLM env). The `vllm`-marked contract test fails when this
table and vLLM's real parser differ, so the owned-flag check in `rules.py` cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

VLLM_VERSION: Final = {version!r}
VLLM_SERVE_OPTIONS: Final[Mapping[str, str]] = {{
{body}
}}
# How many values each option takes where it is not exactly one (argparse nargs: "0" for a
# switch, "?", "*", "+").
VLLM_SERVE_NARGS: Final[Mapping[str, str]] = {{
{arity}
}}
''')


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_vllm_flags.py --write")
    located = subprocess.run(
        [str(REPO / "hack" / "install-vllm-env.sh"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    )
    write_table(Path(located.stdout.strip()) / "bin" / "python")
    print(f"wrote {TABLE}")
