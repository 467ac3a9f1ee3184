"""The LoRA cost benchmark (model/bench/lora.py): the training sample it builds, CLI
errors, and a whole tiny CPU run with peft adapters and the balanced loss (slow)."""
from __future__ import annotations

import json

import pytest

from model.bench.lora import main, records


def test_records_are_silent_but_two_answers():
    """Guards the sample's supervision: silent chunks with a question answered in the
    middle and on the last chunk (the sample anchored there holds the whole window)."""
    recs = records(6, 32, 32)
    assert [r.answer is not None for r in recs] == [False, False, False, True, False, True]
    assert all(len(r.frames) == 2 and r.frames[0].shape == (32, 32, 3) for r in recs)
    assert [r.t_s - r.start_s for r in recs] == [1.0] * 6


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    """Guards the CLI boundary: one chunk, rank 0, the 8B shape on the CPU: exit code 2."""
    out = str(tmp_path / "l.json")
    assert main(["--chunks", "1", "--out", out]) == 2
    assert main(["--rank", "0", "--out", out]) == 2
    assert main(["--device", "cpu", "--out", out]) == 2
    assert capsys.readouterr().err.count("\n") == 3
    assert not (tmp_path / "l.json").exists()


@pytest.mark.slow
def test_tiny_cpu_lora_steps_train_only_the_adapters(tmp_path):
    """Guards the whole LoRA measurement on the tiny model: one balanced-loss sample with
    the window's chunks through the vision tower, adapters on the 7 projections of each
    layer only, the loss moving as the adapters train, and every reported field."""
    pytest.importorskip("peft")
    out = tmp_path / "l.json"
    rc = main(["--tiny", "--device", "cpu", "--chunks", "3", "--frame-size", "64x64", "--steps", "2",
               "--warmup", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["errors"] == []
    assert res["window_chunks"] == 3 and res["visual_tokens"] > 0 and res["supervised_tokens"] > 0
    assert res["trainable_tensors"] == 2 * 7 * 2                   # A and B, 7 projections, 2 layers
    assert res["trainable_params_m"] < res["total_params_m"] / 100
    assert len(res["losses"]) == 3 and res["losses"][-1] < res["losses"][0]
    assert res["tokens_per_s"] == pytest.approx(res["sample_tokens"] / (res["step_ms_p50"] / 1000), rel=1e-6)
    assert res["minutes_per_epoch_for_moments"] == pytest.approx(200 * res["step_ms_p50"] / 60000, rel=1e-6)
