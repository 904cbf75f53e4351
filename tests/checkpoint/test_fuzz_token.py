"""A coverage-guided run (atheris, libFuzzer) of the token decoder and verifier: bounded,
seeded, from the pinned vectors (bench/fuzz_token.py; run it longer by hand)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUZZER = ROOT / "bench" / "fuzz_token.py"
VECTORS = ROOT / "tests" / "vectors" / "token_v1.json"
RUNS = int(os.environ.get("CHECKPOINT_FUZZ_RUNS", "50000"))


def test_the_decoder_survives_a_coverage_guided_run(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [sys.executable, str(FUZZER), f"-runs={RUNS}", "-seed=1", str(corpus)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {RUNS} runs" in result.stderr
    # The corpus starts as the pinned vectors; the fuzzer kept inputs that reached new code.
    seeds = len(json.loads(VECTORS.read_text(encoding="utf-8"))["cases"])
    assert len(list(corpus.iterdir())) > seeds
