"""The per-chunk script and the episode kinds of model/train/tasks.py, on hand-made and
drawn worlds: what each kind promises the trainer (the alert drill must not let "the
first change" or "a few seconds after the question" predict the alert)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from model.train import tasks  # noqa: E402
from model.train.world import World  # noqa: E402


def _script(world, asks):
    return tasks.chunk_stream(world, asks, size=(16, 16))


def test_when_question_is_acknowledged_then_alerted_once_at_the_first_chunk_showing_it():
    world = World.scripted([(0.0, "red"), (3.2, "green"), (6.3, "blue"), (9.0, "green"), (11.0, "blue")], 13.0)
    recs = _script(world, [tasks.Ask(1.5, "Tell me when the background turns blue.")])
    spoken = [(r.t_s, r.answer) for r in recs if r.answer]
    # the question closes the chunk at 1.5 s, so chunks end at 2.5, 3.5, ...: 6.5 s first shows blue
    assert spoken == [(1.5, tasks.ACK), (6.5, "The background turned blue.")]


def _drawn(kind, n=40, duration=20.0, gap=15.0):
    rng = np.random.default_rng(7)
    return [tasks.episode(rng, kind, duration, max_gap_s=gap) for _ in range(n)]


def test_chase_episodes_put_other_changes_and_varied_gaps_before_the_alert():
    distractors, gaps = [], []
    for world, asks in _drawn("chase"):
        ask = asks[0]
        assert ask.t_s <= tasks.EARLY_ASK_S and ask.target != world.colour_at(ask.t_s)
        event = min(s for s, c in world.changes() if c == ask.target and s > ask.t_s)
        assert world.colour_at(event - 0.05) != ask.target
        distractors.append(sum(1 for s, _ in world.changes() if ask.t_s < s < event))
        gaps.append(event - ask.t_s)
        recs = _script(world, asks)
        alerts = [r for r in recs if r.answer == tasks.alert(ask.target)]
        assert len(alerts) == 1 and alerts[0].t_s >= event
    assert min(distractors) == 0 and max(distractors) >= 2
    assert min(gaps) < 3.0 and max(gaps) > 8.0


def test_miss_episodes_never_show_the_awaited_colour_and_end_with_a_colour_question():
    for world, asks in _drawn("miss"):
        when, last = asks
        recs = _script(world, asks)
        assert not any(r.answer and r.answer.startswith("The background turned") for r in recs)
        assert when.target not in {tasks.chunk_colour(r.frames) for r in recs if r.t_s > when.t_s}
        assert recs[-1].question == last.text or any(r.question == last.text for r in recs)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind 'dance'"):
        tasks.episode(np.random.default_rng(0), "dance", 10.0)


def test_late_drill_kinds_ask_anywhere_in_the_first_half_with_the_same_promises():
    late = _drawn("chase_late", duration=70.0, gap=25.0)
    assert max(asks[0].t_s for _, asks in late) > 20.0
    for world, asks in late:
        ask = asks[0]
        assert ask.t_s <= 35.0 and ask.target != world.colour_at(ask.t_s)
        alerts = [r for r in _script(world, asks) if r.answer == tasks.alert(ask.target)]
        assert len(alerts) == 1 and alerts[0].t_s > ask.t_s
    for world, asks in _drawn("miss_late", n=10, duration=70.0, gap=25.0):
        recs = _script(world, asks)
        assert not any(r.answer and r.answer.startswith("The background turned") for r in recs)


def test_any_drill_kinds_ask_late_in_long_streams_and_mostly_ask_again_after_the_alert():
    drawn = _drawn("chase_any", duration=70.0, gap=25.0)
    assert max(asks[0].t_s for _, asks in drawn) > 40.0
    assert sum(len(asks) == 2 for _, asks in drawn) >= 0.6 * len(drawn)
    for world, asks in drawn:
        alerts = [r for r in _script(world, asks) if r.answer == tasks.alert(asks[0].target)]
        assert len(alerts) == 1 and alerts[0].t_s > asks[0].t_s


def test_yes_no_question_is_answered_at_once_from_the_chunk_shown():
    world = World.scripted([(0.0, "red"), (3.2, "blue")], 8.0)
    recs = _script(world, [tasks.Ask(1.5, "Is the background blue?"), tasks.Ask(5.0, "Is it blue now?"),
                           tasks.Ask(6.5, "Is the background green?")])
    spoken = [(r.t_s, r.answer) for r in recs if r.answer]
    assert spoken == [(1.5, "No, the background is red."), (5.0, "Yes, the background is blue."),
                      (6.5, "No, the background is blue.")]
    assert tasks.parse_check("Say something when the background is blue.") is None
    assert tasks.parse_target("Is the background blue?") is None


def test_check_episodes_ask_yes_no_questions_about_half_of_them_true():
    answers = [r.answer for world, asks in _drawn("check", n=30)
               for r in tasks.chunk_stream(world, asks, size=(16, 16)) if r.question]
    assert all(tasks.parse_check(q) for _, asks in _drawn("check", n=30) for q in (a.text for a in asks))
    yes = sum(a.startswith("Yes") for a in answers)
    assert len(answers) >= 30 and 0.3 < yes / len(answers) < 0.7


def test_status_question_names_the_awaited_colour_first_and_nothing_when_none_waits():
    world = World.scripted([(0.0, "red"), (3.2, "green"), (6.3, "blue")], 9.0)
    # chunks end at 0.8, 1.5, 2.5, 3.5, 4.0, 5.0, 6.0, 7.0: 7.0 is the first to show blue
    recs = _script(world, [tasks.Ask(0.8, "Which colour are you waiting for?"),
                           tasks.Ask(1.5, "Tell me when it turns blue."),
                           tasks.Ask(4.0, "Which colour are you waiting for?"),
                           tasks.Ask(8.0, "What colour are you waiting for?")])
    spoken = [(r.t_s, r.answer) for r in recs if r.answer]
    assert spoken == [(0.8, "Nothing."), (1.5, tasks.ACK), (4.0, "Blue."),
                      (7.0, "The background turned blue."), (8.0, "Nothing.")]


def test_status_episodes_ask_once_while_the_when_question_waits():
    asked = 0
    for world, asks in _drawn("status_chase", n=30):
        when, status = asks[0], [a for a in asks if tasks.is_status(a.text)]
        event = min(s for s, c in world.changes() if c == when.target and s > when.t_s)
        assert len(status) <= 1 and all(when.t_s + 1.0 <= a.t_s <= event - 0.6 for a in status)
        asked += len(status)
    assert asked >= 20
    base = _drawn("chase", n=1)[0]
    assert [a for a in base[1] if tasks.is_status(a.text)] == []


def test_every_change_request_is_acknowledged_then_answered_at_each_change_to_the_end():
    world = World.scripted([(0.0, "red"), (3.2, "green"), (6.3, "blue"), (9.0, "green")], 12.0)
    recs = _script(world, [tasks.Ask(1.5, "Tell me every time the background changes."),
                           tasks.Ask(7.5, "What colour is the background?")])
    spoken = [(r.t_s, r.answer) for r in recs if r.answer]
    # chunks end at 2.5, 3.5, ..., 6.5, 7.5 (the question), 8.5, 9.5: one remark per change
    assert spoken == [(1.5, tasks.ACK), (3.5, "The background turned green."), (6.5, "The background turned blue."),
                      (7.5, "The background is blue."), (9.5, "The background turned green.")]


def test_every_episodes_ask_early_and_hold_several_changes():
    changes = []
    for world, asks in _drawn("every", n=30):
        assert tasks.is_every(asks[0].text) and asks[0].t_s <= 0.4 * world.duration_s + 0.1
        assert all(not tasks.is_every(a.text) and a.t_s > asks[0].t_s for a in asks[1:])
        changes.append(sum(1 for s, _ in world.changes() if s > asks[0].t_s))
    assert min(changes) >= 1 and np.mean(changes) >= 3


def test_idle_episodes_ask_the_status_question_only_while_nothing_waits():
    answers = []
    for kind in ("idle_alert", "idle_chase_any", "idle_qa"):
        for world, asks in _drawn(kind, n=20):
            recs = _script(world, asks)
            status = [r for r in recs if r.question and tasks.is_status(r.question)]
            assert len(status) <= 1 and len([a for a in asks if tasks.is_status(a.text)]) == len(status)
            answers += [r.answer for r in status]
    assert len(answers) >= 45 and set(answers) == {tasks.NOTHING}
    both = [_script(*ep) for ep in _drawn("idle_status_alert", n=20)]
    said = [[r.answer for r in recs if r.question and tasks.is_status(r.question)] for recs in both]
    assert sum(1 for s in said if tasks.NOTHING in s and len(s) == 2 and s[0] != s[1]) >= 10


def test_pre_episodes_ask_a_colour_question_before_the_request():
    before = 0
    for kind in ("pre_chase_any", "pre_alert", "pre_status_chase"):
        for world, asks in _drawn(kind, n=20):
            when = asks[0]
            assert tasks.parse_target(when.text) and when.target
            earlier = [a for a in asks if a.t_s < when.t_s]
            assert all(not tasks.parse_target(a.text) and not tasks.is_status(a.text) for a in earlier)
            assert all(b.t_s - a.t_s >= 0.6 for a, b in zip(sorted(asks, key=lambda a: a.t_s),
                                                             sorted(asks, key=lambda a: a.t_s)[1:]))
            before += bool(earlier)
    assert before >= 50


def test_every_mix_draws_known_kinds_with_shares_summing_to_one():
    """`--mix NAME` must not fail hours into a run on a misspelt kind or bad shares."""
    from model.train.recipe import MIXES
    rng = np.random.default_rng(3)
    # the Curriculum draws kinds with Generator.choice(p=shares), which accepts shares whose
    # float64 sum is within sqrt(eps) of 1 (numpy's own bound); any more is a typo
    slack = float(np.sqrt(np.finfo(np.float64).eps))
    for name, mix in MIXES.items():
        kinds, shares = zip(*mix)
        assert abs(sum(shares) - 1.0) <= slack and min(shares) > 0, name
        rng.choice(len(kinds), p=shares)
        for kind in kinds:
            world, asks = tasks.episode(rng, kind, 40.0, max_gap_s=25.0)
            assert asks and all(0 < a.t_s < world.duration_s for a in asks), (name, kind)
