"""Running for hours and behind a proxy: health, readiness, metrics routes and the drain.

Contract:
* ``Ops(sessions, metrics=None, auth="", metrics_public=False)``; ``sessions`` is the
  ``SessionManager`` (``count``, ``max_sessions``, ``stop_admitting()``, ``live()``, ``notify_all()``,
  ``close_all()``).
* ``readiness() -> (ok, reason)``: ready only when the models are loaded (``mark_loaded``),
  the app is not draining, and a session place is free (not promised to someone waiting
  in line). The reason is one short line.
* ``routes()``: Starlette routes ``GET /healthz``, ``GET /readyz`` (no login; counts only)
  and, when metrics are on, ``GET /metrics`` (HTTP Basic with the ``--auth`` login unless
  ``metrics_public``).
* ``drain(drain_s, notice, hurry, clock)``: stop admitting (readiness -> 503), tell every live
  session that the app is closing, wait until no session is answering (status thinking or
  speaking; at least ``NOTICE_S`` so pages show the notice) or ``drain_s`` passed or
  ``hurry`` is set, then close every session (and so its recording) through the manager.
  Returns the seconds it took.
* ``Signals``: the first SIGTERM/SIGINT sets ``stop``, the second sets ``hurry`` and arms a
  watchdog that exits the process after ``HURRY_EXIT_S`` if closing still hangs (recordings
  are flushed every quarter second, so a forced exit loses at most that much);
  ``closed()`` (all closed) then exits 0 at once without Python's slow teardown.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import signal
import sys
import threading
import time
from typing import Any, Callable

CLOSING_MESSAGE = ("AURA Live is shutting down for maintenance: the current reply finishes, then this "
                   "session ends and its recording is saved. Reload the page in a minute to start again.")
ANSWERING = ("thinking", "speaking")
HURRY_EXIT_S = 3.0
NOTICE_S = 0.5
POLL_S = 0.05


def queued(sessions: Any) -> int:
    """Visitors waiting in line (0 for a manager without a line; a property or a method)."""
    value = getattr(sessions, "queued", 0)
    return int(value() if callable(value) else value)


class Ops:
    def __init__(self, sessions: Any, metrics: Any = None, auth: str = "", metrics_public: bool = False) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._auth = auth
        self._metrics_public = metrics_public
        self._loaded = threading.Event()
        self._draining = threading.Event()

    def mark_loaded(self) -> None:
        self._loaded.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    # -- health ----------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if not self._loaded.is_set():
            return False, "models loading"
        if self._draining.is_set():
            return False, "draining: the app is shutting down"
        used, limit, waiting = self._sessions.count, self._sessions.max_sessions, queued(self._sessions)
        if used + waiting >= limit:     # the waiting line gets free places first
            return False, f"full: {used} of {limit} session places in use, {waiting} waiting"
        return True, f"ready: {used} of {limit} session places in use"

    def routes(self) -> list[Any]:
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        def healthz(request: Any) -> Any:
            return JSONResponse({"status": "alive"})

        def readyz(request: Any) -> Any:
            ok, reason = self.readiness()
            body = {"ready": ok, "reason": reason, "sessions": self._sessions.count,
                    "max_sessions": self._sessions.max_sessions,
                    "queued": queued(self._sessions)}
            return Response(json.dumps(body) + "\n", status_code=200 if ok else 503,
                            media_type="application/json", headers={"Cache-Control": "no-store"})

        def metrics(request: Any) -> Any:
            if not self._metrics_allowed(request.headers.get("authorization", "")):
                return Response("login required\n", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="AURA Live metrics"'})
            body, content_type = self._metrics.render()
            return Response(body, media_type=content_type)

        out = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
        if self._metrics is not None:
            out.append(Route("/metrics", metrics, methods=["GET"]))
        return out

    def _metrics_allowed(self, header: str) -> bool:
        if not self._auth or self._metrics_public:
            return True
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(given.encode(), self._auth.encode())

    # -- drain -----------------------------------------------------------------------------
    def drain(self, drain_s: float, hurry: threading.Event, now: Callable[[], float] = time.monotonic,
              progress: Callable[[str], None] = lambda _m: None) -> float:
        start = now()
        self._draining.set()
        self._sessions.stop_admitting()
        live = self._sessions.live()
        progress(f"draining: {len(live)} session(s); replies may finish for up to {drain_s:g} s")
        self._sessions.notify_all("server", CLOSING_MESSAGE)
        # at least NOTICE_S so open pages can show the notice (they refresh every 0.25 s)
        while live and now() - start < drain_s and not hurry.is_set():
            if now() - start >= NOTICE_S and not any(s.snapshot().status in ANSWERING for s in live):
                break
            hurry.wait(POLL_S)
        self._sessions.close_all()
        took = now() - start
        progress(f"drained in {took:.2f} s; every recording is closed")
        return took


class Signals:
    """First SIGTERM/SIGINT: ``stop``; second: ``hurry`` plus a watchdog exit."""

    def __init__(self, exit_after_s: float = HURRY_EXIT_S) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self._exit_after_s = exit_after_s
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stop.is_set():
            self.stop.set()
            return
        if not self.hurry.is_set():
            self.hurry.set()
            self._timer = threading.Timer(self._exit_after_s, os._exit, args=(128 + signum,))
            self._timer.daemon = True
            self._timer.start()

    def closed(self) -> None:
        """Every session and recording is closed. After a second signal, leave now (Python's
        own teardown of threads and libraries takes seconds); otherwise return normally."""
        if self._timer is not None:
            self._timer.cancel()
        if self.hurry.is_set():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
