"""File-backed twins of the microphone and speaker: same data, same timing, no hardware.

Contract:
* ``WavMicrophone(path, clock, loop=False, mix=None)`` is a ``Microphone``: the file (any
  format soundfile reads, any rate, any channels) is resampled to 16 kHz mono once and
  delivered as 512-sample float32 ``AudioBlock``s; block ``i`` carries
  ``t_s = t0 + i * 0.032`` (``t0`` = clock time at ``start``) and is delivered when the
  clock reaches its end, exactly as a real microphone delivers a block once captured.
  ``start`` runs a pacing thread on ``clock`` (a ``ManualClock`` makes it as fast as
  possible); ``blocks(t0)`` yields the same blocks without pacing or threads, for tests
  that step time themselves. ``mix(t_s, n) -> np.ndarray`` (optional) is added to each
  block: the room's echo of a speaker, another talker. A missing or unreadable file is an
  ``ErrorEvent`` through ``on_error``, and so is sustained clipping (like the real one). ``finished`` is set when the file is exhausted.
* ``WavSpeaker(clock)`` is a ``Speaker`` and ``PlaybackReference`` that plays nothing and
  remembers everything: each ``play`` is scheduled right after what is queued (or now),
  ``flush`` cuts the reply's audio at the current clock time and moves later audio up,
  exactly like a real output queue. ``segments(reply_id=None)`` lists what was (or will
  be) played with start times; ``played_audio(t_s, n)`` renders the 16 kHz output signal;
  ``write_wav(path)`` saves it. Audio played after ``stop`` is dropped.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from app.clock import Clock
from app.devices.base import OnBlock, OnError
from app.events import AudioBlock, ErrorEvent, SpeechAudio
from speech.audio import (BLOCK_S, BLOCK_SAMPLES, SAMPLE_RATE, AudioInputError, ClipMonitor, read_audio, resample,
                          write_wav)

Mix = Callable[[float, int], np.ndarray]


class WavMicrophone:
    """A sound file played into the pipeline as if a microphone captured it live."""

    def __init__(self, path: str | Path, clock: Clock, loop: bool = False, mix: Mix | None = None) -> None:
        self.path, self.clock, self.loop, self.mix = Path(path), clock, loop, mix
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pcm: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._pcm is None:
            pcm, rate = read_audio(self.path)
            self._pcm = resample(pcm, rate, SAMPLE_RATE)
        return self._pcm

    def blocks(self, t0: float = 0.0) -> Iterator[AudioBlock]:
        """The file's blocks with their stream times, unpaced (raises AudioInputError)."""
        pcm = self._load()
        n_blocks = -(-len(pcm) // BLOCK_SAMPLES)
        padded = np.zeros(n_blocks * BLOCK_SAMPLES, np.float32)
        padded[:len(pcm)] = pcm
        i = 0
        while True:
            k = i % n_blocks
            if i >= n_blocks and not self.loop:
                return
            t_s = t0 + i * BLOCK_S
            block = padded[k * BLOCK_SAMPLES:(k + 1) * BLOCK_SAMPLES].copy()
            if self.mix is not None:
                block = np.clip(block + np.asarray(self.mix(t_s, BLOCK_SAMPLES), np.float32), -1.0, 1.0)
            yield AudioBlock(t_s=t_s, pcm=block.astype(np.float32, copy=False), sample_rate=SAMPLE_RATE)
            i += 1

    def start(self, on_block: OnBlock, on_error: OnError) -> None:
        t0 = self.clock.now()
        try:
            blocks = self.blocks(t0)
            self._load()
        except AudioInputError as e:
            on_error(ErrorEvent(t_s=t0, source="mic", message=f"microphone file: {e}"))
            self.finished.set()
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(blocks, on_block, on_error), name="wav-mic",
                                        daemon=True)
        self._thread.start()

    def _run(self, blocks: Iterator[AudioBlock], on_block: OnBlock, on_error: OnError) -> None:
        clip = ClipMonitor()
        try:
            for block in blocks:
                self.clock.sleep(block.t_s + BLOCK_S - self.clock.now())
                if self._stop.is_set():
                    return
                warning = clip.check(block.pcm, block.t_s)
                if warning:
                    on_error(ErrorEvent(t_s=block.t_s, source="mic", message=warning))
                on_block(block)
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


@dataclass
class PlayedSegment:
    """One sentence as the speaker played it (``pcm16k`` cut where it was flushed)."""
    reply_id: str
    sentence_index: int
    text: str
    start_s: float
    pcm16k: np.ndarray
    last: bool

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.pcm16k) / SAMPLE_RATE


class WavSpeaker:
    """A speaker that records what it would have played, with play times, per reply."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._segments: list[PlayedSegment] = []
        self._stopped = False

    def play(self, audio: SpeechAudio) -> None:
        pcm = resample(np.asarray(audio.pcm, np.float32), audio.sample_rate, SAMPLE_RATE)
        with self._lock:
            if self._stopped:
                return
            now = self.clock.now()
            start = max([now] + [s.end_s for s in self._segments])
            self._segments.append(PlayedSegment(audio.reply_id, audio.sentence_index, audio.text, start, pcm,
                                                audio.last))

    def flush(self, reply_id: str | None = None) -> None:
        with self._lock:
            now = self.clock.now()
            kept: list[PlayedSegment] = []
            for s in self._segments:
                if reply_id is not None and s.reply_id != reply_id:
                    kept.append(s)
                elif s.start_s < now:
                    cut = int(round((now - s.start_s) * SAMPLE_RATE))
                    s.pcm16k = s.pcm16k[:cut]
                    kept.append(s)
            # what had not started yet moves up behind what is still playing
            t = max([now] + [s.end_s for s in kept if s.start_s < now])
            for s in kept:
                if s.start_s >= now:
                    s.start_s = t
                    t = s.end_s
            self._segments = kept

    def playing(self) -> str | None:
        with self._lock:
            now = self.clock.now()
            for s in self._segments:
                if s.start_s <= now < s.end_s:
                    return s.reply_id
        return None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def segments(self, reply_id: str | None = None) -> list[PlayedSegment]:
        with self._lock:
            return [s for s in self._segments if reply_id is None or s.reply_id == reply_id]

    def played_audio(self, t_s: float, n: int) -> np.ndarray:
        out = np.zeros(int(n), np.float32)
        a = int(round(t_s * SAMPLE_RATE))
        for s in self.segments():
            b = int(round(s.start_s * SAMPLE_RATE))
            lo, hi = max(a, b), min(a + len(out), b + len(s.pcm16k))
            if lo < hi:
                out[lo - a:hi - a] += s.pcm16k[lo - b:hi - b]
        return out

    def write_wav(self, path: str | Path, until_s: float | None = None) -> None:
        """The whole output from time 0 to ``until_s`` (default: the end of the last sentence)."""
        segs = self.segments()
        end = until_s if until_s is not None else max([0.0] + [s.end_s for s in segs])
        write_wav(path, self.played_audio(0.0, int(round(end * SAMPLE_RATE))), SAMPLE_RATE)
