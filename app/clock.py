"""Clocks: the one source of "now" for every stage.

Contract: ``now()`` returns seconds as a float that never decreases; ``sleep(dt)`` waits
``dt`` seconds of that clock. ``MonotonicClock`` is wall time counted from its creation
(stream seconds). ``ManualClock`` is virtual time for tests and as-fast-as-possible
replay: ``sleep`` advances it instantly, ``advance``/``set`` move it explicitly. Decision
code takes a clock (or a time) as an argument and never calls ``time`` itself.
"""
from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, dt_s: float) -> None: ...


class MonotonicClock:
    """Real time in seconds since this clock was created."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            time.sleep(dt_s)


class ManualClock:
    """Virtual time: only moves when told to (thread-safe)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._t = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            self.advance(dt_s)

    def advance(self, dt_s: float) -> float:
        if dt_s < 0:
            raise ValueError("ManualClock.advance: dt_s must be >= 0")
        with self._lock:
            self._t += dt_s
            return self._t

    def set(self, t_s: float) -> None:
        with self._lock:
            if t_s < self._t:
                raise ValueError(f"ManualClock.set: time may not go back ({t_s} < {self._t})")
            self._t = float(t_s)
