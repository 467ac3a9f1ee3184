"""The recorder: files, alignment of events with media, exact media, failures, retention."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app import events as ev
from app.recording import library as cat
from app.clock import ManualClock
from app.recording.recorder import Recorder
from app.recording.media import frame_at, iter_video_frames, read_chunks, read_wav
from tests.recording.conftest import record_story
from tests.recording.session_fixture import H, W, draw_frame, make_session, make_voices, read_counter

ROOT = Path(__file__).resolve().parents[2]


def test_files_exist_and_meta_is_final(recorded):
    """Guards against a recording missing a file or a close() that never finalises meta."""
    names = {p.name for p in recorded.path.iterdir()}
    assert set(cat.FILES) <= names
    meta = cat.read_meta(recorded.path)
    assert meta["complete"] is True and meta["session"] == {"test": True}
    assert meta["counts"]["questions"] == 1 and meta["counts"]["replies"] == 2
    assert recorded.errors == []


def test_event_times_are_monotonic_and_late_events_fall_in_place(recorded):
    """Guards against events.jsonl written in arrival order (VAD/ASR stamp events late)."""
    events = cat.read_events(recorded.path / "events.jsonl")
    times = [e["t"] for e in events]
    assert times == sorted(times)
    assert not any("t_event" in e for e in events)  # all were within the reorder window
    kinds = [e["type"] for e in events]
    assert "speech_end" in kinds and "audio" not in kinds and "frame" not in kinds
    end = next(e for e in events if e["type"] == "speech_end")
    assert "pcm" not in end and end["duration_s"] > 1.0


def test_every_event_has_its_frame_in_the_mp4_within_half_a_second(recorded):
    """Guards against video drifting from the event clock (wrong pts, lost partial-chunk
    frames, a lead-in that shifts everything)."""
    frames = list(iter_video_frames(recorded.path / "video.mp4"))
    events = cat.read_events(recorded.path / "events.jsonl")
    checked = 0
    for e in events:
        if e["type"] in ("chunk", "step", "user", "reply_start", "reply", "barge_in"):
            _t, image = frame_at(frames, e["t"])
            assert abs(read_counter(image) - e["t"]) <= 0.5, e
            checked += 1
    assert checked >= 20


def test_frames_are_bit_exact_so_replay_sees_the_same_pixels(recorded):
    """Guards against lossy video: a replay must feed the model the very same chunks."""
    events = cat.read_events(recorded.path / "events.jsonl")
    chunks = list(read_chunks(recorded.path, events))
    originals = [e for _, e in recorded.story if isinstance(e, ev.VideoChunk)]
    assert len(chunks) == len(originals) == 9
    for got, want in zip(chunks, originals):
        assert (got.index, got.start_s, got.t_s) == (want.index, want.start_s, pytest.approx(want.t_s))
        assert len(got.frames) == len(want.frames)
        for a, b in zip(got.frames, want.frames):
            assert np.array_equal(a, b)
    assert any(len(c.frames) == 1 for c in chunks)  # the partial chunk survived


def test_mic_track_is_the_microphone_sample_for_sample(recorded):
    """Guards against mic audio placed at the wrong time or quantised."""
    pcm, rate = read_wav(recorded.path / "mic.wav")
    blocks = [e for _, e in recorded.story if isinstance(e, ev.AudioBlock)]
    want = np.concatenate([b.pcm for b in blocks])
    assert rate == 16000 and len(pcm) == len(want)
    assert np.array_equal(pcm, want)


def test_assistant_track_places_speech_and_cuts_it_at_barge_in(recorded):
    """Guards against assistant audio at the wrong time, or a barged-in reply that keeps
    playing in the recording although the speaker was flushed."""
    pcm, rate = read_wav(recorded.path / "assistant.wav")
    events = cat.read_events(recorded.path / "events.jsonl")
    audio = [e for e in events if e["type"] == "tts_audio"]
    sent = {e.reply_id: e.pcm for _, e in recorded.story if isinstance(e, ev.SpeechAudio)}
    barge = next(e for e in events if e["type"] == "barge_in")
    assert rate == 22050
    first = audio[0]
    i = round(first["play_s"] * rate)
    assert np.array_equal(pcm[i:i + len(sent[first["reply_id"]])], sent[first["reply_id"]])
    cut_reply = audio[1]
    j = round(cut_reply["play_s"] * rate)
    cut = round(barge["t"] * rate)
    assert cut_reply["reply_id"] == barge["reply_id"] and j < cut
    assert len(pcm) == cut  # the cut reply was the tail: the track ends at the barge-in
    assert np.array_equal(pcm[j:cut], sent[cut_reply["reply_id"]][:cut - j])


def test_late_event_beyond_the_reorder_window_keeps_its_time(tmp_path):
    """Guards against a very late event breaking the sort order silently."""
    clock = ManualClock(5.0)
    rec = Recorder.open(tmp_path, "late", {}, clock, lambda e: None)
    rec.handle(ev.StatusChanged(5.0, "watching"))
    clock.set(7.0)
    path = rec.path / "events.jsonl"
    deadline = time.monotonic() + 5
    while not path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # the writer flushes every 0.25 s of real time
    rec.handle(ev.StatusChanged(4.0, "listening"))
    rec.close()
    lines = cat.read_events(path)
    assert [x["t"] for x in lines] == [5.0, 5.0]
    assert lines[1]["t_event"] == 4.0 and lines[1]["state"] == "listening"


def test_queue_overflow_drops_reports_once_and_keeps_recording(tmp_path):
    """Guards against a blocked caller or a crash when the writer falls behind."""
    errors: list[ev.ErrorEvent] = []
    clock = ManualClock()
    rec = Recorder.open(tmp_path, "flood", {}, clock, errors.append, queue_size=8)
    block = np.zeros(512, np.float32)
    started = time.monotonic()
    for k in range(20000):
        rec.handle(ev.AudioBlock(k * 0.032, block, 16000))
    assert time.monotonic() - started < 5  # handle() never waits for the disk
    rec.handle(ev.StatusChanged(0.5, "watching"))
    rec.close()
    dropped = [e for e in errors if "dropped" in e.message]
    assert dropped and all(e.source == "recorder" and not e.fatal for e in dropped)
    meta = cat.read_meta(rec.path)
    assert meta["complete"] and meta["dropped_events"] > 0
    assert read_wav(rec.path / "mic.wav")[0].size > 0


def test_camera_size_change_mid_session_is_resized_not_fatal(tmp_path):
    """Guards against a browser camera switching resolution breaking the encoder."""
    clock = ManualClock()
    errors: list = []
    rec = Recorder.open(tmp_path, "resize", {}, clock, errors.append)
    rec.handle(ev.VideoChunk(1.0, 0.0, (draw_frame(0.5), draw_frame(1.0)), 0))
    big = np.zeros((H * 2 + 1, W * 2, 3), np.uint8)
    rec.handle(ev.VideoChunk(2.0, 1.0, (big, big), 1))
    rec.close()
    frames = list(iter_video_frames(rec.path / "video.mp4"))
    assert errors == [] and len(frames) == 5  # lead-in + 4
    assert all(f.shape == (H, W, 3) for _, f in frames)
    assert cat.read_meta(rec.path)["video_resized_frames"] == 2


def test_bad_session_id_is_refused(tmp_path):
    """Guards against a session id turning into a path outside the root."""
    for bad in ("../x", "a/b", "", "x" * 65, "a b"):
        with pytest.raises(ValueError, match="session id"):
            Recorder.open(tmp_path, bad, {}, ManualClock(), lambda e: None)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_one_error_event_not_a_crash(tmp_path, voices):
    """Guards against ENOSPC killing the session (real full disk: a 256 KiB tmpfs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        rec = record_story(mount, make_session(voices, seconds=9), session_id="full")
        assert len(rec.errors) == 1, rec.errors
        assert rec.errors[0].source == "recorder"
        assert "No space left on device" in rec.errors[0].message
        assert not cat.is_live(rec.path)  # the lock was released
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fake_recording(root: Path, name: str, size: int) -> Path:
    path = root / name
    path.mkdir()
    (path / "video.mp4").write_bytes(b"\0" * size)
    return path


def test_retention_deletes_oldest_first_never_the_live_one(tmp_path):
    """Guards against the size cap deleting a recording being written (by another session:
    its lock is held) or deleting newest first."""
    live = _fake_recording(tmp_path, "20250101-000000-other", 600_000)  # oldest, but live
    for name in ["20260101-000000-a", "20260102-000000-b", "20260103-000000-c"]:
        _fake_recording(tmp_path, name, 600_000)
    fd = os.open(live / cat.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        rec = Recorder.open(tmp_path, "new", {}, ManualClock(), lambda e: None, max_gb=0.0019)
        rec.close()
    finally:
        os.close(fd)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["20250101-000000-other", "20260102-000000-b", "20260103-000000-c", rec.path.name]


def test_recording_above_the_size_cap_is_stopped_with_an_error(tmp_path, voices):
    """Guards against one endless session filling the disk past recordings_max_gb."""
    rec = record_story(tmp_path, make_session(voices, seconds=9), session_id="big",
                       max_gb=0.0002, retention_every_s=0.0)
    assert [e.message for e in rec.errors] == [
        f"recording stopped: {rec.path.name} reached the size cap (0.0002 GB)"]
    assert not cat.read_meta(rec.path)["complete"] and not cat.is_live(rec.path)


@pytest.mark.timeout(60)
def test_sigkill_mid_session_leaves_a_readable_recording(tmp_path):
    """Guards against a crash losing the session: after SIGKILL at ~6 s every file reads,
    at most about a second is missing, and the catalogue and export still work."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.recording.session_fixture", str(tmp_path), "9"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    path = None
    try:
        for line in proc.stdout:
            if line.startswith("recording "):
                path = Path(line.split(" ", 1)[1].strip())
            if line.startswith("tick") and float(line.split()[1]) >= 6.0:
                kill_t = float(line.split()[1])
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and path is not None
    events = cat.read_events(path / "events.jsonl")
    got = {(e["type"], e["t"]) for e in events}
    story = make_session(make_voices(), seconds=9)
    due = {(e.type, round(e.t_s, 3)) for emit, e in story
           if not isinstance(e, ev.AudioBlock) and e.t_s <= kill_t - 1.05 and emit <= kill_t}
    assert len(due) > 15 and due <= got  # all but the last second of events survived
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    mic, rate = read_wav(path / "mic.wav")
    assert len(mic) / rate >= kill_t - 1.0
    frames = list(iter_video_frames(path / "video.mp4"))
    # a frame covers 0.5 s at 2 fps; the muxer holds the newest frame until the next one
    assert frames[-1][0] + 0.5 >= kill_t - 1.0
    assert abs(read_counter(frames[-1][1]) - frames[-1][0]) < 0.01
    chunks = list(read_chunks(path, events))
    assert len(chunks) >= int(kill_t) - 1
    info = cat.info(tmp_path, path.name)
    assert not info.live and not info.complete and info.duration_s >= kill_t - 1.0
    assert json.loads((path / "meta.json").read_text())["complete"] is False

    from app.recording.export import export
    out = export(path, tmp_path / "killed.zip")
    assert out.stat().st_size > 0
