"""The turn benchmark (model/bench/turn.py): the VAD's end-of-speech wait from the app's
segmenter, CLI errors, and a whole tiny CPU run with 1 and 2 live sessions (slow)."""
from __future__ import annotations

import json
import math

import pytest

from app.config import SpeechConfig
from model.bench.turn import AUTHORS_ESTIMATE_MS, main, vad_end_wait_ms
from speech.audio import BLOCK_S


@pytest.mark.parametrize("silence_ms", [500, 300])
def test_vad_wait_is_the_min_silence_in_whole_blocks(silence_ms):
    """Guards the separately reported VAD wait: the app's segmenter ends an utterance once
    ``vad_min_silence_ms`` of silence has passed after the last voiced block, so the wait is
    that silence rounded up to whole 32-ms blocks (500 -> 512 ms), counted from the end of
    speech as the VAD sees it; a changed config changes it."""
    cfg = SpeechConfig(vad_min_silence_ms=silence_ms)
    expected = math.ceil(silence_ms / 1000 / BLOCK_S - 1e-9) * BLOCK_S * 1000
    assert vad_end_wait_ms(cfg) == pytest.approx(expected, abs=1e-6)


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    """Guards the CLI boundary: no turns, a first sentence longer than the reply, the 8B
    shape on the CPU: exit code 2, one line each, nothing written."""
    out = str(tmp_path / "t.json")
    assert main(["--turns", "0", "--out", out]) == 2
    assert main(["--sentence-tokens", "30", "--reply-tokens", "10", "--out", out]) == 2
    assert main(["--device", "cpu", "--out", out]) == 2
    assert capsys.readouterr().err.count("\n") == 3
    assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_tiny_cpu_run_reports_parts_sum_and_headline(tmp_path):
    """Guards the whole command on tiny models: both live-session counts run, each part and
    the sum have p50/p90, e2e = VAD wait + the parts, the headline is the 1-session p50,
    the background session's stream is summarised, and the fallbacks are labelled."""
    pytest.importorskip("transformers")
    out = tmp_path / "t.json"
    rc = main(["--tiny", "--device", "cpu", "--turns", "3", "--live", "1", "2", "--warm-chunks", "2",
               "--turn-every-s", "1.0", "--out", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and res["errors"] == []
    assert set(res["live"]) == {"1", "2"}
    for r in res["live"].values():
        assert r["turns"] == 3
        for part in ("asr", "engine", "tts", "sum_parts", "e2e"):
            assert r[f"{part}_ms_p50"] > 0 and r[f"{part}_ms_p90"] >= r[f"{part}_ms_p50"]
        for t in r["per_turn"]:
            assert t["e2e_ms"] == pytest.approx(res["vad_end_wait_ms"] + t["asr_ms"] + t["engine_ms"] + t["tts_ms"],
                                                abs=0.05)
    assert res["e2e_first_audio_ms_p50"] == res["live"]["1"]["e2e_ms_p50"]
    assert res["live"]["2"]["background"]["n"] == 1 and "chunks_skipped" in res["live"]["2"]["background"]
    assert res["anchor"]["authors_estimate_ms"] == AUTHORS_ESTIMATE_MS == 312
    assert "NOT faster-whisper" in res["impl"]["asr"] and "NOT Coqui" in res["impl"]["tts"]
