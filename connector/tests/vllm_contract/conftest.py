"""pytest setup for the vLLM contract tests: assertion rewriting in the shared harness."""

import pytest

pytest.register_assert_rewrite("connector.tests.vllm_contract.vllm_harness")
