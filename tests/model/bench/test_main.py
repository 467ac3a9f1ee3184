"""The benchmark command (model/bench/main.py): CLI errors, and a whole CPU smoke run (slow)."""
from __future__ import annotations

import json

import pytest

from model.bench.main import main, pct


def test_percentile_and_missing_config(tmp_path, capsys):
    """Guards the nearest-rank quantile used for every p50/p99, and the one-line exit-2
    error for a config file that does not exist."""
    assert pct([], 0.5) is None
    assert pct([5.0, 1.0, 3.0], 0.5) == 3.0 and pct(list(range(101)), 0.99) == 99
    assert main(["--out", str(tmp_path / "x.json"), "--config", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_issue_key(tmp_path):
    """Guards the whole benchmark end to end on the tiny model (baseline, fast setup,
    agreement, both harness streams, the engine's AuraSession and its decode, the backend
    decode loop, vision): every key the issue asks for is written, the headline keys are
    the engine's, and no section failed."""
    pytest.importorskip("transformers")
    out = tmp_path / "tiny.json"
    rc = main(["--tiny", "--device", "cpu", "--minutes", "0.3", "--out", str(out),
               "--baseline-chunks", "2", "--baseline-decode", "2", "--agreement-steps", "3",
               "--agreement-chunks", "1", "--decode-contexts", "600", "--decode-tokens", "3",
               "--max-tokens", "8192", "--idle-budget-ms", "100000", "--engine-reply-max", "8",
               "--engine-decode-context", "100"])
    res = json.loads(out.read_text())
    assert rc == 0 and res["errors"] == []
    for key in ("device", "date", "decode_ms_per_token", "chunk_step_p50_ms", "chunk_step_p99_ms",
                "chunk_step_max_ms", "question_ttft_ms", "baseline_decode_ms_per_token",
                "baseline_chunk_step_p50_ms", "hbm_floor_ms_per_token", "peak_mem_gb"):
        assert key in res, key
    assert res["engine"]["chunks"] == 18 and res["stream"]["chunks"] == 18
    assert res["headline_source"].startswith("engine") and res["engine"]["decode"]
    assert res["decode_ms_per_token"] == res["engine"]["decode_ms_per_token_p50"]
    assert res["chunk_step_p50_ms"] == res["engine"]["chunk_step_p50_ms"]
    assert res["harness_strict_chunk_step_p50_ms"] == res["stream"]["chunk_step_p50_ms"]
    assert res["agreement"]["teacher_forced_steps"] == 3
