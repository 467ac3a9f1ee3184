"""The places and the waiting line behind ``SessionManager`` (app/sessions.py ``Line``).

Guards issue 13 item 2: a visitor who found every place taken was refused for good (and
FastRTC's own limit kept refusing); now visitors wait in arrival order and get the first
place that frees. The browser side is tests/ui/test_browser_queue.py.
"""
from __future__ import annotations

from app.sessions import Line


def test_visitors_wait_in_arrival_order_and_join_when_a_place_frees():
    """Two places, four visitors: the third and fourth wait (3rd first); a freed place goes
    to the third even when the fourth asks first; then the fourth moves up."""
    line = Line(2)
    assert line.take("a") and line.take("b")
    assert not line.take("c") and not line.take("d")
    assert (line.position("c"), line.position("d"), len(line)) == (1, 2, 2)
    line.give_back()                                  # a's session ended
    assert not line.take("d"), "the fourth visitor jumped the line"
    assert line.take("c")
    assert line.position("c") is None and line.position("d") == 1 and len(line) == 1
    assert not line.take("d")
    line.give_back()
    assert line.take("d") and len(line) == 0 and line.taken == 2


def test_a_visitor_who_leaves_the_line_holds_nobody_up():
    """A waiting page that closes leaves the line; with two places free, a stale ticket at
    the head cannot block the one behind it either."""
    line = Line(1)
    assert line.take("a")
    assert not line.take("b") and not line.take("c")
    line.leave("b")
    assert line.position("c") == 1
    line = Line(2)
    assert line.take("a") and line.take("b")
    assert not line.take("ghost") and not line.take("c")
    line.give_back()
    line.give_back()
    assert line.take("c"), "a stale ticket ahead kept a free place from the next visitor"


def test_a_caller_without_a_ticket_never_jumps_the_line():
    """``open(io)`` without a ticket (the local-devices mode) gets a place only when nobody
    is waiting for it."""
    line = Line(1)
    assert line.take("a")
    assert not line.take("b")
    line.give_back()
    assert not line.take(None), "an untracked caller took the place of the visitor in line"
    assert line.take("b")
    line.give_back()
    assert line.take(None) and line.taken == 1
