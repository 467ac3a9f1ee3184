"""The view model: captions, proactive marks, escaping, latency line."""
from app.events import (ErrorEvent, Latency, ReplyDelta, ReplyEnded, ReplyStarted, StatusChanged,
                        StepDecision, UserText)
from ui.view import SessionView, render_captions, render_status


def test_captions_follow_the_conversation_and_mark_proactive():
    v = SessionView()
    v(UserText(1.0, "what's on the table?"))
    v(ReplyStarted(1.2, "s-r1", proactive=False))
    v(ReplyDelta(1.3, "s-r1", "A red "))
    v(ReplyDelta(1.4, "s-r1", "mug."))
    assert v.state().captions[-1].text == "A red mug." and not v.state().captions[-1].final
    v(ReplyEnded(1.5, "s-r1", "A red mug.", False, 30.0))
    v(ReplyStarted(9.0, "s-r2", proactive=True))
    v(ReplyEnded(9.2, "s-r2", "The kettle is boiling", True, 30.0, cancelled=True))
    html = render_captions(v.state())
    assert "You:" in html and "A red mug." in html
    assert "AURA · noticed" in html and "(interrupted)" in html


def test_model_and_user_text_is_escaped():
    """Model or ASR text must never inject HTML into the page (the release's XSS)."""
    v = SessionView()
    v(UserText(1.0, "<img src=x onerror=alert(1)>"))
    v(ReplyStarted(1.1, "r", proactive=False))
    v(ReplyEnded(1.2, "r", "<script>alert('x')</script>", False, 1.0))
    v(ErrorEvent(1.3, "asr", "<b>bad</b>"))
    out = render_captions(v.state()) + render_status(v.state())
    assert "<img" not in out and "<script>" not in out and "<b>bad" not in out
    assert "&lt;script&gt;" in out


def test_status_shows_decision_latency_and_errors():
    v = SessionView()
    v(StatusChanged(0.5, "thinking"))
    v(StepDecision(1.0, "silent", 0.973, 1234, 20.0))
    v(Latency(2.0, "r", speech_end_s=1.0, transcript_s=1.25, first_token_s=1.3, first_audio_s=1.5))
    for i in range(5):
        v(ErrorEvent(3.0 + i, "x", f"err{i}"))
    out = render_status(v.state())
    assert "Thinking" in out and "p silent 0.97" in out and "1234 context tokens" in out
    assert "transcript 250 ms" in out and "first token 50 ms" in out and "first audio 200 ms" in out
    assert "err4" in out and "err1" not in out


def test_version_moves_only_on_change():
    """The page re-renders only when something changed (cheap polling)."""
    v = SessionView()
    v0 = v.state().version
    v(object())
    assert v.state().version == v0
    v(UserText(1.0, "hi"))
    assert v.state().version == v0 + 1
