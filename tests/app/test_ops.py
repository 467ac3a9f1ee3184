"""Health, readiness, metrics and the drain (app/ops.py, app/metrics.py).

The fast tests drive the pieces with small fakes; the pipeline tests run a real session
(tiny models, file-backed devices, real recorder) and check what the metrics and the drain
did to it.
"""
from __future__ import annotations

import base64
import json
import signal
import threading
import time
from dataclasses import dataclass, replace

import pytest

from app.events import (ErrorEvent, Latency, ReplyEnded, ReplyStarted, StepDecision, VideoChunk)
from app.metrics import Metrics
from app.ops import Ops, Signals
from tests.app.conftest import start_run, stop_run


@dataclass
class FakeSession:
    status: str = "watching"

    def snapshot(self):
        return self


class FakeSessions:
    """What Ops needs of a SessionManager, nothing more."""

    def __init__(self, n: int = 0, limit: int = 1) -> None:
        self.sessions = [FakeSession() for _ in range(n)]
        self.max_sessions = limit
        self.queued = 0
        self.admitting = True
        self.notes: list[str] = []
        self.closed = False

    @property
    def count(self) -> int:
        return len(self.sessions)

    def stop_admitting(self) -> None:
        self.admitting = False

    def live(self):
        return list(self.sessions)

    def notify_all(self, source: str, message: str) -> None:
        self.notes.append(message)

    def close_all(self) -> None:
        self.closed = True
        self.sessions = []


def _client(ops: Ops):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient
    return TestClient(Starlette(routes=ops.routes()))


def test_readiness_says_why_it_is_not_ready():
    """Guards the proxy's view: ready only once loaded, with a place free and not draining;
    otherwise 503 with a one-line JSON reason; /healthz answers throughout."""
    sessions = FakeSessions(n=0, limit=1)
    ops = Ops(sessions)
    client = _client(ops)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "models loading"
    assert len(r.text.strip().splitlines()) == 1
    ops.mark_loaded()
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    sessions.sessions.append(FakeSession())
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"].startswith("full: 1 of 1")
    assert set(r.json()) == {"ready", "reason", "sessions", "max_sessions", "queued"}  # counts only
    sessions.sessions.clear()
    ops.drain(0.0, threading.Event())
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"].startswith("draining")
    assert client.get("/healthz").status_code == 200


def test_metrics_need_the_login_unless_public():
    """Guards --auth: /metrics must not leak to anyone without the login unless
    --metrics-public; the probes never need it; --metrics off serves no /metrics."""
    metrics = Metrics(gpu_memory=lambda: [])
    good = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"ops:wrong").decode()
    client = _client(Ops(FakeSessions(), metrics, auth="ops:s3cret"))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": bad}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic !!"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": good})
    assert r.status_code == 200 and "aura_sessions_live" in r.text
    assert client.get("/healthz").status_code == 200
    public = _client(Ops(FakeSessions(), metrics, auth="ops:s3cret", metrics_public=True))
    assert public.get("/metrics").status_code == 200
    off = _client(Ops(FakeSessions(), None))
    assert off.get("/metrics").status_code == 404


