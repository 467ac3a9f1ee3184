"""The offline preset's trained tiny AURA, replayed on a world video: it answers, alerts
once at the right moment, and otherwise stays silent (issue 14 item 4)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

from model.train.world import World  # noqa: E402


def _replay(tmp, world, asks):
    """One replay through `launch.py replay --preset offline` (in process, app.replay.main)."""
    from app.config import build_config
    from app.replay import main
    video = world.write_video(tmp / "world.mp4", 10.0, 120, 160)
    cfg = build_config({"app": {"preset": "offline"}, "engine": {"device": "cpu"}})
    out = tmp / "out.jsonl"
    assert main(cfg, str(video), asks, str(out), False, False, cache_dir=tmp / "cache") == 0
    return [json.loads(x) for x in out.read_text().splitlines()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """Red 0-6.3 s, blue 6.3-10 s, green after; a colour question at 2 s and a when-question
    for blue at 3 s. Built once per module."""
    return _replay(tmp_path_factory.mktemp("trained-replay"),
                   World.scripted([(0.0, "red"), (6.3, "blue"), (10.0, "green")], 14.0),
                   ["2:What colour is the background?", "3:Tell me when the background turns blue."])


@pytest.fixture(scope="module")
def replayed_past_a_distractor(tmp_path_factory):
    """Red 0-6.3 s, green 6.3-10.4 s, blue 10.4-14 s, yellow after; a when-question for blue
    at 3 s: the first change (to green) is not the one asked for; at 8 s, while green, "Which
    colour are you waiting for?"."""
    return _replay(tmp_path_factory.mktemp("trained-replay-distractor"),
                   World.scripted([(0.0, "red"), (6.3, "green"), (10.4, "blue"), (14.0, "yellow")], 18.0),
                   ["3:Tell me when the background turns blue.", "8:Which colour are you waiting for?"])


@pytest.fixture(scope="module")
def replayed_after_a_colour_answer(tmp_path_factory):
    """Red 0-6 s, green 6-11 s, white 11-14 s; a colour question at 1 s, then a when-question
    for white at 2.5 s: the colour answer before the request made the model before the
    fourth stage alert at green (docs/training.md)."""
    return _replay(tmp_path_factory.mktemp("trained-replay-pre"),
                   World.scripted([(0.0, "red"), (6.0, "green"), (11.0, "white")], 14.0),
                   ["1:What colour is the background?", "2.5:Tell me when the background turns white."])


@pytest.fixture(scope="module")
def replayed_late_in_a_long_stream(tmp_path_factory):
    """Nine colours over 58 s; at 44.3 s, while black, "Tell me when it turns yellow.": blue
    comes first (45.7 s), yellow at 54.5 s. The model before the fifth stage alerted at blue
    (held-out long stream 3298 of docs/training.md)."""
    return _replay(tmp_path_factory.mktemp("trained-replay-late"),
                   World.scripted([(0.0, "blue"), (5.3, "red"), (13.6, "yellow"), (26.2, "black"), (29.7, "green"),
                                   (32.9, "yellow"), (41.7, "black"), (45.7, "blue"), (54.5, "yellow")], 58.0),
                   ["44.3:Tell me when it turns yellow."])


@pytest.fixture(scope="module")
def replayed_every_change(tmp_path_factory):
    """Red 0-4.3 s, green to 8.6 s, blue to 12.2 s, yellow to 16 s; "Which colour are you
    waiting for?" at 1 s (nothing waits), "Tell me every time the background changes." at 2 s."""
    return _replay(tmp_path_factory.mktemp("trained-replay-every"),
                   World.scripted([(0.0, "red"), (4.3, "green"), (8.6, "blue"), (12.2, "yellow")], 16.0),
                   ["1:Which colour are you waiting for?", "2:Tell me every time the background changes."])


def replies(records):
    return [(r["t"], r["text"], r["proactive"]) for r in records if r["type"] == "reply"]


def test_the_colour_question_is_answered_with_the_visible_colour(replayed):
    """A model that ignores the frames (or random weights) cannot name red here."""
    (answer,) = [text for t, text, _ in replies(replayed) if t == 2.0]
    assert "red" in answer.lower() and not any(c in answer.lower() for c in ("blue", "green", "yellow"))


def _one_alert(got, ask_t: float, when: tuple[float, ...], colour: str) -> None:
    assert [text for t, text, _ in got if t == ask_t] == ["OK, I will let you know then."]
    proactive = [(t, text) for t, text, p in got if p]
    assert len(proactive) == 1, got
    t, text = proactive[0]
    assert t in when and colour in text.lower(), got


def test_the_when_question_is_acknowledged_then_alerted_once_within_one_chunk(replayed):
    """Blue first shows at the end of the chunk ending at 7 s: the alert names blue at 7 or
    8 s, never before, once; no other remark (not at the change to green either)."""
    got = replies(replayed)
    _one_alert(got, 3.0, (7.0, 8.0), "blue")
    assert len(got) == 3


