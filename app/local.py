"""Local-devices mode: this machine's camera, microphone and speaker; captions in the terminal.

Contract: ``LocalIO(camera, speaker)`` is a session's ``SessionIO`` over device adapters
(app/devices). ``TerminalCaptions(stream)`` is a session listener that prints what the
user said, the assistant's replies (proactive ones marked), barge-ins and errors, one line
each. ``run_local(manager, camera, mic, speaker, clock, stop)`` runs one session until ``stop``
is set (Ctrl-C in the launcher), then closes everything in order. Device failures reach the
session as ErrorEvents (printed): the microphone's through ``mic.start``, the camera's by
pointing its ``on_error`` (OpenCVCamera) at the session once it is open.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from app.events import (BargeIn, ErrorEvent, Latency, ReplyEnded, ReplyStarted, SpeechAudio,
                        UserText, VideoFrame)


class LocalIO:
    def __init__(self, camera: Any, speaker: Any, clock: Any) -> None:
        self._camera = camera
        self._speaker = speaker
        self.clock = clock
        # what the speaker played, for echo suppression (None if it cannot tell)
        self.reference = getattr(speaker, "played_audio", None)

    def latest_frame(self) -> VideoFrame | None:
        return self._camera.latest()

    def play(self, audio: SpeechAudio) -> None:
        self._speaker.play(audio)

    def flush(self, reply_id: str | None = None) -> None:
        self._speaker.flush(reply_id)

    def playing(self) -> str | None:
        return self._speaker.playing()


class TerminalCaptions:
    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self._out = stream
        self._proactive: dict[str, bool] = {}

    def __call__(self, ev: object) -> None:
        line = None
        if isinstance(ev, UserText):
            line = f"[{ev.t_s:7.1f}s] you{' (typed)' if ev.source == 'typed' else ''}: {ev.text}"
        elif isinstance(ev, ReplyStarted):
            self._proactive[ev.reply_id] = ev.proactive
        elif isinstance(ev, ReplyEnded):
            mark = " (noticed)" if self._proactive.pop(ev.reply_id, ev.proactive) else ""
            cut = " [interrupted]" if ev.cancelled else ""
            line = f"[{ev.t_s:7.1f}s] AURA{mark}: {ev.text}{cut}"
        elif isinstance(ev, BargeIn):
            line = f"[{ev.t_s:7.1f}s] (you interrupted)"
        elif isinstance(ev, Latency) and ev.speech_end_s is not None and ev.first_audio_s is not None:
            line = f"[{ev.t_s:7.1f}s] latency: speech end -> first audio {1000 * (ev.first_audio_s - ev.speech_end_s):.0f} ms"
        elif isinstance(ev, ErrorEvent):
            line = f"[{ev.t_s:7.1f}s] error ({ev.source}): {ev.message}"
        if line is not None:
            print(line, file=self._out, flush=True)


def run_local(manager: Any, camera: Any, mic: Any, speaker: Any, clock: Any, stop: threading.Event,
              out: TextIO = sys.stdout) -> None:
    camera.start()
    session = None
    try:
        session = manager.open(LocalIO(camera, speaker, clock))
        if session is None:
            raise RuntimeError("no session could be opened")
        session.add_listener(TerminalCaptions(out))
        if hasattr(camera, "on_error"):
            camera.on_error = session.post
        mic.start(session.post_audio, session.post)
        print("AURA Live is watching and listening. Ask a question out loud; Ctrl-C stops.",
              file=out, flush=True)
        stop.wait()
    finally:
        mic.stop()
        if session is not None:
            manager.close(session.session_id)
        speaker.stop()
        camera.stop()