def test_session_taps_fill_histograms_counters_and_gauges(tmp_path):
    """Guards the event -> metric mapping: steps, question TTFT, decode per token, each turn
    stage, skipped chunks (gaps in stepped chunk indices, not resets), errors by source,
    recording bytes (kept after the folder is deleted), GPU memory, and two apps' metrics
    staying apart (own registries)."""
    sessions = FakeSessions(n=1, limit=2)
    sessions.queued = 3
    m = Metrics(gpu_memory=lambda: [("cuda:0", "allocated", 1234), ("cuda:1", "reserved", 99)])
    m.watch_sessions(sessions)
    tap = m.tap("s1")
    for i in (0, 1, 4, 0, 1):          # 2 and 3 skipped; then a context reset restarts at 0
        tap(VideoChunk(float(i), i - 1.0, (), index=i))
    tap(StepDecision(1.0, "speak", 0.1, 100, 250.0))
    tap(StepDecision(2.0, "silent", 0.9, 100, 50.0))
    tap(ReplyStarted(2.0, "r1", proactive=False))
    tap(ReplyEnded(2.9, "r1", "hello there", proactive=False, ttft_ms=300.0, n_tokens=10))
    tap(Latency(3.0, "r1", speech_end_s=1.0, transcript_s=1.4, first_token_s=2.0, first_audio_s=2.5))
    tap(ErrorEvent(3.0, "engine", "x"))
    tap(ErrorEvent(3.1, "Bad Source!", "x"))
    rec = tmp_path / "rec1"
    rec.mkdir()
    (rec / "video.mp4").write_bytes(b"\0" * 5000)
    m.watch_recording(rec)
    other = Metrics(gpu_memory=lambda: [])
    other.tap("s2")(StepDecision(1.0, "silent", 0.9, 100, 50.0))

    def value(name, **labels):
        return m.registry.get_sample_value(name, labels)
    assert value("aura_sessions_live") == 1 and value("aura_sessions_queued") == 3
    assert value("aura_chunks_total") == 5 and value("aura_chunks_skipped_total") == 2
    assert value("aura_chunk_step_seconds_count") == 2
    assert value("aura_chunk_step_seconds_sum") == pytest.approx(0.3)
    assert value("aura_chunk_step_seconds_bucket", le="0.2") == 1
    assert value("aura_question_first_token_seconds_sum") == pytest.approx(0.3)
    assert value("aura_decode_seconds_per_token_sum") == pytest.approx(0.9 / 9)
    assert value("aura_turn_stage_seconds_sum", stage="asr") == pytest.approx(0.4)
    assert value("aura_turn_stage_seconds_sum", stage="transcript_to_first_token") == pytest.approx(0.6)
    assert value("aura_turn_stage_seconds_sum", stage="first_token_to_first_audio") == pytest.approx(0.5)
    assert value("aura_turn_stage_seconds_sum", stage="speech_end_to_first_audio") == pytest.approx(1.5)
    assert value("aura_errors_total", source="engine") == 1
    assert value("aura_errors_total", source="bad_source_") == 1
    assert value("aura_gpu_memory_bytes", device="cuda:0", kind="allocated") == 1234
    assert value("aura_recording_bytes_written_total") == 5000
    (rec / "video.mp4").unlink()
    rec.rmdir()
    assert value("aura_recording_bytes_written_total") == 5000    # a counter never goes down
    assert other.registry.get_sample_value("aura_chunk_step_seconds_count") == 1
    body, content_type = m.render()
    assert content_type.startswith("text/plain") and b"aura_chunks_skipped_total 2.0" in body


def test_drain_lets_replies_finish_but_not_longer_than_drain_s():
    """Guards the drain's waiting: it waits while a session is answering, stops waiting as
    soon as none is, never beyond drain_s, and a second signal (hurry) cuts it short; it
    always stops admitting, tells the sessions, and closes them all."""
    sessions = FakeSessions(n=2, limit=2)
    sessions.sessions[0].status = "thinking"
    ops = Ops(sessions)
    ops.mark_loaded()
    threading.Timer(0.3, lambda: setattr(sessions.sessions[0], "status", "watching")).start()
    took = ops.drain(5.0, threading.Event())
    assert 0.25 < took < 2.0 and sessions.closed and not sessions.admitting and len(sessions.notes) == 1

    sessions = FakeSessions(n=1)
    sessions.sessions[0].status = "speaking"
    took = Ops(sessions).drain(0.4, threading.Event())
    assert 0.35 < took < 1.5 and sessions.closed

    sessions = FakeSessions(n=1)
    sessions.sessions[0].status = "speaking"
    hurry = threading.Event()
    threading.Timer(0.2, hurry.set).start()
    took = Ops(sessions).drain(30.0, hurry)
    assert took < 2.0 and sessions.closed


