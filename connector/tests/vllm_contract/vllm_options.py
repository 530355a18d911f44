"""Runs INSIDE the cached vLLM env: prints vLLM's `vllm serve` option table as JSON.

    <vllm-env>/bin/python vllm_options.py            -> {"version": ..., "options": {...}}

`options` maps every option string argparse matches on (`serve_parser._option_string_actions`,
so aliases such as `-tp` and `--no-*` negations included) to its action's canonical spelling
(the first long option string). `test_vllm_flags.py` compares it with the committed
`epd_connector/launch/vllm_flags.py` and can rewrite that file (`--write`).
"""

# ruff: noqa: PLC0415  (vLLM is imported inside functions, after the environment is set)
from __future__ import annotations

import contextlib
import json
import os
import sys


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


def main() -> int:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    import vllm

    with contextlib.redirect_stdout(sys.stderr):
        table = options()
    json.dump({"version": vllm.__version__, "options": table}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
