"""Text to speech, streamed by sentence while the reply is still being generated.

Contract:
* ``load_voice(cfg, progress=None) -> Voice`` (see ``speech.voices``).
* ``TTSStream(voice, emit, clock, on_error=None)`` owns one worker thread (the only
  thread that calls ``voice.synthesize``):
  - ``feed(delta: ReplyDelta)`` appends reply text; each sentence completed by it
    (``SentenceSplitter``) is queued at once, so the first sentence is spoken while the
    model is still writing the rest.
  - ``end(reply_id)`` queues the remainder; the final ``SpeechAudio`` of a reply has
    ``last=True`` (when everything was already spoken, a zero-length ``last`` marker is
    emitted so listeners always learn that the reply's audio is complete).
  - ``cancel(reply_id)`` drops the reply's queued sentences and any sentence being
    synthesised: once ``cancel`` returns, ``emit`` is never called again for that id (it
    returns without waiting for the synthesis in flight). Later deltas for a cancelled or
    finished id are ignored.
  - ``close()`` stops the worker (queued audio is dropped).
  Each ``SpeechAudio`` carries ``reply_id``, ``sentence_index`` (0, 1, ... in order),
  the spoken ``text`` (markup and emoji stripped by ``clean_for_speech``; sentences with
  nothing speakable are skipped), ``sample_rate`` of the voice, and ``t_s`` = clock time
  when it was ready. Synthesis failures go to ``on_error`` as a non-fatal ``ErrorEvent``
  (the reply goes on with its next sentence).
* ``python -m speech.tts "TEXT" --out F.wav [--tts coqui|espeak] [--model M] [--voice V]``
  writes the speech of TEXT (sentence by sentence) to F.wav; errors are one line on
  stderr and exit code 2.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app.clock import Clock
from app.config import SpeechConfig
from app.events import ErrorEvent, ReplyDelta, SpeechAudio
from speech.text import SentenceSplitter, clean_for_speech
from speech.voices import TtsError, TtsLoadError, Voice, load_voice

__all__ = ["TTSStream", "load_voice", "Voice", "TtsError", "TtsLoadError", "synthesize_text"]

_FORGET_AFTER = 256     # finished/cancelled reply ids remembered (to ignore late deltas)


@dataclass
class _Job:
    reply_id: str
    text: str
    last: bool = False


@dataclass
class _Reply:
    splitter: SentenceSplitter = field(default_factory=SentenceSplitter)
    emitted: int = 0
    ended: bool = False


class TTSStream:
    """Reply deltas in, ``SpeechAudio`` per sentence out, on one worker thread."""

    def __init__(self, voice: Voice, emit: Callable[[SpeechAudio], None], clock: Clock,
                 on_error: Callable[[ErrorEvent], None] | None = None) -> None:
        self.voice, self._emit, self._clock, self._on_error = voice, emit, clock, on_error
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: deque[_Job] = deque()
        self._replies: dict[str, _Reply] = {}
        self._done: OrderedDict[str, bool] = OrderedDict()   # finished or cancelled ids
        self._in_flight: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tts", daemon=True)
        self._thread.start()

    # --- producer side (any thread) ---------------------------------------------------
    def feed(self, delta: ReplyDelta) -> None:
        with self._lock:
            reply = self._reply(delta.reply_id)
            if reply is None or reply.ended:
                return
            for sentence in reply.splitter.push(delta.text):
                self._jobs.append(_Job(delta.reply_id, sentence))
            self._wake.notify()

    def end(self, reply_id: str) -> None:
        with self._lock:
            reply = self._reply(reply_id)
            if reply is None or reply.ended:
                return
            reply.ended = True
            rest = reply.splitter.flush()
            for sentence in rest:
                self._jobs.append(_Job(reply_id, sentence))
            pending = [j for j in self._jobs if j.reply_id == reply_id]
            if self._in_flight is not None and self._in_flight.reply_id == reply_id:
                pending.insert(0, self._in_flight)
            if pending:
                pending[-1].last = True
            else:
                self._jobs.append(_Job(reply_id, "", last=True))
            self._wake.notify()

    def cancel(self, reply_id: str) -> None:
        with self._lock:
            self._forget(reply_id)
            self._jobs = deque(j for j in self._jobs if j.reply_id != reply_id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._jobs.clear()
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def busy(self) -> bool:
        """True while any sentence is queued or being synthesised."""
        with self._lock:
            return bool(self._jobs) or self._in_flight is not None

    # --- internals -----------------------------------------------------------------------
    def _reply(self, reply_id: str) -> _Reply | None:
        if reply_id in self._done:
            return None
        return self._replies.setdefault(reply_id, _Reply())

    def _forget(self, reply_id: str) -> None:
        self._replies.pop(reply_id, None)
        self._done[reply_id] = True
        while len(self._done) > _FORGET_AFTER:
            self._done.popitem(last=False)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._in_flight = self._jobs.popleft()
            text = clean_for_speech(job.text)
            pcm, error = np.zeros(0, np.float32), None
            if text:
                try:
                    pcm = np.asarray(self.voice.synthesize(text), np.float32)
                except TtsError as e:
                    error = str(e)
                except Exception as e:  # noqa: BLE001 - the worker outlives any voice bug; reported below
                    error = f"TTS failed ({type(e).__name__}: {e})"
            with self._lock:
                self._in_flight = None
                reply = self._replies.get(job.reply_id)
                if reply is None or self._closed:
                    continue                       # cancelled while synthesising
                if error and self._on_error is not None:
                    self._on_error(ErrorEvent(t_s=self._clock.now(), source="tts", message=error))
                if (len(pcm) or job.last) and (text or job.last):
                    self._emit(SpeechAudio(t_s=self._clock.now(), reply_id=job.reply_id, pcm=pcm,
                                           sample_rate=self.voice.sample_rate, sentence_index=reply.emitted,
                                           text=text if len(pcm) else "", last=job.last))
                    reply.emitted += 1
                if job.last:
                    self._forget(job.reply_id)


def synthesize_text(voice: Voice, text: str, pause_s: float = 0.15) -> np.ndarray:
    """All of ``text``, sentence by sentence, joined with short pauses (for the CLI)."""
    splitter = SentenceSplitter()
    sentences = splitter.push(text) + splitter.flush()
    gap = np.zeros(int(pause_s * voice.sample_rate), np.float32)
    parts: list[np.ndarray] = []
    for sentence in sentences:
        spoken = clean_for_speech(sentence)
        if spoken:
            parts += [voice.synthesize(spoken), gap]
    return np.concatenate(parts[:-1]) if parts else np.zeros(0, np.float32)


def main(argv: list[str]) -> int:
    import argparse
    import logging
    from speech.audio import write_wav
    logging.getLogger("TTS").setLevel(logging.CRITICAL)   # the CLI reports failures in one line
    parser = argparse.ArgumentParser(prog="python -m speech.tts", description="Speak TEXT into a WAV file.")
    parser.add_argument("text")
    parser.add_argument("--out", required=True, help="output .wav path")
    parser.add_argument("--tts", choices=["coqui", "espeak"], default="coqui")
    parser.add_argument("--model", default="auto", help="Coqui model name or local model directory")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if out.suffix.lower() != ".wav":
            raise ValueError(f"--out must name a .wav file, got {out}")
        if not out.parent.is_dir():
            raise ValueError(f"--out: folder {out.parent} does not exist")
        if not clean_for_speech(args.text):
            raise ValueError("nothing to say: the text is empty once markup and emoji are removed")
        cfg = SpeechConfig(tts=args.tts, tts_model=args.model, espeak_voice=args.voice, tts_device=args.device)
        voice = load_voice(cfg, progress=lambda m: print(m, file=sys.stderr))
        pcm = synthesize_text(voice, args.text)
        write_wav(out, pcm, voice.sample_rate)
    except (TtsLoadError, TtsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {len(pcm) / voice.sample_rate:.2f} s at {voice.sample_rate} Hz ({voice.description})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
