"""The UI's view model: what a person sees of one session, built from its events.

Contract: ``SessionView`` is a session listener (``view(event)``, called on the session's
control thread) that keeps captions (user and assistant, proactive remarks marked,
cancelled replies marked), the status, the last decision with p(silent), the last turn's
latency and recent errors. ``view.state()`` returns an immutable ``ViewState`` (thread-safe
copy); ``render_*`` turn a state into HTML with every piece of model/ASR/user text
sanitised (``speech.text.sanitize_text``: no control characters, no U+FFFD) and escaped.
No Gradio here: the page wiring lives in ui/app.py.
"""
from __future__ import annotations

import html
import threading
from dataclasses import dataclass, replace

from app.events import (ErrorEvent, Latency, ReplyDelta, ReplyEnded, ReplyStarted, StatusChanged,
                        StepDecision, UserText)
from speech.text import sanitize_text

MAX_CAPTIONS = 60
MAX_ERRORS = 3
STATUS_TEXT = {"idle": "Idle", "watching": "Watching", "listening": "Listening",
               "thinking": "Thinking", "speaking": "Speaking"}


@dataclass(frozen=True)
class Caption:
    who: str                 # "user" | "assistant"
    text: str
    t_s: float
    reply_id: str = ""
    proactive: bool = False
    final: bool = True
    cancelled: bool = False
    typed: bool = False


@dataclass(frozen=True)
class ViewState:
    captions: tuple[Caption, ...] = ()
    status: str = "watching"
    decision: str = ""
    p_silent: float | None = None
    context_tokens: int = 0
    latency: Latency | None = None
    errors: tuple[str, ...] = ()
    version: int = 0


class SessionView:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ViewState()

    def state(self) -> ViewState:
        with self._lock:
            return self._state

    def __call__(self, event: object) -> None:
        with self._lock:
            new = self._reduce(self._state, event)
            if new is not self._state:
                self._state = replace(new, version=self._state.version + 1)

    @staticmethod
    def _reduce(s: ViewState, ev: object) -> ViewState:
        if isinstance(ev, UserText):
            return _add(s, Caption("user", ev.text, ev.t_s, typed=ev.source == "typed"))
        if isinstance(ev, ReplyStarted):
            return _add(s, Caption("assistant", "", ev.t_s, ev.reply_id, ev.proactive, final=False))
        if isinstance(ev, ReplyDelta):
            return _edit(s, ev.reply_id, lambda c: replace(c, text=c.text + ev.text))
        if isinstance(ev, ReplyEnded):
            return _edit(s, ev.reply_id, lambda c: replace(c, text=ev.text, final=True,
                                                           cancelled=ev.cancelled))
        if isinstance(ev, StatusChanged):
            return replace(s, status=ev.state)
        if isinstance(ev, StepDecision):
            return replace(s, decision=ev.decision, p_silent=ev.p_silent, context_tokens=ev.context_tokens)
        if isinstance(ev, Latency):
            return replace(s, latency=ev)
        if isinstance(ev, ErrorEvent):
            return replace(s, errors=(s.errors + (ev.message,))[-MAX_ERRORS:])
        return s


def _add(s: ViewState, c: Caption) -> ViewState:
    return replace(s, captions=(s.captions + (c,))[-MAX_CAPTIONS:])


def _edit(s: ViewState, reply_id: str, fn) -> ViewState:
    caps = list(s.captions)
    for i in range(len(caps) - 1, -1, -1):
        if caps[i].reply_id == reply_id:
            caps[i] = fn(caps[i])
            return replace(s, captions=tuple(caps))
    return s


def _text(s: str) -> str:
    """Any text for the page: sanitised, then HTML-escaped."""
    return html.escape(sanitize_text(s))


def _ms(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None else f"{(b - a) * 1000:.0f} ms"


def render_captions(s: ViewState, presenter: bool = False, last: int = 12) -> str:
    rows = []
    for c in s.captions[-(4 if presenter else last):]:
        text = _text(c.text).strip() or "…"
        if c.who == "user":
            label = "You (typed)" if c.typed else "You"
        else:
            label = "AURA · noticed" if c.proactive else "AURA"
        marks = []
        if not c.final:
            marks.append('<span class="aura-live-mark">…</span>')
        if c.cancelled:
            marks.append('<span class="aura-cancelled">(interrupted)</span>')
        cls = f"aura-cap aura-{c.who}" + (" aura-proactive" if c.proactive else "")
        rows.append(f'<div class="{cls}"><b>{html.escape(label)}:</b> {text} {" ".join(marks)}</div>')
    if not rows:
        rows.append('<div class="aura-cap aura-empty">Say something, or type a question below.</div>')
    outer = "aura-captions aura-presenter" if presenter else "aura-captions"
    return f'<div class="{outer}">{"".join(rows)}</div>'


def render_status(s: ViewState) -> str:
    status = STATUS_TEXT.get(s.status, s.status)
    parts = [f'<span class="aura-status aura-status-{html.escape(s.status)}">{html.escape(status)}</span>']
    if s.p_silent is not None:
        parts.append(f"last step: {_text(s.decision)} (p silent {s.p_silent:.2f}, "
                     f"{s.context_tokens} context tokens)")
    lat = s.latency
    if lat is not None:
        parts.append("last turn: speech end → transcript " + _ms(lat.speech_end_s, lat.transcript_s)
                     + " → first token " + _ms(lat.transcript_s, lat.first_token_s)
                     + " → first audio " + _ms(lat.first_token_s, lat.first_audio_s))
    for message in s.errors:
        parts.append(f'<span class="aura-error">⚠ {_text(message)}</span>')
    return "<div class='aura-statusbar'>" + " · ".join(parts) + "</div>"