def test_the_alert_waits_past_a_change_to_another_colour(replayed_past_a_distractor):
    """Blue first shows at the end of the chunk ending at 11 s: the alert names blue at 11
    or 12 s, not at the change to green (7 s) nor to yellow; nothing else is said but the
    status answer. (The model before 2026-12-06 alerted at green, 7 s: docs/training.md.)"""
    got = replies(replayed_past_a_distractor)
    _one_alert(got, 3.0, (11.0, 12.0), "blue")
    assert len(got) == 3


def test_a_colour_answer_before_the_request_does_not_make_the_alert_early(replayed_after_a_colour_answer):
    """White first shows in the chunk ending at 11.5 s: the alert names white at 11.5 or
    12.5 s, once, not at the change to green; the colour question got "red"."""
    got = replies(replayed_after_a_colour_answer)
    _one_alert(got, 2.5, (11.5, 12.5), "white")
    (answer,) = [text for t, text, _ in got if t == 1.0]
    assert "red" in answer.lower() and len(got) == 3


def test_late_in_a_long_stream_the_alert_waits_for_the_colour_asked_for(replayed_late_in_a_long_stream):
    """With yellow seen twice before the request and the 45-chunk window cut one chunk after it
    (45.3 s): yellow first shows in the chunk ending at 55.3 s; the alert names it then or one
    chunk later, once, not at the change to blue (46.3 s)."""
    got = replies(replayed_late_in_a_long_stream)
    _one_alert(got, 44.3, (55.3, 56.3), "yellow")
    assert len(got) == 2


def test_the_status_question_names_the_awaited_colour_not_the_one_on_screen(replayed_past_a_distractor):
    """At 8 s the screen is green and blue is awaited: the answer is "Blue."."""
    (answer,) = [text for t, text, _ in replies(replayed_past_a_distractor) if t == 8.0]
    assert answer.strip() == "Blue."


def test_every_change_is_reported_once_within_one_chunk_naming_the_new_colour(replayed_every_change):
    """The changes first show in the chunks ending at 5, 9 and 13 s: one remark each, at that
    chunk or the next, naming the new colour and no other; nothing else proactive."""
    got = replies(replayed_every_change)
    assert [text for t, text, _ in got if t == 2.0] == ["OK, I will let you know then."]
    proactive = [(t, text.lower()) for t, text, p in got if p]
    assert len(proactive) == 3, got
    for (t, text), (due, colour) in zip(proactive, ((5.0, "green"), (9.0, "blue"), (13.0, "yellow"))):
        assert t in (due, due + 1.0) and colour in text, got
        assert not any(c in text for c in ("red", "green", "blue", "yellow", "white", "black") if c != colour), got


def test_the_status_question_says_nothing_when_nothing_waits(replayed_every_change):
    (answer,) = [text for t, text, _ in replies(replayed_every_change) if t == 1.0]
    assert answer.strip() == "Nothing."


def test_the_offline_engine_is_the_shipped_model_at_its_pixel_budget():
    """The preset must serve the trained checkpoint at the budget it was trained at (64x64
    over two frames); at the default 614,400 px it would see 300-token chunks it never saw."""
    from app.config import EngineConfig
    from app.presets import OFFLINE_BANNER, TRAINED_VLM, offline_engine
    from model.train.checkpoint import MAX_PIXELS
    eng = offline_engine(EngineConfig(model="aurateam/AURA"), Path("unused"), lambda _m: None)
    assert eng.model == str(TRAINED_VLM) and eng.max_pixels == MAX_PIXELS == 8192
    assert (TRAINED_VLM / "model.safetensors").stat().st_size < 5_000_000
    assert "trained here on coloured backgrounds" in OFFLINE_BANNER


def test_the_offline_preset_keeps_proactive_remarks_on_unless_asked_off(tmp_path, monkeypatch):
    """The trained model's alerts need proactive remarks: on by default in the preset, and
    an explicit --no-proactive still wins (the old preset forced them off)."""
    from dataclasses import replace
    import app.presets as presets
    from app.config import build_config
    monkeypatch.setattr(presets, "offline_models", lambda cache, progress: (presets.TRAINED_VLM, tmp_path))
    cfg = build_config({"app": {"preset": "offline"}, "engine": {"device": "cpu"}})
    on, banner = presets.apply_preset(cfg, tmp_path, lambda _m: None)
    assert on.app.proactive and on.speech.tts == "espeak" and banner == presets.OFFLINE_BANNER
    off, _ = presets.apply_preset(replace(cfg, app=replace(cfg.app, proactive=False)), tmp_path, lambda _m: None)
    assert not off.app.proactive
