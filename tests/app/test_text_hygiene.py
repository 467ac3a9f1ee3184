"""Issue 13 items 5 and 6: what text and which setting events reach people, files and the voice.

A tiny Whisper (and a real one on noise) transcribes bytes such as NUL, \\x01 and U+FFFD; a
model can emit them too. None may reach the captions, the recording, the export (summary,
SRT/VTT) or the text sent to speech. And a setting the page sends twice is one change.
"""
from __future__ import annotations

from app.clock import ManualClock
from app.events import ErrorEvent, ReplyDelta, ReplyEnded, ReplyStarted, SettingChanged, UserText
from app.orchestrator import Orchestrator, Publish, SetOption, Speak
from app.recording.export import assistant_cues, summary_text, to_srt, to_vtt, user_cues
from app.recording.library import read_events
from app.recording.recorder import Recorder
from speech.text import clean_for_speech, sanitize_text
from ui.view import SessionView, render_captions, render_status

DIRTY = "what\x00 is\x01 on\x7f the\x9b table\ufffd?\x1b[31m"
BAD = ["\x00", "\x01", "\x7f", "\x9b", "\ufffd", "\x1b"]


def _clean(text: str) -> bool:
    return not any(ch in text for ch in BAD)


def test_sanitize_text_keeps_text_and_drops_what_no_one_should_get():
    """The one sanitiser: control characters, U+FFFD, lone surrogates, bidi overrides out;
    letters, emoji (with their joiners) and line breaks stay."""
    assert sanitize_text(DIRTY) == "what is on the table?[31m"
    assert sanitize_text("a\r\nb\tc\rd") == "a\nb c\nd"
    assert sanitize_text("evil\u202eexe.txt \udc80") == "evilexe.txt "
    kept = "Grüße, 你好 👩\u200d💻 — ok"
    assert sanitize_text(kept) == kept
    assert clean_for_speech("\x01 then") == "then"                 # the measured TTS input


def test_orchestrator_publishes_and_speaks_sanitised_text():
    """Transcripts, typed questions and reply text are sanitised before captions, the
    recording or the voice see them."""
    o = Orchestrator()
    out = o.handle(UserText(1.0, DIRTY, source="voice"), 1.0)
    users = [c.event for c in out if isinstance(c, Publish) and isinstance(c.event, UserText)]
    assert [u.text for u in users] == ["what is on the table?[31m"]
    assert o.handle(UserText(1.2, "\x00\ufffd \x01", source="voice"), 1.2) == []   # nothing left
    o.handle(ReplyStarted(2.0, "r1", proactive=False), 2.0)
    out = o.handle(ReplyDelta(2.1, "r1", "\x01 then\ufffd"), 2.1)
    spoken = [c.delta.text for c in out if isinstance(c, Speak)]
    shown = [c.event.text for c in out if isinstance(c, Publish)]
    assert spoken == [" then"] and shown == [" then"]
    out = o.handle(ReplyEnded(2.5, "r1", "\x01 then\ufffd", proactive=False, ttft_ms=1.0), 2.5)
    assert [c.event.text for c in out if isinstance(c, Publish)] == [" then"]


def test_captions_and_status_never_show_control_characters():
    """Guards the page even for text that did not pass the orchestrator (error messages)."""
    view = SessionView()
    view(UserText(1.0, DIRTY, source="typed"))
    view(ReplyStarted(1.1, "r", proactive=False))
    view(ReplyDelta(1.2, "r", "\x00\ufffd"))
    view(ErrorEvent(1.3, "asr", "bad \x00 bytes \ufffd"))
    html = render_captions(view.state()) + render_status(view.state())
    assert _clean(html), repr(html)
    assert "what is on the table?" in html and "bad  bytes" in html


def test_export_summary_and_captions_are_sanitised(tmp_path):
    """Recordings made before the filter (raw NUL in events.jsonl) export clean files."""
    events = [
        {"t": 2.0, "type": "user", "text": DIRTY, "source": "typed", "speech_end_s": None},
        {"t": 2.5, "type": "reply_start", "reply_id": "a", "proactive": False},
        {"t": 3.0, "type": "reply", "reply_id": "a", "text": "\x01 then\ufffd", "proactive": False},
        {"t": 3.1, "type": "error", "source": "asr", "message": "x\x00y"},
    ]
    files = [to_srt(user_cues(events)), to_vtt(user_cues(events)), to_srt(assistant_cues(events)),
             to_vtt(assistant_cues(events)), summary_text("rec", events, {}, 4.0)]
    for text in files:
        assert _clean(text), repr(text)
    assert "what is on the table?" in files[0] and "then" in files[2]


def test_recorder_writes_no_control_characters(tmp_path):
    """events.jsonl holds only sanitised text, whatever the event's source."""
    clock = ManualClock()
    rec = Recorder.open(tmp_path, "hyg", {}, clock, lambda e: None)
    rec.handle(UserText(1.0, DIRTY, source="voice"))
    rec.handle(ErrorEvent(1.5, "asr", "x\x00y\ufffd"))
    clock.set(3.0)
    rec.close()
    lines = read_events(rec.path / "events.jsonl")
    texts = [e.get("text", e.get("message")) for e in lines if e["type"] in ("user", "error")]
    assert texts == ["what is on the table?[31m", "xy"]


def test_a_setting_sent_twice_is_one_change():
    """Guards issue 13 item 6: the page sends each checkbox change twice; events.jsonl had
    every change twice (47.423 s and 47.465 s)."""
    o = Orchestrator()
    changes = []
    for t, value in ((1.0, False), (1.04, False), (5.0, True), (5.03, True)):
        out = o.handle(SetOption(t, "proactive", value), t)
        changes += [c.event for c in out if isinstance(c, Publish) and isinstance(c.event, SettingChanged)]
    assert [(c.t_s, c.value) for c in changes] == [(1.0, False), (5.0, True)]
    assert o.handle(SetOption(6.0, "hands_free", True), 6.0) == []   # already on
