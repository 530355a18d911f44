"""GENERATED: every option string of vLLM 0.33.0's `vllm serve` parser -> its canonical spelling.

Regenerate with `.venv/bin/python -m pytest -m vllm connector/tests/vllm_contract/test_vllm_flags.py
--write-vllm-flags` (runs `vllm_options.py` in the cached vLLM env); the same test fails when
this table and vLLM's real parser differ, so the owned-flag check cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

VLLM_VERSION: Final = "0.33.0"
VLLM_SERVE_OPTIONS: Final[Mapping[str, str]] = {
        '--config': '--config',
        '--data-parallel-address': '--data-parallel-address',
        '--data-parallel-rank': '--data-parallel-rank',
        '--data-parallel-rpc-port': '--data-parallel-rpc-port',
        '--data-parallel-size': '--data-parallel-size',
        '--data-parallel-size-local': '--data-parallel-size-local',
        '--data-parallel-start-rank': '--data-parallel-start-rank',
        '--ec-transfer-config': '--ec-transfer-config',
        '--enable-chunked-prefill': '--enable-chunked-prefill',
        '--enforce-eager': '--enforce-eager',
        '--gpu-memory-utilization': '--gpu-memory-utilization',
        '--headless': '--headless',
        '--help': '--help',
        '--host': '--host',
        '--kv-transfer-config': '--kv-transfer-config',
        '--limit-mm-per-prompt': '--limit-mm-per-prompt',
        '--max-model-len': '--max-model-len',
        '--max-num-batched-tokens': '--max-num-batched-tokens',
        '--max-num-seqs': '--max-num-seqs',
        '--media-io-kwargs': '--media-io-kwargs',
        '--mm-encoder-only': '--mm-encoder-only',
        '--mm-encoder-tp-mode': '--mm-encoder-tp-mode',
        '--mm-processor-cache-gb': '--mm-processor-cache-gb',
        '--mm-processor-kwargs': '--mm-processor-kwargs',
        '--model': '--model',
        '--no-enable-chunked-prefill': '--enable-chunked-prefill',
        '--no-enforce-eager': '--enforce-eager',
        '--optimization-level': '--optimization-level',
        '--pipeline-parallel-size': '--pipeline-parallel-size',
        '--port': '--port',
        '--revision': '--revision',
        '--served-model-name': '--served-model-name',
        '--tensor-parallel-size': '--tensor-parallel-size',
        '--tokenizer': '--tokenizer',
        '--tokenizer-mode': '--tokenizer-mode',
        '--tokenizer-revision': '--tokenizer-revision',
        '--uds': '--uds',
        '-O': '--optimization-level',
        '-dp': '--data-parallel-size',
        '-dpa': '--data-parallel-address',
        '-dpl': '--data-parallel-size-local',
        '-dpp': '--data-parallel-rpc-port',
        '-dpr': '--data-parallel-rank',
        '-h': '--help',
        '-pp': '--pipeline-parallel-size',
        '-tp': '--tensor-parallel-size',
}
# How many values each option takes (argparse nargs: "0" for a switch, "1", "?", "*", "+").
VLLM_SERVE_NARGS: Final[Mapping[str, str]] = {
    "--enable-chunked-prefill": "0",
    "--enforce-eager": "0",
    "--headless": "0",
    "--help": "0",
    "--mm-encoder-only": "0",
}
