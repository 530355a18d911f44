"""Fuzz (seeded, deterministic): generated EPDCluster specs never crash the operator's
checks, an admitted spec is one every pod can launch (no bad spec goes Ready), and every
refusal names a field. The apiserver tier (test_webhook_integration.py) sends a slice of the
same specs through `kubectl apply` with the webhook."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from spec_fuzz import generate, judge

SEED = 10
COUNT = 600
# A refusal names the field it is about: a spec/metadata path, as the webhook shows it.
FIELD_PATH = re.compile(r"^(spec|metadata)(\.[A-Za-z0-9_/.-]+|\[\d+\])*")


def test_fuzzed_specs(capsys: pytest.CaptureFixture[str]) -> None:
    counts: Counter[str] = Counter()
    failures = []
    for obj in generate(SEED, COUNT):
        counts["generated"] += 1
        verdict = judge(obj)  # must not raise: no crash on any input
        if not verdict.admitted:
            counts["refused"] += 1
            if not FIELD_PATH.match(verdict.refusal_path):
                failures.append(f"refusal without a field: {verdict.refusal!r}")
            continue
        counts["admitted"] += 1
        if verdict.problems:
            failures.append(f"{obj['metadata']['name']} admitted but {verdict.problems}")
        else:
            counts["launchable"] += 1
    with capsys.disabled():
        print(f"\nfuzz seed {SEED}: {dict(counts)}")
    assert not failures, "\n".join(failures[:20])
    # Both sides exercised: the generator is not degenerate.
    assert counts["admitted"] > COUNT // 5
    assert counts["refused"] > COUNT // 5
