"""The session manager: admits up to ``max_sessions`` live sessions and keeps them apart.

Contract: ``SessionManager(runtime, config, clock_factory, recorder_factory=None)``.
``open(io)`` starts a new ``LiveSession`` on transport ``io`` with a fresh random id, the
transport's clock (``io.clock``, so device timestamps and stream time agree; else a new
one from ``clock_factory``), its own view model and (unless recording is off) recorder, or returns ``None`` when all
``config.app.max_sessions`` places are taken — nobody can join or take over another
person's session, the id is never reused. ``get(id)`` returns ``(session, view)``,
``close(id)`` ends one (idempotent), ``close_all()`` ends every session at shutdown.
``stop_admitting()`` makes ``open`` refuse (drain), ``live()`` lists the running sessions,
``notify_all(source, message)`` shows each an ``ErrorEvent``; ``taps`` holds per-session
listener factories (``tap(session_id) -> listener``, e.g. metrics).
"""
from __future__ import annotations

import secrets
import threading
from typing import Any, Callable

from app.config import Config
from app.events import ErrorEvent
from app.live import LiveSession
from app.orchestrator import Settings
from ui.view import SessionView


class SessionManager:
    def __init__(self, runtime: Any, config: Config, clock_factory: Callable[[], Any],
                 recorder_factory: Callable[[str, Any, Callable], Any] | None = None) -> None:
        self._rt = runtime
        self._cfg = config
        self._clock_factory = clock_factory
        self._recorder_factory = recorder_factory
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[LiveSession, SessionView, Any]] = {}
        self._clocks: dict[str, Any] = {}
        self._admitting = True
        self.taps: list[Callable[[str], Callable]] = []   # per-session listener factories (metrics)

    @property
    def max_sessions(self) -> int:
        return self._cfg.app.max_sessions

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, io: Any) -> LiveSession | None:
        with self._lock:
            if not self._admitting or len(self._sessions) >= self._cfg.app.max_sessions:
                return None
            session_id = secrets.token_hex(4)
            while session_id in self._sessions:
                session_id = secrets.token_hex(4)
            self._sessions[session_id] = None  # type: ignore[assignment]  (reserved)
        try:
            clock = getattr(io, "clock", None) or self._clock_factory()
            view = SessionView()
            listeners: list = [view, *(tap(session_id) for tap in self.taps)]
            recorder = None
            if self._recorder_factory is not None:
                recorder = self._recorder_factory(session_id, clock, view)
                listeners.append(recorder.handle)
            app = self._cfg.app
            settings = Settings(hands_free=app.hands_free, proactive=app.proactive, voice=app.voice)
            session = LiveSession(session_id, self._rt, io, clock, settings, listeners)
        except BaseException:
            with self._lock:
                self._sessions.pop(session_id, None)
            raise
        with self._lock:
            self._sessions[session_id] = (session, view, recorder)
            self._clocks[session_id] = clock
        return session

    def get(self, session_id: str | None) -> tuple[LiveSession, SessionView] | None:
        with self._lock:
            entry = self._sessions.get(session_id or "")
        return None if entry is None else (entry[0], entry[1])

    def close(self, session_id: str) -> None:
        with self._lock:
            entry = self._sessions.pop(session_id, None)
            self._clocks.pop(session_id, None)
        if entry is None:
            return
        session, _view, recorder = entry
        session.close()
        if recorder is not None:
            recorder.close()

    def stop_admitting(self) -> None:
        """Shutting down: ``open`` refuses from now on."""
        with self._lock:
            self._admitting = False

    def live(self) -> list[LiveSession]:
        with self._lock:
            return [v[0] for v in self._sessions.values() if v is not None]

    def notify_all(self, source: str, message: str) -> None:
        """Show every live session one line (an ``ErrorEvent``, not fatal), e.g. "closing"."""
        with self._lock:
            targets = [(v[0], self._clocks[k]) for k, v in self._sessions.items() if v is not None]
        for session, clock in targets:
            session.post(ErrorEvent(clock.now(), source, message))

    def close_all(self) -> None:
        with self._lock:
            ids = [k for k, v in self._sessions.items() if v is not None]
        for session_id in ids:
            self.close(session_id)
