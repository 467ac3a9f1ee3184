"""LiveSession's control thread with fakes around it: what a reset and a mode switch do.

The session (app/live.py) runs its real sampler, orchestrator and echo guard (real VAD
segmenter over a loudness "model"); the engine and ASR workers are fakes that record the
jobs they get (the engine finishes each step at once), and the clock is virtual. Camera
and mic run together: each mic block comes with a camera frame of the same time, so every
inbox item is followed by one device poll.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from app.clock import ManualClock
from app.config import SpeechConfig
from app.events import AudioBlock, ErrorEvent, VideoChunk, VideoFrame
from app.live import LiveSession
from app.orchestrator import Settings, StepFinished
from app.workers import AsrJob, CallJob, StepJob
from speech.audio import BLOCK_S, BLOCK_SAMPLES, SAMPLE_RATE


class LoudIsSpeech:
    """VAD model: a block is speech when it is loud."""
    def prob(self, pcm: np.ndarray) -> float:
        return 1.0 if float(np.abs(pcm).max()) > 0.05 else 0.0

    def reset(self) -> None:
        pass


class Engine:
    def __init__(self) -> None:
        self.steps: list[tuple[float, VideoChunk]] = []

    def submit(self, session_id: str, job) -> None:
        if isinstance(job, StepJob):
            self.steps.append((job.clock.now(), job.chunk))
            job.on_event(StepFinished(job.clock.now(), job.chunk.index))
        elif isinstance(job, CallJob):
            job.fn()

    def forget(self, session_id: str) -> None:
        pass


class Asr:
    def __init__(self) -> None:
        self.jobs: list[tuple[float, AsrJob]] = []

    def submit(self, job: AsrJob) -> None:
        self.jobs.append((job.clock.now(), job))


class Model:
    def new_session(self, session_id: str):
        return self

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class Voice:
    def feed(self, delta) -> None: ...
    def end(self, reply_id) -> None: ...
    def cancel(self, reply_id) -> None: ...
    def close(self) -> None: ...


class Runtime:
    def __init__(self) -> None:
        self.model, self.engine_worker, self.asr_worker = Model(), Engine(), Asr()

    def new_sampler(self):
        from app.sampler import FrameSampler
        return FrameSampler()

    def new_echo_guard(self, io):
        from speech.echo import EchoGuard
        from speech.vad import VadSegmenter
        cfg = SpeechConfig()
        return EchoGuard(cfg, vad=VadSegmenter(cfg, model=LoudIsSpeech()))

    def new_tts_stream(self, emit, clock, on_error):
        return Voice()


class Devices:
    """Camera + speaker of the session; counts the control thread's device polls and says
    when the current frame was served."""
    def __init__(self) -> None:
        self.frame: VideoFrame | None = None
        self.polls = 0
        self.served = threading.Event()
        self.lock = threading.Lock()

    def show(self, frame: VideoFrame) -> None:
        with self.lock:
            self.frame = frame
            self.served.clear()

    def latest_frame(self):
        with self.lock:
            self.polls += 1
            if self.frame is not None:
                self.served.set()
            return self.frame

    def play(self, audio) -> None: ...
    def flush(self, reply_id=None) -> None: ...
    def playing(self):
        return None


class Harness:
    def __init__(self, t0_s: float, settings: Settings = Settings(proactive=False)) -> None:
        self.clock = ManualClock(t0_s)
        self.rt, self.io = Runtime(), Devices()
        self.events: list = []
        self.heard = threading.Event()
        self._block = None
        self.session = LiveSession("s1", self.rt, self.io, self.clock, settings, [self._listen])

    def _listen(self, event) -> None:
        if isinstance(event, AudioBlock):
            if event is self._block:
                self.heard.set()
            return
        self.events.append(event)

    def _wait_polls(self, n: int) -> None:
        end = time.monotonic() + 10
        while self.io.polls < n and time.monotonic() < end:
            time.sleep(0.002)
        assert self.io.polls >= n, "the session stopped polling its devices"

    def run(self, seconds: float, loud: bool = False) -> None:
        """``seconds`` of mic blocks, with a camera frame at each block's time."""
        for _ in range(int(round(seconds / BLOCK_S))):
            t = self.clock.now()
            self.io.show(VideoFrame(t, np.full((8, 8, 3), 100, np.uint8)))
            self._block = AudioBlock(t, np.full(BLOCK_SAMPLES, 0.3 if loud else 0.0, np.float32),
                                     SAMPLE_RATE)
            self.heard.clear()
            self.session.post_audio(self._block)
            assert self.heard.wait(10) and self.io.served.wait(10), "the session stopped"
            self.clock.advance(BLOCK_S)
        self._wait_polls(self.io.polls + 2)        # the last frame's chunk is through

    def settle(self, action) -> None:
        before = self.io.polls
        action()
        self._wait_polls(before + 2)

    def close(self) -> None:
        self.session.close()


