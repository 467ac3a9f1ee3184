"""When a WebRTC connection counts as gone (ui/presence.py).

Guards issue 13 item 2: a closed tab kept its place until WebRTC's consent checks failed
(~27 s). A connection whose microphone frames stop for ``TIMEOUT_S`` is dropped, once; one
still setting up gets ``SETUP_S``; a live one is never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ui.presence import SETUP_S, TIMEOUT_S, Sweeper, is_gone


@dataclass
class Conn:
    opened_s: float
    heard_s: float | None = None


def test_silence_on_the_wire_means_the_page_is_gone():
    assert not is_gone(100.0, 0.0, 100.0 - TIMEOUT_S + 0.1)
    assert is_gone(100.0, 0.0, 100.0 - TIMEOUT_S - 0.1)


def test_a_connection_still_setting_up_gets_its_grace():
    assert not is_gone(10.0, 10.0 - SETUP_S + 1.0, None)
    assert is_gone(10.0 + SETUP_S + 0.1, 10.0, None)


def test_the_sweeper_drops_each_gone_connection_once():
    now = [50.0]
    conns = {"live": Conn(0.0, 49.9), "closed": Conn(0.0, 40.0), "new": Conn(49.0)}
    dropped: list[str] = []
    sweeper = Sweeper(lambda: conns, dropped.append, lambda: now[0])
    assert sweeper.sweep() == ["closed"]
    assert sweeper.sweep() == [], "a gone connection was dropped twice"
    del conns["closed"]
    conns["live"].heard_s = 51.0
    now[0] = 52.0
    assert sweeper.sweep() == [] and dropped == ["closed"]


def test_a_failing_drop_does_not_stop_the_sweep():
    def drop(conn_id):
        raise RuntimeError("boom")
    conns = {"a": Conn(0.0, 1.0), "b": Conn(0.0, 1.0)}
    assert Sweeper(lambda: conns, drop, lambda: 100.0).sweep() == ["a", "b"]


def test_a_stalled_process_drops_nobody_until_frames_catch_up():
    """An overloaded machine delays everything: after a late sweep, silence is not taken
    as a closed tab until TIMEOUT_S later (the queued frames get handled meanwhile)."""
    now = [10.0]
    conns = {"a": Conn(0.0, 9.9)}
    sweeper = Sweeper(lambda: conns, lambda c: None, lambda: now[0])
    assert sweeper.sweep() == []
    now[0] = 16.0                                     # the next pass comes 6 s late
    while now[0] < 16.0 + TIMEOUT_S:
        assert sweeper.sweep() == [], f"dropped {now[0] - 16.0:.2f} s after the stall"
        now[0] += 0.25
    assert sweeper.sweep() == ["a"], "still nothing heard after the hold: gone"
