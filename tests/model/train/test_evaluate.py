"""The behaviour score of model/train/evaluate.py on hand-made replays: what counts as an
alert on time, early or missed, a false alarm, a right colour answer and an acknowledgement."""
from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("cv2")

from model.train import tasks  # noqa: E402
from model.train.evaluate import score, summary  # noqa: E402
from model.train.world import World  # noqa: E402

WORLD = World.scripted([(0.0, "red"), (4.3, "green"), (8.3, "blue")], 12.0)
ASKS = [tasks.Ask(1.5, "What colour is the background?"), tasks.Ask(3.5, "Tell me when the background turns blue.")]


def _replay(expected, said: dict[float, str]) -> list[dict]:
    """Replay records where the model spoke ``said`` (stream time -> text) and was silent
    elsewhere."""
    out = []
    for r in expected:
        text = said.get(r.t_s)
        out.append({"type": "step", "t": r.t_s, "decision": "speak" if text else "silent"})
        if text:
            out.append({"type": "reply", "t": r.t_s, "text": text})
    return out


def _score(said, asks=ASKS):
    expected = tasks.chunk_stream(WORLD, asks, size=(16, 16))
    tally = Counter()
    score(expected, _replay(expected, said), tally)
    return summary(tally)


def test_the_script_itself_scores_perfectly():
    expected = tasks.chunk_stream(WORLD, ASKS, size=(16, 16))
    said = {r.t_s: r.answer for r in expected if r.answer}
    assert said[8.5] == "The background turned blue."
    got = _score(said)
    assert (got["qa_correct_pct"], got["ack_pct"], got["alert_on_time_pct"], got["false_alarms"]) == (100.0, 100.0, 100.0, 0)


def test_early_late_wrong_and_false_alarm_are_told_apart():
    base = {1.5: "The background is red.", 3.5: tasks.ACK}
    early = _score({**base, 6.5: "The background turned green."})
    assert early["alert_early"] == 1 and early["false_alarms"] == 1
    late_by_one = _score({**base, 9.5: "The background turned blue."})
    assert late_by_one["alert_ok"] == 1 and late_by_one["false_alarms"] == 0
    too_late = _score({**base, 10.5: "The background turned blue."})
    assert too_late["alert_missed"] == 1 and too_late["false_alarms"] == 1
    wrong = _score({1.5: "The background is green.", 3.5: "The background turned blue."})
    assert wrong["qa_correct_pct"] == 0.0 and wrong["ack_pct"] == 0.0 and wrong["alert_missed"] == 1


def test_changes_before_the_awaited_colour_are_counted():
    """The figure that tells a colour comparison from "alert at the first change": WORLD
    turns green before the awaited blue (one change first); asked for green, none."""
    from model.train.evaluate import changes_first
    assert changes_first(WORLD, ASKS) == 1
    assert changes_first(WORLD, [tasks.Ask(3.5, "Tell me when the background turns green.")]) == 0
    assert _score({})["alert_past_change_pct"] is None          # only chase streams count it


def test_status_and_yes_no_answers_must_be_the_scripts_own():
    """Asked at 6 s (green on screen, blue awaited): "Blue." is right, naming the colour on
    screen is not, and neither counts as a colour question."""
    asks = ASKS + [tasks.Ask(6.0, "Which colour are you waiting for?"), tasks.Ask(10.0, "Is it blue?")]
    base = {1.5: "The background is red.", 3.5: tasks.ACK, 9.0: "The background turned blue."}
    right = _score({**base, 6.0: "Blue.", 10.0: "Yes, the background is blue."}, asks)
    assert (right["status_correct_pct"], right["check_correct_pct"], right["qa"]) == (100.0, 100.0, 1)
    assert right["alert_ok"] == 1 and right["false_alarms"] == 0
    wrong = _score({**base, 6.0: "Green.", 10.0: "No, the background is blue."}, asks)
    assert (wrong["status_correct_pct"], wrong["check_correct_pct"]) == (0.0, 0.0)


def test_every_change_is_scored_per_change():
    """"Tell me every time ..." at 1 s: the changes at 4.3 s (green) and 8.3 s (blue) are due
    at the chunks ending 5 and 9 s (the question closed a chunk at 1 s); one chunk late still
    counts, a wrong colour or a missed change does not, and a remark where nothing changed
    is a false alarm."""
    asks = [tasks.Ask(1.0, "Tell me every time the background changes.")]
    expected = tasks.chunk_stream(WORLD, asks, size=(16, 16))
    assert [(r.t_s, r.answer) for r in expected if r.answer] == [
        (1.0, tasks.ACK), (5.0, "The background turned green."), (9.0, "The background turned blue.")]
    right = _score({1.0: tasks.ACK, 5.0: "The background turned green.", 10.0: "The background turned blue."}, asks)
    assert (right["ack_pct"], right["change_on_time_pct"]) == (100.0, 100.0)
    assert (right["false_alarms"], right.get("qa", 0)) == (0, 0)
    wrong = _score({1.0: tasks.ACK, 5.0: "The background turned blue.", 7.0: "The background turned green."}, asks)
    assert (wrong["change_on_time_pct"], wrong["changes"], wrong["false_alarms"]) == (0.0, 2, 1)


def test_the_cli_refuses_unknown_groups_and_empty_runs(capsys):
    from app.presets import TRAINED_VLM
    from model.train.evaluate import main
    assert main([str(TRAINED_VLM), "--groups", "short,shapes"]) == 2
    assert main([str(TRAINED_VLM), "--streams", "0"]) == 2
    assert "--groups among short,long,chase,every,status" in capsys.readouterr().err
