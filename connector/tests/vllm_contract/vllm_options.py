"""Runs INSIDE the cached vLLM env: vLLM's `vllm serve` option table, and what vLLM's own
parser makes of given extra arguments, as JSON on stdout.

    echo '{"rows": [["-tp", "2"], ...]}' | <vllm-env>/bin/python vllm_options.py
      -> {"version", "options": {...}, "dests": {canonical: dest}, "rows": [result, ...]}

A row's result is {"error": message} when vLLM refuses `vllm serve m <row>`, else
{"changed": [dest, ...]}: the namespace entries that differ from `vllm serve m` alone.

`options` maps every option string argparse matches on (`serve_parser._option_string_actions`,
so aliases such as `-tp` and `--no-*` negations included) to its action's canonical spelling
(the first long option string). `test_vllm_flags.py` compares it with the committed
`epd_connector/launch/vllm_flags.py` and can rewrite that file (`--write`).
"""

# ruff: noqa: PLC0415  (vLLM is imported inside functions, after the environment is set)
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from typing import Any


def options() -> dict[str, str]:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(subparsers)
    assert serve.allow_abbrev, "the owned-flag check assumes argparse abbreviations are on"
    out: dict[str, str] = {}
    for spelled, action in serve._option_string_actions.items():
        longs = [o for o in action.option_strings if o.startswith("--")]
        strings = longs or list(action.option_strings) or [spelled]
        canonical = strings[0]
        if canonical.startswith("--no-") and len(strings) > 1:
            canonical = strings[1]
        out[spelled] = canonical
    return dict(sorted(out.items()))


def _parser() -> Any:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    ServeSubcommand().subparser_init(subparsers)
    return parser


def parse_row(row: list[str]) -> dict[str, Any]:
    def parse(args: list[str]) -> dict[str, Any]:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                return {"ns": vars(_parser().parse_args(["serve", "m", *args]))}
            except SystemExit:
                return {"error": err.getvalue().strip()[-300:] or "exit"}
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"[:300]}

    base, got = parse([]), parse(row)
    if "error" in got:
        return got
    changed = sorted(k for k, v in got["ns"].items() if base["ns"].get(k, object()) != v)
    return {"changed": changed}


def nargs() -> dict[str, str]:
    """canonical option -> argparse nargs as text, where it is not exactly one value."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    serve = ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
    out = {}
    for action in serve._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs:
            continue
        canonical = longs[1] if longs[0].startswith("--no-") and len(longs) > 1 else longs[0]
        n = "1" if action.nargs is None else str(action.nargs)
        if n != "1":
            out[canonical] = n
    return dict(sorted(out.items()))


def dests() -> dict[str, str]:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    serve = ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
    out = {}
    for action in serve._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs:
            out[longs[0]] = action.dest
    return out


def main() -> int:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    request = json.loads(sys.stdin.read() or "{}")
    import vllm

    with contextlib.redirect_stdout(sys.stderr):
        table = options()
        results = [parse_row(row) for row in request.get("rows", [])]
        names = dests()
        arity = nargs()
    json.dump(
        {
            "version": vllm.__version__,
            "options": table,
            "nargs": arity,
            "dests": names,
            "rows": results,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
