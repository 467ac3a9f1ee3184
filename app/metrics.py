"""Prometheus metrics, fed by the events every session already emits.

Contract:
* ``Metrics(gpu_memory=cuda_memory)`` owns its own ``CollectorRegistry`` (never the
  global one), so several apps and tests in one process do not clash.
  ``watch_sessions(manager)``: read at scrape time, ``.count`` (live) and ``.queued``.
* ``tap(session_id)`` returns a listener for one session's events (the view and recorder
  get the same events); it never raises into the session and keeps only tiny state.
* ``watch_recording(path)``: the recording's bytes count towards
  ``aura_recording_bytes_written_total`` (sizes read at scrape time, kept when deleted).
* ``render() -> (body, content_type)``: the text exposition format.
* ``gpu_memory()`` returns ``[(device, kind, bytes)]``; the default reads torch's CUDA
  allocator only when torch is already imported (an empty list on a CPU machine).
"""
from __future__ import annotations

import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from app.events import ErrorEvent, Latency, ReplyEnded, ReplyStarted, StepDecision, VideoChunk
from app.ops import queued as waiting
from app.recording.library import dir_size
from app.recording.regression import LATENCY_STAGES

# latency buckets in seconds: 10 ms .. 30 s
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
_SOURCE_RE = re.compile(r"[^a-z0-9_]")


def cuda_memory() -> list[tuple[str, str, int]]:
    torch = sys.modules.get("torch")   # never import torch just to say there is no GPU
    if torch is None or not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        out.append((f"cuda:{i}", "allocated", int(torch.cuda.memory_allocated(i))))
        out.append((f"cuda:{i}", "reserved", int(torch.cuda.memory_reserved(i))))
    return out


class Metrics:
    def __init__(self, gpu_memory: Callable[[], list[tuple[str, str, int]]] = cuda_memory) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self._sessions: Any = None
        self.registry = r = CollectorRegistry(auto_describe=True)
        live = Gauge("aura_sessions_live", "Sessions running now", registry=r)
        live.set_function(lambda: self._sessions.count if self._sessions is not None else 0)
        queued = Gauge("aura_sessions_queued", "Visitors waiting in line for a place", registry=r)
        queued.set_function(lambda: waiting(self._sessions))
        self.step = Histogram("aura_chunk_step_seconds", "Engine time of one chunk step (to its "
                              "silent/speak decision)", buckets=_LATENCY_BUCKETS, registry=r)
        self.question_ttft = Histogram("aura_question_first_token_seconds", "Engine time from the "
                                       "step that carries a question to the reply's first token",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.decode = Histogram("aura_decode_seconds_per_token", "Reply decode time per token after "
                                "the first", buckets=_TOKEN_BUCKETS, registry=r)
        self.turn = Histogram("aura_turn_stage_seconds", "Each part of an answered question's latency "
                              "(stream time): asr = speech end -> transcript, transcript_to_first_token, "
                              "first_token_to_first_audio, speech_end_to_first_audio (the whole turn)",
                              ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.chunks = Counter("aura_chunks_total", "Video chunks the model stepped", registry=r)
        self.skipped = Counter("aura_chunks_skipped_total", "Video chunks dropped because the model "
                               "was slower than real time", registry=r)
        self.errors = Counter("aura_errors_total", "Error events by source", ["source"], registry=r)
        self.replies = Counter("aura_replies_total", "Replies by kind", ["kind"], registry=r)
        self._lock = threading.Lock()
        self._recordings: dict[Path, int] = {}     # path -> last size seen
        self._recordings_gone = 0
        r.register(_Collected(self._recording_bytes, gpu_memory))

    def watch_sessions(self, sessions: Any) -> None:
        self._sessions = sessions

    # -- event taps ----------------------------------------------------------------------
    def tap(self, session_id: str) -> Callable[[object], None]:
        return _SessionTap(self).handle

    def count_error(self, event: ErrorEvent) -> None:
        self.errors.labels(_SOURCE_RE.sub("_", event.source.lower())[:32] or "unknown").inc()

    def watch_recording(self, path: Path) -> None:
        with self._lock:
            self._recordings.setdefault(Path(path), 0)

    def _recording_bytes(self) -> int:
        with self._lock:
            for path in list(self._recordings):
                if path.is_dir():
                    self._recordings[path] = max(self._recordings[path], dir_size(path))
                else:                    # removed by retention: its last size stays counted
                    self._recordings_gone += self._recordings.pop(path)
            return self._recordings_gone + sum(self._recordings.values())

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _SessionTap:
    """One session's listener: per-reply start times and the last chunk index."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._reply_start: dict[str, float] = {}
        self._last_chunk: int | None = None

    def handle(self, event: object) -> None:
        m = self._m
        if isinstance(event, VideoChunk):
            # published chunks are the ones stepped; a gap in the indices was skipped
            # (a context reset starts a new sampler at 0)
            m.chunks.inc()
            last = self._last_chunk
            if last is not None and event.index > last + 1:
                m.skipped.inc(event.index - last - 1)
            self._last_chunk = event.index
        elif isinstance(event, StepDecision):
            m.step.observe(event.step_ms / 1000)
        elif isinstance(event, ReplyStarted):
            self._reply_start[event.reply_id] = event.t_s
        elif isinstance(event, ReplyEnded):
            start = self._reply_start.pop(event.reply_id, None)
            m.replies.labels("proactive" if event.proactive else "answer").inc()
            if not event.proactive:
                m.question_ttft.observe(event.ttft_ms / 1000)
            if start is not None and event.n_tokens > 1 and not event.cancelled:
                m.decode.observe(max(0.0, event.t_s - start) / (event.n_tokens - 1))
        elif isinstance(event, Latency):
            for stage, (end, begin) in LATENCY_STAGES.items():
                t1, t0 = getattr(event, end), getattr(event, begin)
                if t1 is not None and t0 is not None:
                    m.turn.labels(stage).observe(max(0.0, t1 - t0))
        elif isinstance(event, ErrorEvent):
            m.count_error(event)


class _Collected:
    """Values read at scrape time: recording bytes, GPU memory."""

    def __init__(self, recording_bytes: Callable[[], int], gpu_memory: Callable[[], list]) -> None:
        self._bytes = recording_bytes
        self._gpu = gpu_memory

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        yield CounterMetricFamily("aura_recording_bytes_written", "Bytes written to this app's "
                                  "recordings (their folder sizes)", value=self._bytes())
        gpu = GaugeMetricFamily("aura_gpu_memory_bytes", "CUDA memory of this process per device",
                                labels=["device", "kind"])
        for device, kind, value in self._gpu():
            gpu.add_metric([device, kind], value)
        yield gpu
