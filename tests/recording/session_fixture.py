"""A synthetic session to record: counter-stamped frames, espeak-ng speech, a full event story.

``make_session(voices)`` returns ``[(emit_s, event), ...]`` sorted by emit time: what a real
session's bus would hand the recorder, including late stamps (VAD reports an utterance's end
after its silence timeout), a partial chunk closed by a question, a reply with audio, a
proactive reply cut by a barge-in. Frames carry their own stream time twice: as text (cv2)
and as 16 binary blocks that ``read_counter`` decodes, so tests can check media alignment.

``python -m tests.recording.session_fixture ROOT SECONDS`` records in real time with the
monotonic clock (used by the SIGKILL test); it prints ``recording PATH`` once started and
``tick T`` every second.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import events as ev

W, H = 176, 144
BITS = 16
BLOCK = 10
QUESTION = "What is on the table?"
ANSWER = "There is a red cup on the table."
PROACTIVE = "The cup moved to the left side of the table, just now, as you asked me to watch."


@dataclass(frozen=True)
class Voices:
    question: np.ndarray   # 16 kHz float32
    answer: np.ndarray     # 22050 Hz float32
    proactive: np.ndarray  # 22050 Hz float32


def espeak(text: str, rate: int) -> np.ndarray:
    """espeak-ng speech as float32 mono at ``rate`` (sox resamples)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out)],
                       check=True, capture_output=True)
        import soundfile as sf
        pcm, got = sf.read(str(out), dtype="float32")
    assert got == rate
    return pcm


def make_voices() -> Voices:
    return Voices(espeak(QUESTION, 16000), espeak(ANSWER, 22050), espeak(PROACTIVE, 22050))


def draw_frame(t_s: float) -> np.ndarray:
    """A frame showing ``t_s``: readable text plus binary blocks of round(t_s * 100)."""
    import cv2
    img = np.full((H, W, 3), 40, np.uint8)
    img[:, :, 2] = int(t_s * 37) % 200   # some colour change over time
    value = int(round(t_s * 100))
    for bit in range(BITS):
        on = (value >> bit) & 1
        x = bit * BLOCK
        img[0:BLOCK, x:x + BLOCK] = 255 if on else 0
    cv2.putText(img, f"t={t_s:6.2f}", (8, 80), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return img


def read_counter(img: np.ndarray) -> float:
    value = 0
    for bit in range(BITS):
        x = bit * BLOCK
        if img[2:BLOCK - 2, x + 2:x + BLOCK - 2].mean() > 127:
            value |= 1 << bit
    return value / 100


def make_session(voices: Voices, seconds: int = 9) -> list[tuple[float, object]]:
    out: list[tuple[float, object]] = []

    def at(emit: float, event: object) -> None:
        out.append((emit, event))

    # microphone: silence with the question spoken from 1.2 s, in 512-sample blocks
    q_start = 1.2
    mic = np.zeros(seconds * 16000, np.float32)
    i0 = int(q_start * 16000)
    mic[i0:i0 + len(voices.question)] = voices.question
    for k in range(len(mic) // 512):
        t = k * 512 / 16000
        at(t + 512 / 16000, ev.AudioBlock(t, mic[k * 512:(k + 1) * 512].copy(), 16000))
    q_end = q_start + len(voices.question) / 16000
    at(q_start + 0.25, ev.SpeechStarted(q_start))
    at(q_end + 0.5, ev.SpeechEnded(q_end, q_start, voices.question.copy()))
    asked = round(q_end + 0.8, 3)
    at(asked, ev.UserText(asked, QUESTION, "voice", speech_end_s=q_end, asr_ms=300.0))

    # video chunks: whole seconds, except one closed early by the question
    bounds, t = [], 0.0
    while t < seconds - 1:
        end = asked if t < asked < t + 1 else t + 1
        bounds.append((t, round(end, 3)))
        t = round(end, 3)
    for index, (start, end) in enumerate(bounds):
        n = 1 if end - start < 0.99 else 2
        times = [start + (i + 1) * (end - start) / n for i in range(n)]
        at(end, ev.VideoChunk(end, start, tuple(draw_frame(x) for x in times), index))
        answer = start < asked <= end
        proactive = index == len(bounds) - 3
        speak = answer or proactive
        step_t = end + 0.05
        at(step_t, ev.StepDecision(step_t, "speak" if speak else "silent",
                                   0.1 if speak else 0.9 + 0.001 * index, 400 + 100 * index, 50.0,
                                   index, QUESTION if answer else None))
        if speak:
            rid = f"r{index}"
            text = ANSWER if answer else PROACTIVE
            pcm = voices.answer if answer else voices.proactive
            at(step_t, ev.ReplyStarted(step_t, rid, proactive))
            at(step_t + 0.1, ev.ReplyDelta(step_t + 0.1, rid, text))
            at(step_t + 0.15, ev.SpeechAudio(step_t + 0.15, rid, pcm.copy(), 22050, 0, text, True))
            at(step_t + 0.2, ev.ReplyEnded(step_t + 0.2, rid, text, proactive, 60.0, 9))
            if answer:
                at(step_t + 0.2, ev.Latency(step_t + 0.2, rid, q_end, asked, step_t + 0.1, step_t + 0.15))
            else:
                barge = step_t + 1.0
                at(barge, ev.BargeIn(barge, rid))
    at(3.0, ev.StatusChanged(3.0, "thinking"))
    return sorted(out, key=lambda p: p[0])


def feed(recorder, clock, story: list[tuple[float, object]], step_s: float = 0.032) -> None:
    """Hand each event to the recorder at its emit time, advancing a ManualClock."""
    for emit, event in story:
        if emit > clock.now():
            clock.set(emit)
        recorder.handle(event)


def _main(root: str, seconds: str) -> None:
    import time

    from app.clock import MonotonicClock
    from app.recording.recorder import Recorder
    story = make_session(make_voices(), seconds=int(seconds))
    clock = MonotonicClock()
    rec = Recorder.open(Path(root), "killme", {"fixture": True}, clock,
                        lambda e: print("error", e.message, flush=True))
    print("recording", rec.path, flush=True)
    next_tick = 1.0
    for emit, event in story:
        while clock.now() < emit:
            time.sleep(min(0.01, emit - clock.now()))
        if clock.now() >= next_tick:
            print("tick", round(clock.now(), 2), flush=True)
            next_tick += 1.0
        rec.handle(event)
    rec.close()
    print("closed", flush=True)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
