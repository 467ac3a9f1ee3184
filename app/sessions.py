"""The session manager: admits up to ``max_sessions`` live sessions, keeps them apart, and
lines up the visitors who find every place taken.

Contract: ``SessionManager(runtime, config, clock_factory, recorder_factory=None)``.
- ``open(io, ticket=None)`` starts a new ``LiveSession`` on transport ``io`` with a fresh
  random id, the transport's clock (``io.clock``; else one from ``clock_factory``), its own
  view model and (unless recording is off) recorder, or returns ``None`` when no place is
  free for it. Nobody can join or take over another person's session; ids are never reused.
- With a ``ticket`` (any hashable, one per visitor) a refused visitor joins the waiting
  line; calling ``open`` again with the same ticket admits it once a place is free for it,
  in arrival order. ``position(ticket)`` is its place in line (1 = next; None when not
  waiting), ``leave(ticket)`` drops it (a page that went away), ``queued()`` is the line's
  length and ``count`` the live sessions (both public, for metrics). Without a ticket a
  caller never jumps the line.
- ``get(id)`` returns ``(session, view)``, ``close(id)`` ends one (idempotent) and frees its
  place at once, ``close_all()`` ends every session at shutdown.
- ``stop_admitting()`` makes ``open`` refuse everyone from now on (drain), ``live()`` lists
  the running sessions, ``notify_all(source, message)`` shows each an ``ErrorEvent``;
  ``taps`` holds per-session listener factories (``tap(session_id) -> listener``, metrics).
"""
from __future__ import annotations

import secrets
import threading
from typing import Any, Callable, Hashable

from app.config import Config
from app.events import ErrorEvent
from app.live import LiveSession
from app.orchestrator import Settings
from ui.view import SessionView


class Line:
    """Places and the waiting line, bookkeeping only (the caller holds the lock).

    - ``take(ticket)``: True when the ticket gets a place now; else it waits in the line
      (joining at the end on first call). ``ticket=None`` never waits and never jumps it.
    - A waiting ticket at index i gets a place once more than i places are free, so the
      line moves in arrival order and one stale ticket ahead cannot hold up the others.
    """

    def __init__(self, places: int) -> None:
        self.places = places
        self.taken = 0
        self._waiting: list[Hashable] = []

    def take(self, ticket: Hashable | None) -> bool:
        free = self.places - self.taken
        if ticket is None:
            ok = free > len(self._waiting)
        else:
            if ticket not in self._waiting:
                self._waiting.append(ticket)
            ok = self._waiting.index(ticket) < free
            if ok:
                self._waiting.remove(ticket)
        if ok:
            self.taken += 1
        return ok

    def give_back(self) -> None:
        self.taken = max(0, self.taken - 1)

    def leave(self, ticket: Hashable) -> None:
        if ticket in self._waiting:
            self._waiting.remove(ticket)

    def position(self, ticket: Hashable) -> int | None:
        return self._waiting.index(ticket) + 1 if ticket in self._waiting else None

    def __len__(self) -> int:
        return len(self._waiting)


class SessionManager:
    def __init__(self, runtime: Any, config: Config, clock_factory: Callable[[], Any],
                 recorder_factory: Callable[[str, Any, Callable], Any] | None = None) -> None:
        self._rt = runtime
        self._cfg = config
        self._clock_factory = clock_factory
        self._recorder_factory = recorder_factory
        self._lock = threading.Lock()
        self._line = Line(config.app.max_sessions)
        self._sessions: dict[str, tuple[LiveSession, SessionView, Any]] = {}
        self._clocks: dict[str, Any] = {}
        self._admitting = True
        self.taps: list[Callable[[str], Callable]] = []   # per-session listener factories (metrics)

    @property
    def max_sessions(self) -> int:
        return self._cfg.app.max_sessions

    @property
    def count(self) -> int:
        """Live sessions (places taken)."""
        with self._lock:
            return self._line.taken

    def queued(self) -> int:
        """Visitors waiting for a place."""
        with self._lock:
            return len(self._line)

    def position(self, ticket: Hashable) -> int | None:
        with self._lock:
            return self._line.position(ticket)

    def leave(self, ticket: Hashable) -> None:
        with self._lock:
            self._line.leave(ticket)

    def open(self, io: Any, ticket: Hashable | None = None) -> LiveSession | None:
        with self._lock:
            if not self._admitting or not self._line.take(ticket):
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
                self._line.give_back()
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
            if entry is not None:
                # the place is free as soon as the session is out of the table; the
                # session's own shutdown (threads, recorder) follows outside the lock
                self._line.give_back()
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
        """Show every live session one line (an ``ErrorEvent``, not fatal), e.g. "closing".
        Handed straight to its view and recorder (both take events from any thread), so it
        is shown and recorded even when the session is closed right after."""
        with self._lock:
            targets = [(v, self._clocks[k]) for k, v in self._sessions.items() if v is not None]
        for (_session, view, recorder), clock in targets:
            event = ErrorEvent(clock.now(), source, message)
            view(event)
            if recorder is not None:
                recorder.handle(event)

    def close_all(self) -> None:
        with self._lock:
            ids = [k for k, v in self._sessions.items() if v is not None]
        for session_id in ids:
            self.close(session_id)
