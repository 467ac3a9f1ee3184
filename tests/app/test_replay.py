"""`launch.py replay` (issue 2 item 7): JSON lines from a real video file through the
real engine (tiny checkpoint), and one-line errors with exit code 2."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

import launch  # noqa: E402
from app.replay import ReplayError, parse_ask  # noqa: E402
from tests.model.conftest import shared_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return shared_tiny(tmp_path_factory)


@pytest.fixture(autouse=True)
def _no_aura_env(monkeypatch):
    """launch.py reads AURA_* settings from the environment; keep the tests hermetic."""
    for key in [k for k in os.environ if k.startswith("AURA_")]:
        monkeypatch.delenv(key)


def write_video(path: Path, seconds: float, fps: int = 10, size: int = 64, seed: int = 4) -> Path:
    """Seeded noise frames (mp4v): varied input, so the tiny model both speaks and not."""
    rng = np.random.default_rng(seed)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    for k in range(int(seconds * fps)):
        if k % (fps // 2) == 0:
            frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        out.write(frame)
    out.release()
    return path


def _run(argv, capsys):
    rc = launch.cmd_replay([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_replay_writes_json_lines(tmp_path, tiny, capsys):
    """One step line per chunk (the question closes a partial chunk at 2.3 s), the user line,
    reply lines with their fields, context ids with --dump-context; every line has t, type."""
    video = write_video(tmp_path / "noise.mp4", 8.0)
    out = tmp_path / "run.jsonl"
    rc, _, err = _run([video, "--model", tiny, "--vlm-device", "cpu", "--ask", "2.3:What is on the table?",
                       "--out", out, "--dump-context"], capsys)
    assert rc == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert all("t" in x and "type" in x for x in lines)
    steps = [x for x in lines if x["type"] == "step"]
    assert [s["t"] for s in steps] == [1.0, 2.0, 2.3, 3.3, 4.3, 5.3, 6.3, 7.3]
    assert [x for x in lines if x["type"] == "user"] == [
        {"t": 2.3, "type": "user", "text": "What is on the table?", "source": "typed",
         "speech_end_s": None, "asr_ms": None}]
    assert steps[2]["question"] == "What is on the table?"
    for s in steps:
        assert s["decision"] in ("silent", "speak") and 0 <= s["p_silent"] <= 1
        assert s["step_ms"] > 0 and s["context_tokens"] == len(s["context_ids"])
    replies = [x for x in lines if x["type"] == "reply"]
    assert len(replies) == sum(s["decision"] == "speak" for s in steps) > 0
    assert {"text", "reply_id", "proactive", "ttft_ms"} <= set(replies[0])
    by_t = {s["t"]: s for s in steps}
    assert all(r["proactive"] == (by_t[r["t"]]["question"] is None) for r in replies)


def test_bad_video_is_one_line_and_exit_2(tmp_path, tiny, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    rc, out, err = _run([junk, "--model", tiny], capsys)
    assert rc == 2 and out == ""
    assert err.strip().count("\n") == 0 and "cannot read video frames" in err
    rc, _, err = _run([tmp_path / "missing.mp4", "--model", tiny], capsys)
    assert rc == 2 and "no such video file" in err


def test_bad_ask_and_bad_model_are_one_line(tmp_path, tiny, capsys):
    video = write_video(tmp_path / "v.mp4", 2.0)
    rc, _, err = _run([video, "--model", tiny, "--ask", "soon:hello"], capsys)
    assert rc == 2 and "--ask: expected SECONDS:TEXT" in err
    rc, _, err = _run([video, "--model", tmp_path / "no-model"], capsys)
    assert rc == 2 and err.startswith("error: engine.model: no such model directory")
    with pytest.raises(ReplayError):
        parse_ask("3:")
    assert parse_ask("1.5: hi ").t_s == 1.5


def test_questions_after_the_end_are_error_lines(tmp_path, tiny, capsys):
    video = write_video(tmp_path / "v.mp4", 2.0)
    rc, out, _ = _run([video, "--model", tiny, "--ask", "9:too late"], capsys)
    lines = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and lines[-1]["type"] == "error" and "after the end" in lines[-1]["message"]


def test_realtime_paces_to_the_stream_clock(tmp_path, tiny, capsys):
    """--realtime must not run ahead of the video: 3 s of video take at least ~3 s."""
    video = write_video(tmp_path / "v.mp4", 3.2)
    t0 = time.monotonic()
    rc, out, _ = _run([video, "--model", tiny, "--realtime"], capsys)
    assert rc == 0 and [json.loads(x)["t"] for x in out.splitlines() if '"step"' in x] == [1.0, 2.0, 3.0]
    assert time.monotonic() - t0 >= 2.9


@pytest.mark.slow
def test_preset_offline_uses_the_shipped_trained_model(tmp_path, capsys):
    """`replay --preset offline` needs no --model, no hub and no build: it loads the tiny
    AURA trained here (assets/aura-tiny-colours, app/presets.py) at its pixel budget."""
    from app.config import build_config
    from app.replay import main
    video = write_video(tmp_path / "v.mp4", 3.0)
    cfg = build_config({"app": {"preset": "offline"}, "engine": {"device": "cpu"}})
    assert main(cfg, str(video), [], None, False, False, cache_dir=tmp_path / "cache") == 0
    out = capsys.readouterr()
    steps = [json.loads(x) for x in out.out.splitlines() if '"step"' in x]
    assert [s["t"] for s in steps] == [1.0, 2.0]
    assert "aura-tiny-colours" in out.err and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_record_flag_makes_a_reviewable_replayable_recording(tmp_path, tiny, tiny_whisper, capsys):
    """`replay VIDEO --record DIR` (issue 5 item 1) records the run like a live session: the
    chunks the model saw bit for bit, the typed question, every decision and reply; the
    recording lists in the catalogue and replays to identical decisions."""
    from app.recording.media import read_chunks
    from app.recording.library import list_recordings, read_events
    video = write_video(tmp_path / "noise.mp4", 5.0)
    rc, out, err = _run([video, "--model", tiny, "--vlm-device", "cpu", "--ask", "2.3:What is this?",
                         "--record", tmp_path / "rec"], capsys)
    assert rc == 0, err
    printed = [json.loads(x) for x in out.splitlines()]
    (info,) = list_recordings(tmp_path / "rec")
    assert info.complete and info.n_questions == 1
    rec_dir = tmp_path / "rec" / info.id
    assert f"recorded to {rec_dir}" in err
    recorded = read_events(rec_dir / "events.jsonl")
    for kind in ("user", "step", "reply"):
        assert [r for r in recorded if r["type"] == kind] == [r for r in printed if r["type"] == kind], kind
    chunks = list(read_chunks(rec_dir, recorded))
    steps = [r for r in printed if r["type"] == "step"]
    assert len(chunks) == len(steps) == 5          # 1, 2, 2.3 (closed early by the question), 3, 4 s
    assert [s["t"] for s in steps if s["question"]] == [2.3]

    # `launch.py replay RECORDING_DIR`: the same model and seed give the same decisions
    rc, out, err = _run([rec_dir, "--model", tiny, "--vlm-device", "cpu", "--asr-model", tiny_whisper,
                         "--asr-device", "cpu", "--out", tmp_path / "again"], capsys)
    assert rc == 0, err
    assert out.strip().endswith(f"identical decisions: 0 of 5 steps changed, 0 replies changed; "
                                f"details in {tmp_path / 'again'}")
    result = json.loads((tmp_path / "again" / "comparison.json").read_text())
    assert result["identical_decisions"] and result["steps"]["compared"] == 5


def test_record_flag_errors_are_one_line(tmp_path, tiny, capsys):
    video = write_video(tmp_path / "v.mp4", 2.0)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = _run([video, "--model", tiny, "--vlm-device", "cpu", "--record", blocker / "rec"], capsys)
    assert rc == 2 and err.strip().splitlines()[-1].startswith("error: --record: cannot create")
    rc, _, err = _run([tmp_path, "--record", tmp_path / "rec"], capsys)
    assert rc == 2 and err.strip() == "error: --record and --ask apply to a video file, not to a recording folder"


def test_unwritable_out_is_one_line(tmp_path, tiny, capsys):
    video = write_video(tmp_path / "v.mp4", 2.0)
    rc, _, err = _run([video, "--model", tiny, "--vlm-device", "cpu", "--out", tmp_path / "no" / "x.jsonl"], capsys)
    assert rc == 2 and err.strip().startswith("error: --out: cannot write") and err.count("\n") == 1


class FailingSession:
    """A real engine session that breaks at one chunk (as a context overflow would)."""

    def __init__(self, inner, fail_at: int):
        self.inner, self.fail_at = inner, fail_at

    def step(self, chunk, question=None):
        if chunk.index == self.fail_at:
            from model.session import ContextOverflowError
            raise ContextOverflowError("the context is full")
        return self.inner.step(chunk, question)

    def maintain(self, budget_s):
        return self.inner.maintain(budget_s)

    def context_ids(self):
        return self.inner.context_ids()


def test_engine_failure_mid_stream_is_an_error_line(tmp_path, tiny):
    """An exception inside the engine ends the replay with a ``type: error`` record that
    says where and why (no traceback); the lines before it are kept."""
    from app.config import EngineConfig
    from app.replay import Replayer, read_frames
    from model.vlm import AuraModel
    model = AuraModel.load(EngineConfig(model=str(tiny), device="cpu"))
    session = model.new_session("t")
    try:
        replayer = Replayer(FailingSession(session, fail_at=2))
        records = list(replayer.run(read_frames(write_video(tmp_path / "v.mp4", 5.0)), []))
    finally:
        session.close()
    assert [r["t"] for r in records if r["type"] == "step"] == [1.0, 2.0]
    assert records[-1]["type"] == "error" and records[-1]["t"] == 3.0
    assert records[-1]["message"] == "engine failed at 3 s: ContextOverflowError: the context is full"
    assert replayer.failed == records[-1]["message"]
