"""Replay as regression: the comparison, and that a recording replays to the same decisions."""
from __future__ import annotations

import numpy as np

from app import events as ev
from app.recording import library as cat
from app.recording.regression import compare, format_markdown, write_comparison
from app.recording.media import mic_blocks, read_chunks
from tests.recording.conftest import record_story
from tests.recording.session_fixture import make_session


def _step(i, decision, p, t=None, ms=50.0):
    return {"t": float(i + 1) if t is None else t, "type": "step", "decision": decision,
            "p_silent": p, "chunk_index": i, "step_ms": ms}


def _turn(i, rid, text, speech_end, first_audio):
    t = float(i + 1)
    return [{"t": t, "type": "reply_start", "reply_id": rid, "proactive": False},
            {"t": t + 0.1, "type": "reply", "reply_id": rid, "text": text, "proactive": False, "ttft_ms": 80.0},
            {"t": t + 0.2, "type": "latency", "reply_id": rid, "speech_end_s": speech_end,
             "transcript_s": speech_end + 0.3, "first_token_s": t + 0.05, "first_audio_s": first_audio}]


def test_identical_runs_compare_identical():
    """Guards against false alarms: the same events must report no change."""
    events = [_step(0, "silent", 0.9), _step(1, "speak", 0.1), *_turn(1, "a", "Hi.", 1.5, 2.4)]
    result = compare(events, [dict(e) for e in events])
    assert result["identical_decisions"] and result["aligned_by"] == "chunk_index"
    assert result["steps"]["changed"] == [] and result["replies"]["changed"] == []
    assert result["latency"]["speech_end_to_first_audio"]["delta_p50_ms"] == 0.0


def test_changed_decision_reply_and_latency_are_reported():
    """Guards against a regression run that misses a flipped decision, a different reply
    (even with new reply ids) or a slower pipeline."""
    old = [_step(0, "silent", 0.9), _step(1, "speak", 0.1, ms=50), _step(2, "silent", 0.8),
           *_turn(1, "a", "A red cup.", 1.5, 2.4)]
    new = [_step(0, "silent", 0.91), _step(1, "speak", 0.2, ms=150), _step(2, "speak", 0.4),
           *_turn(1, "x", "A blue cup.", 1.5, 2.9), *_turn(2, "y", "Extra.", 2.5, 3.5)[:2]]
    result = compare(old, new)
    assert not result["identical_decisions"]
    assert [c["chunk"] for c in result["steps"]["changed"]] == [2]
    assert result["steps"]["max_abs_p_silent_delta"] == 0.4
    changes = {c["chunk"]: c for c in result["replies"]["changed"]}
    assert changes[1]["old"]["text"] == "A red cup." and changes[1]["new"]["text"] == "A blue cup."
    assert changes[2]["old"] is None and changes[2]["new"]["text"] == "Extra."
    lat = result["latency"]
    assert round(lat["speech_end_to_first_audio"]["delta_p50_ms"]) == 500
    assert lat["step"]["old_p50_ms"] == 50.0 and lat["step"]["new_p50_ms"] == 50.0
    assert lat["step"]["old_p90_ms"] == 50.0 and round(lat["step"]["new_p90_ms"]) == 130
    text = format_markdown(result)
    assert "decisions: CHANGED" in text and "| 2 | 3.0 | silent (p_silent 0.8) | speak (p_silent 0.4) |" in text


def test_missing_steps_and_unindexed_steps():
    """Guards against steps present on one side only being ignored, and against
    alignment by a chunk_index that is absent (falls back to order)."""
    old = [_step(0, "silent", 0.9), _step(1, "silent", 0.9), _step(2, "silent", 0.9)]
    new = [_step(0, "silent", 0.9), _step(1, "silent", 0.9)]
    result = compare(old, new)
    assert result["steps"]["only_old"] == [2] and not result["identical_decisions"]
    plain = [{k: v for k, v in s.items() if k != "chunk_index"} for s in old]
    assert compare(plain, plain)["aligned_by"] == "order"
    assert compare(plain, plain)["identical_decisions"]


def test_write_comparison_files(tmp_path):
    """Guards against a replay run that leaves no readable report (None, not NaN, in JSON)."""
    paths = write_comparison(compare([_step(0, "silent", 0.9)], []), tmp_path / "cmp")
    import json
    data = json.loads(paths["json"].read_text())
    assert data["steps"]["only_old"] == [0]
    assert data["latency"]["step"]["new_p50_ms"] is None
    assert "only in the recording" in paths["markdown"].read_text()


def _toy_engine(chunk: ev.VideoChunk, heard: bool) -> tuple[str, float]:
    """A stand-in model whose p_silent depends on every bit of every pixel."""
    acc = 0
    for frame in chunk.frames:
        acc = (acc * 1_000_003 + int(np.asarray(frame, np.int64).ravel() @ np.arange(1, frame.size + 1))) % 1_000_000_007
    p = (acc % 1000) / 1000
    return ("speak" if heard or p < 0.3 else "silent"), p


def _heard(blocks: list[ev.AudioBlock], start: float, end: float) -> bool:
    return any(start <= b.t_s < end and float(np.abs(b.pcm).max()) > 0.05 for b in blocks)


def _run_toy(chunks, blocks) -> list[dict]:
    out = []
    for c in chunks:
        decision, p = _toy_engine(c, _heard(blocks, c.start_s, c.t_s))
        out.append(ev.to_record(ev.StepDecision(c.t_s + 0.05, decision, p, 0, 10.0, c.index)))
    return out


def _record_with_toy(root, voices, lossless: bool):
    story = make_session(voices, seconds=9)
    chunks = [e for _, e in story if isinstance(e, ev.VideoChunk)]
    blocks = [e for _, e in story if isinstance(e, ev.AudioBlock)]
    decisions = {c.index: _toy_engine(c, _heard(blocks, c.start_s, c.t_s)) for c in chunks}
    story = [(emit, e) for emit, e in story if not isinstance(e, ev.StepDecision)]
    story += [(c.t_s + 0.05, ev.StepDecision(c.t_s + 0.05, *decisions[c.index], 0, 10.0, c.index))
              for c in chunks]
    return record_story(root, sorted(story, key=lambda p: p[0]), lossless=lossless)


def test_replay_of_a_recording_reproduces_the_decisions(tmp_path, voices):
    """Guards against a recording that cannot serve as a regression baseline: the chunks and
    microphone read back from it give a pixel-sensitive engine the very same decisions and
    p_silent; with lossy video they would not (which is why video is lossless)."""
    rec = _record_with_toy(tmp_path / "lossless", voices, lossless=True)
    old = cat.read_events(rec.path / "events.jsonl")
    new = _run_toy(list(read_chunks(rec.path, old)), list(mic_blocks(rec.path)))
    result = compare(old, new)
    assert result["identical_decisions"] and result["steps"]["compared"] == 9
    assert result["steps"]["max_abs_p_silent_delta"] == 0.0
    assert any(e["decision"] == "speak" for e in new)

    lossy = _record_with_toy(tmp_path / "lossy", voices, lossless=False)
    old = cat.read_events(lossy.path / "events.jsonl")
    new = _run_toy(list(read_chunks(lossy.path, old)), list(mic_blocks(lossy.path)))
    assert compare(old, new)["steps"]["max_abs_p_silent_delta"] > 0.0
