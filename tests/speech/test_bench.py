"""speech.bench: the benchmark behind docs/speech.md's numbers keeps running."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_prints_one_row_per_measurement(tiny_models):
    """The documented numbers come from `python -m speech.bench`; if it breaks, the docs
    can no longer be re-measured. VAD must stay within its 1 ms budget."""
    models = tiny_models["whisper"].parent
    out = subprocess.run([sys.executable, "-m", "speech.bench", "--models", str(models), "--repeat", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["what"] for r in rows] == ["vad", "echo_guard", "asr", "tts", "tts"]
    assert rows[0]["median_ms"] <= 1.0
    assert all(r["rtf"] > 0 for r in rows[2:])
