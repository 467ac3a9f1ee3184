"""The placement benchmark (model/bench/gpus.py): argument errors, and whole tiny CPU runs
with the speech load in its own process and in a thread of the engine's process (slow)."""
from __future__ import annotations

import json

import pytest

from model.bench.gpus import main


def test_bad_devices_are_one_line_errors(tmp_path, capsys):
    """Guards the CLI boundary: a malformed device, the 8B shape on the CPU, a GPU index
    that is not there: exit code 2 and one line on stderr, before anything is built."""
    out = str(tmp_path / "x.json")
    assert main(["--vlm-device", "gpu0", "--speech-device", "cpu", "--tiny", "--out", out]) == 2
    assert "expected cuda:N or cpu" in capsys.readouterr().err
    assert main(["--vlm-device", "cpu", "--speech-device", "cpu", "--out", out]) == 2
    assert "needs --tiny" in capsys.readouterr().err
    assert main(["--vlm-device", "cuda:7", "--speech-device", "cpu", "--tiny", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "cuda:7 requested" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_tiny_cpu_run_reports_both_phases_and_the_speech_loop(tmp_path, monkeypatch, mode):
    """Guards the whole placement run: the engine stream alone and under a speech load run
    by a spawned process or by a thread of this process (TTS + ASR loops counted in both
    phases), the loaded/alone ratios, and no failed section."""
    pytest.importorskip("transformers")
    monkeypatch.delenv("NCCL_NVLS_ENABLE", raising=False)     # main() sets it; restored after
    out = tmp_path / "p.json"
    rc = main(["--tiny", "--vlm-device", "cpu", "--speech-device", "cpu", "--minutes", "0.1",
               "--out", str(out), "--decode-context", "100", "--reply-max", "8", "--speech-alone-s", "1"]
              + (["--speech-in-process"] if mode == "thread" else []))
    res = json.loads(out.read_text())
    assert res["speech_mode"] == mode
    assert rc == 0 and res["errors"] == []
    assert res["alone"]["chunks"] == res["loaded"]["chunks"] == 6
    assert res["alone_chunk_step_p50_ms"] > 0 and res["loaded_chunk_step_p99_ms"] > 0
    assert set(res["ratio_loaded_over_alone"]) >= {"chunk_step_p50_ms", "chunk_step_p99_ms"}
    sp = res["speech"]
    assert sp["alone"]["iterations"] >= 1 and sp["loaded"]["iterations"] >= 1
    assert sp["params_m"]["tts"] > 0 and sp["params_m"]["asr"] > 0
    assert res["nccl_nvls_enable"] == "0" and res["cache_pool"] == 4