SIGNAL_CHILD = """
import os, signal, sys, time
from app.ops import Signals
signals = Signals(exit_after_s=0.5)
signals.install()
os.kill(os.getpid(), signal.SIGTERM)
assert signals.stop.wait(2) and not signals.hurry.is_set()
print("draining", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
assert signals.hurry.wait(2)
if sys.argv[1] == "hang":
    time.sleep(30)           # closing hangs: the watchdog must end the process
signals.closed()             # closed in time: out at once, code 0
time.sleep(30)
"""


@pytest.mark.parametrize("case, code", [("hang", 128 + signal.SIGTERM), ("closed", 0)])
def test_second_signal_exits_at_once(case, code):
    """Guards Ctrl-C twice: the first only asks for a drain; after the second the process
    ends at once when closing is done (0), or by the watchdog if closing hangs (128+sig)."""
    import subprocess
    import sys
    from pathlib import Path
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", SIGNAL_CHILD, case], capture_output=True, text=True,
                       timeout=25, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == code, r.stderr
    assert "draining" in r.stdout and time.monotonic() - t0 < 10


def test_flags_reach_the_config():
    """Guards the CLI: --metrics off, --metrics-public and --drain-s reach AppConfig, and a
    negative drain is refused naming the field."""
    import launch
    args = launch.app_parser().parse_args(["--metrics", "off", "--metrics-public", "--drain-s", "2.5"])
    cfg = launch.load_config(args)
    assert cfg.app.metrics is False and cfg.app.metrics_public is True and cfg.app.drain_s == 2.5
    assert launch.load_config(launch.app_parser().parse_args([])).app.metrics is True
    with pytest.raises(ValueError, match="app.drain_s"):
        launch.load_config(launch.app_parser().parse_args(["--drain-s", "-1"]))


def test_real_session_metrics_and_drain(runtime, pipeline_config, camera_video, tmp_path):
    """Guards the wiring on a real session (tiny models, real recorder): the metrics see its
    steps, and a drain tells it the app is closing, refuses newcomers, closes it and leaves
    its recording complete, with the bytes counted."""
    from app.clock import MonotonicClock
    from app.main import recorder_factory
    from app.recording.library import dir_size, list_recordings
    from app.sessions import SessionManager
    from tests.speech.fixtures import mic_track
    cfg = replace(pipeline_config, app=replace(pipeline_config.app, proactive=False, record=True,
                                               max_sessions=1, recordings_dir=str(tmp_path / "rec")))
    metrics = Metrics(gpu_memory=lambda: [])
    manager = SessionManager(runtime, cfg, MonotonicClock, recorder_factory(cfg, metrics))
    manager.taps.append(metrics.tap)
    metrics.watch_sessions(manager)
    ops = Ops(manager, metrics)
    ops.mark_loaded()
    run = start_run(manager, camera_video, mic_track(tmp_path, 6.0, name="quiet"))
    try:
        assert run.wait(lambda r: len(r.of(StepDecision)) >= 3)
        assert ops.readiness()[0] is False            # the one place is taken
        assert metrics.registry.get_sample_value("aura_sessions_live") == 1
        took = ops.drain(5.0, threading.Event())
        assert took < 5.0
        assert manager.live() == [] and manager.open(object()) is None
        assert any("shutting down" in m for m in run.view.state().errors)   # the page shows it
    finally:
        stop_run(manager, run)
    (info,) = list_recordings(tmp_path / "rec")
    assert info.complete
    events = [json.loads(line) for line in (tmp_path / "rec" / info.id / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "error" and e["source"] == "server" for e in events)
    steps = sum(1 for e in events if e["type"] == "step")
    assert metrics.registry.get_sample_value("aura_chunk_step_seconds_count") >= steps >= 3
    assert metrics.registry.get_sample_value("aura_recording_bytes_written_total") == \
        dir_size(tmp_path / "rec" / info.id)
    assert metrics.registry.get_sample_value("aura_sessions_live") == 0
