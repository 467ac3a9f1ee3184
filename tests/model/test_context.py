"""The context policy of protocol section 3: one test per rule (pure functions)."""
from __future__ import annotations

from model.context import QaTurn, Round, advance_window, cut_point, plan, prune, qa_groups

N, NF = 30.0, 15.0


def _r(key, question=None, answer=None, t=None, start=None):
    t_s = float(key + 1) if t is None else t
    return Round(key, t_s - 1.0 if start is None else start, t_s, question, answer, done=True)


def test_window_grows_to_n_plus_float_then_drops_exactly_float_seconds():
    """45 one-second chunks fit; the 46th moves the start by exactly N' = 15 s (the release
    drops 16: off by one), leaving 31 chunks including the new one."""
    assert advance_window(0.0, 45.0, N, NF) == 0.0
    assert advance_window(0.0, 46.0, N, NF) == 15.0
    rounds = [_r(k) for k in range(46)]
    assert len(plan(rounds, 15.0, 10, 4).window) == 31


def test_window_is_counted_in_stream_seconds_not_rounds():
    """Partial chunks (questions close them early) must not shrink the window: 60 chunks of
    0.5 s are 30 s, still inside N + N'."""
    assert advance_window(0.0, 30.0, N, NF) == 0.0
    rounds = [_r(k, t=0.5 * (k + 1), start=0.5 * k) for k in range(60)]
    assert len(plan(rounds, 0.0, 10, 4).window) == 60
    # a chunk straddling the new start stays: it holds video from inside the window
    assert [r.key for r in plan([_r(0, t=14.6, start=14.0), _r(1, t=15.4, start=14.6)], 15.0, 10, 4).window] == [1]


def test_a_gap_moves_the_window_by_whole_float_steps():
    """After a long pause the start advances in N' steps until the new chunk fits."""
    assert advance_window(0.0, 100.0, N, NF) == 60.0
    assert cut_point(60.0, NF) == 75.0


def test_silent_rounds_leave_no_text():
    """Outside the video window, video-only silent rounds are dropped entirely."""
    rounds = [_r(0), _r(1, "What is here?", (5,)), _r(2), _r(3)]
    assert plan(rounds, 10.0, 10, 4).qa == (QaTurn("What is here?", (5,)),)


def test_silently_answered_question_leaves_the_qa_history_as_in_the_release():
    """Guards issue 12 item 8 (decision in docs/engine.md): a question whose only answer was
    <|silent|> kept a text <|silent|> turn in the QA history and counted toward M. As in
    the release (and the training samples): that round is dropped, a group of it alone
    does not count toward M, and its later answers stay a group without a head."""
    boils = _r(1, "Tell me when it boils", None)
    assert plan([boils], 10.0, 10, 4).qa == ()
    rounds = [_r(0, "q0", (0,)), boils, _r(2), _r(3, None, (3,)), _r(4, None, (4,))]
    assert [[r.key for r in g] for g in qa_groups(rounds, 10, 4)] == [[0], [3, 4]]
    assert plan(rounds, 10.0, 10, 4).qa == (QaTurn("q0", (0,)), QaTurn("", (3,)), QaTurn("", (4,)))
    m2 = [_r(0, "q0", (0,)), _r(1, "q1", (1,)), _r(2, "q2", None), _r(3, "q3", None)]
    assert [t.text for t in plan(m2, 10.0, 2, 4).qa] == ["q0", "q1"]
    many = [_r(k, f"q{k}" if k % 4 == 0 else None, (k,) if k % 3 == 0 else None) for k in range(60)]
    for m in (1, 3, 10):
        assert all(t.answer is not None for t in plan(many, 70.0, m, 2).qa)   # no text <|silent|>


def test_pruning_keeps_the_head_of_a_silent_question():
    """Later answers to a silently answered question must still group under it after the
    ledger was pruned (else they would merge into the group before)."""
    rounds = [_r(0, "q0", (0,)), _r(1, "boils?", None), _r(2)]
    later = [_r(3, None, (3,)), _r(4), _r(5, "q5", (5,)), _r(6, None, (6,))]
    for m in (1, 2, 10):
        pruned = prune(rounds, 3.5, m, 4)
        assert plan(pruned + later, 20.0, m, 4) == plan(rounds + later, 20.0, m, 4)


def test_continuation_rounds_become_empty_user_text_plus_answer():
    """A later spoken video-only round continues the last question's group."""
    rounds = [_r(0, "Tell me when it boils", (1,)), _r(1), _r(2, None, (2,))]
    assert plan(rounds, 10.0, 10, 4).qa == (QaTurn("Tell me when it boils", (1,)), QaTurn("", (2,)))


def test_only_the_last_m_groups_are_kept():
    rounds = [_r(k, f"q{k}", (k,)) for k in range(5)]
    assert [t.text for t in plan(rounds, 10.0, 3, 4).qa] == ["q2", "q3", "q4"]
    assert plan(rounds, 10.0, 0, 4).qa == ()


def test_multi_answer_group_is_capped_keeping_first_and_latest_rounds():
    """'Remind me every time X': at most 4 rounds; the earliest continuations go first."""
    rounds = [_r(0, "Remind me", (0,))] + [_r(k, None, (k,)) for k in range(1, 7)]
    assert [t.answer for t in plan(rounds, 10.0, 10, 4).qa] == [(0,), (4,), (5,), (6,)]


def test_orphan_continuation_merges_into_the_last_kept_group():
    """A spoken round with no question before it opens a headless group; later orphans and
    continuations join the last group."""
    rounds = [_r(0, None, (7,)), _r(1, None, (8,)), _r(2, "q", (9,))]
    groups = qa_groups(rounds, 10, 4)
    assert [[r.key for r in g] for g in groups] == [[0, 1], [2]]
    assert plan(rounds, 10.0, 10, 4).qa[0] == QaTurn("", (7,))


def test_video_window_rounds_keep_all_their_turns():
    """Inside the video window nothing is dropped: silent rounds stay as chunk turns."""
    rounds = [_r(0), _r(1, "q", (3,)), _r(2)]
    p = plan(rounds, 0.0, 10, 4)
    assert p.qa == () and [r.key for r in p.window] == [0, 1, 2]


def test_pruning_keeps_every_future_plan_identical():
    """The ledger is pruned on each cut to stay bounded on long streams; that must not
    change any later context."""
    rounds = [_r(k, f"q{k}" if k % 5 == 0 else None, (k,) if k % 3 == 0 else None) for k in range(80)]
    for start in (15.0, 30.0, 45.0):
        pruned = prune(rounds, start, 3, 2)
        assert len(pruned) < len(rounds)
        for later in (start, start + 15.0, start + 30.0):
            assert plan(pruned, later, 3, 2) == plan(rounds, later, 3, 2)
