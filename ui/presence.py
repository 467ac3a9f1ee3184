"""Which WebRTC connections still have a browser behind them.

Contract:
- ``is_gone(now_s, opened_s, heard_s)``: a connection whose microphone has been silent on
  the wire for more than ``TIMEOUT_S`` (``heard_s`` is when its last audio frame arrived),
  or that sent none within ``SETUP_S`` of its offer (``opened_s``), has no page behind it.
- ``Sweeper(connections, drop, clock, period_s)`` is a daemon thread that every
  ``period_s`` calls ``drop(conn_id)`` once for each gone connection of ``connections()``
  (a mapping of id -> object with ``opened_s`` and ``heard_s`` read on ``clock``). After a
  pass that came more than ``STALL_S`` late (this process was starved of CPU), it drops
  nothing for ``TIMEOUT_S``: the frames that arrived meanwhile are still being handled.
- Why: a closed tab sends nothing, and WebRTC notices only when its consent checks fail
  (~30 s), which kept a gone visitor's place. A browser sends its microphone's audio every
  20 ms as long as the page streams (also in a background tab, whose timers are throttled;
  a muted track still sends silence), so 2.5 s without a frame means the page is gone.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

TIMEOUT_S = 2.5
SETUP_S = 15.0           # offer -> first audio frame (ICE, DTLS, data channel); FastRTC allows 30
PERIOD_S = 0.25
STALL_S = 1.0            # a sweep this late means the process itself was stalled


def is_gone(now_s: float, opened_s: float, heard_s: float | None,
            timeout_s: float = TIMEOUT_S, setup_s: float = SETUP_S) -> bool:
    if heard_s is None:
        return now_s - opened_s > setup_s
    return now_s - heard_s > timeout_s


class Sweeper:
    def __init__(self, connections: Callable[[], Mapping[str, Any]], drop: Callable[[str], None],
                 clock: Callable[[], float], period_s: float = PERIOD_S) -> None:
        self._connections = connections
        self._drop = drop
        self._clock = clock
        self._period_s = period_s
        self._dropped: set[str] = set()
        self._last_pass: float | None = None
        self._hold_until = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sweeper", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> list[str]:
        """One pass: drop each newly gone connection (returns their ids)."""
        conns = dict(self._connections())
        self._dropped &= set(conns)
        now = self._clock()
        late = self._last_pass is not None and now - self._last_pass > STALL_S
        self._last_pass = now
        if late:
            # this process itself was stalled (an overloaded machine): frames that arrived
            # meanwhile may not be handled yet, so silence means nothing for a while
            self._hold_until = now + TIMEOUT_S
        if now < self._hold_until:
            return []
        gone = [c for c, h in conns.items() if c not in self._dropped
                and is_gone(now, getattr(h, "opened_s", now), getattr(h, "heard_s", None))]
        for conn_id in gone:
            self._dropped.add(conn_id)
            try:
                self._drop(conn_id)
            except Exception as e:  # one bad connection must not stop the sweeper
                print(f"warning: could not close connection {conn_id}: {e}", flush=True)
        return gone

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.sweep()