def _skip_warnings(events) -> list[str]:
    return [e.message for e in events if isinstance(e, ErrorEvent) and "slower than real time" in e.message]


def test_stream_starts_and_restarts_at_the_current_frame():
    """Guards issue 13 item 1: the sampler started at stream time 0, so a session whose
    first frame came at 30 s (and every "Reset context" later) got a backlog of empty
    seconds: a burst of steps, dropped chunks, a false "slower than real time" warning,
    and chunk indices that repeated those recorded before the reset."""
    h = Harness(t0_s=30.0)
    try:
        h.run(3.05)
        first = [c for _, c in h.rt.engine_worker.steps]
        assert [c.index for c in first] == [0, 1, 2]
        assert abs(first[0].start_s - 30.0) < 1e-6 and abs(first[-1].t_s - 33.0) < 1e-6
        h.clock.advance(60.0)                     # a minute without frames, then a reset
        reset_s = h.clock.now()
        h.settle(h.session.reset)
        n_before = len(h.rt.engine_worker.steps)
        h.run(2.05)
        after = [(t, c) for t, c in h.rt.engine_worker.steps[n_before:]]
        assert len(after) == 2, [(t, c.index, c.start_s) for t, c in after]
        assert abs(after[0][1].start_s - reset_s) < BLOCK_S + 1e-6
        assert after[1][0] - after[0][0] > 0.9, "steps ran in a burst after the reset"
        indices = [c.index for _, c in h.rt.engine_worker.steps]
        assert len(set(indices)) == len(indices) and indices == sorted(indices)
        assert not _skip_warnings(h.events)
    finally:
        h.close()


def test_switching_hands_free_off_ends_the_utterance_at_once():
    """Guards issue 13 item 3: an utterance whose speech had ended but whose closing
    silence was not yet heard when hands-free went off stayed open in the VAD and was
    delivered as a question after the next push-to-talk turn (28 s late). Switching off
    must finish it then and there; turning hands-free on again brings nothing stale."""
    h = Harness(t0_s=5.0, settings=Settings(proactive=False, hands_free=True))
    try:
        h.run(0.5)
        speech_from = h.clock.now()
        h.run(1.0, loud=True)
        speech_end = h.clock.now()
        h.run(0.2)                                  # shorter than the VAD's 0.5 s of silence
        assert not h.rt.asr_worker.jobs
        switched = h.clock.now()
        h.settle(lambda: h.session.set_option("hands_free", False))
        jobs = h.rt.asr_worker.jobs
        assert len(jobs) == 1, "the utterance in progress was not finished at the switch"
        at, job = jobs[0]
        assert at == switched
        assert abs(job.utterance.t_s - speech_end) <= BLOCK_S + 1e-6
        assert job.utterance.start_s <= speech_from
        assert h.session.snapshot().status != "listening"
        # a push-to-talk turn, then hands-free again: only the push-to-talk audio follows
        h.settle(lambda: h.session.push_to_talk(True))
        h.run(0.6, loud=True)
        h.settle(lambda: h.session.push_to_talk(False))
        h.settle(lambda: h.session.set_option("hands_free", True))
        h.run(1.5)
        assert len(h.rt.asr_worker.jobs) == 2, [j.utterance.t_s for _, j in h.rt.asr_worker.jobs]
    finally:
        h.close()


def test_push_to_talk_during_hands_free_speech_finishes_that_utterance_first():
    """Pressing Talk while hands-free hears speech: the VAD's utterance ends at the press
    (transcribed at once) and the push-to-talk audio is its own utterance."""
    h = Harness(t0_s=0.0, settings=Settings(proactive=False, hands_free=True))
    try:
        h.run(0.5)
        h.run(0.8, loud=True)
        h.settle(lambda: h.session.push_to_talk(True))
        assert len(h.rt.asr_worker.jobs) == 1
        h.run(0.6, loud=True)
        h.settle(lambda: h.session.push_to_talk(False))
        h.run(1.0)
        assert len(h.rt.asr_worker.jobs) == 2
    finally:
        h.close()
