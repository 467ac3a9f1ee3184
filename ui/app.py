"""The browser app: Gradio layout and wiring only (no decisions here).

Contract: ``build_ui(manager, config, banner, handler_cls, review_builder)`` returns a
``gr.Blocks`` with a Live tab (webcam + mic over WebRTC, live captions, status and
latency, typed questions, controls, presenter view, preview mirroring) and a Review tab. Each browser
connection is its own session (``SessionManager``); the page finds its session through
its WebRTC connection id, so no tab can drive another's session. ``launch_ui`` starts the
server with the configured host/port/auth/TLS. All text shown comes from ui/view.py,
which escapes it.
"""
from __future__ import annotations

import asyncio
import html
import sys
import time
from pathlib import Path
from typing import Any, Callable

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REFRESH_S = 0.25
WAITING_MAX = 16        # connections beyond --max-sessions that may wait in line
TALK, DONE_TALKING = "Talk (push-to-talk)", "Done talking"
OPTIONS = ("hands_free", "proactive", "voice")

# Shown when the page cannot use camera/microphone (plain HTTP on a LAN address, no API,
# or permission denied). Text only: it is set with textContent.
HEAD_JS = """
<script>
(function () {
  function banner(text) {
    if (document.getElementById('aura-access-banner')) return;
    var d = document.createElement('div');
    d.id = 'aura-access-banner';
    d.setAttribute('role', 'alert');
    d.textContent = text;
    document.body.prepend(d);
  }
  function check() {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      banner('Camera and microphone are blocked: browsers allow them only on https:// pages or on ' +
             'http://localhost. Start AURA Live with --host 0.0.0.0 --ssl-certfile and --ssl-keyfile ' +
             '(see Troubleshooting in the README).');
      return;
    }
    if (navigator.permissions && navigator.permissions.query) {
      ['camera', 'microphone'].forEach(function (name) {
        navigator.permissions.query({name: name}).then(function (p) {
          function check() {
            if (p.state === 'denied') {
              banner('Access to the ' + name + ' is denied for this site. Allow it in the browser\\'s ' +
                     'site settings (the icon left of the address), then reload the page.');
            }
          }
          check(); p.onchange = check;
        }).catch(function () {});
      });
    }
  }
  // Gradio may insert this script after the page has loaded
  if (document.readyState === 'complete') { check(); } else { window.addEventListener('load', check); }
})();
// Captions follow the newest line unless the person scrolled up to read: each refresh
// replaces the caption box, so its scroll position is set again after every change.
(function () {
  var follow = true, top = 0;
  function box() { return document.querySelector('#aura-captions .aura-captions'); }
  document.addEventListener('scroll', function (e) {
    var b = e.target;
    if (!b.classList || !b.classList.contains('aura-captions')) return;
    follow = b.scrollHeight - b.scrollTop - b.clientHeight < 24;
    top = b.scrollTop;
  }, true);
  function asked() { follow = true; }
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && e.target.closest && e.target.closest('#aura-ask')) asked();
  }, true);
  document.addEventListener('click', function (e) {
    if (e.target.closest && e.target.closest('#aura-send')) asked();
  }, true);
  new MutationObserver(function () {
    var b = box();
    if (!b || b.__auraPlaced) return;
    b.__auraPlaced = true;
    b.scrollTop = follow ? b.scrollHeight : top;
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""

# A closing page hangs up its WebRTC connections itself, so the server hears of it at once
# (DTLS close alert) instead of ~30 s later when WebRTC's consent checks fail; ui/presence.py
# covers pages that vanish without a word (crash, lost network).
LEAVE_JS = """
<script>
(function () {
  var Native = window.RTCPeerConnection;
  if (!Native || Native.__auraTracked) return;
  var open = [];
  function Tracked(config) {
    var pc = new Native(config);
    open.push(pc);
    return pc;
  }
  Tracked.prototype = Native.prototype;
  Tracked.__auraTracked = true;
  Object.setPrototypeOf(Tracked, Native);
  window.RTCPeerConnection = Tracked;
  window.addEventListener('pagehide', function () {
    open.forEach(function (pc) { try { pc.close(); } catch (e) {} });
    open = [];
  });
})();
</script>
"""

# FastRTC mirrors the local preview with a ``flip`` class; unticking "Mirror" cancels it.
MIRROR_JS = "(on) => { document.getElementById('aura-webrtc').classList.toggle('aura-no-mirror', !on); }"


def _css() -> str:
    return (ASSETS / "app.css").read_text(encoding="utf-8")


def build_ui(manager: Any, config: Any, banner: str, handler_cls: type,
             review_builder: Callable[[], None] | None = None) -> Any:
    import gradio as gr
    from fastrtc import WebRTC
    from ui.presence import Sweeper
    from ui.view import render_captions, render_status

    def lookup(webrtc_id: Any):
        handler = webrtc.handlers.get(webrtc_id) if isinstance(webrtc_id, str) else None
        session_id = getattr(handler, "session_id", None)
        return manager.get(session_id), handler

    def refresh(webrtc_id, presenter, seen, *options):
        found, handler = lookup(webrtc_id)
        if found is None:
            place = handler.place_in_line() if handler is not None else None
            full = manager.count >= manager.max_sessions
            key = f"wait:{place}" if place is not None else f"idle:{full}"
            if seen == key:
                return gr.skip(), gr.skip(), gr.skip()
            if place is not None:
                return render_waiting(place, manager.max_sessions), "", key
            hint = ("All places are in use right now: click “Record” to join the line."
                    if full else "To start, click “Click to Access Webcam” on the video, then “Record”: "
                    "the assistant watches and listens while the stream runs.")
            return render_captions_idle(), f"<div class='aura-statusbar'>{hint}</div>", key
        session, view = found
        if not str(seen).startswith(f"{session.session_id}:"):
            sync_options(session, options)      # ticked before the stream started
        state = view.state()
        key = f"{session.session_id}:{state.version}:{bool(presenter)}"
        if key == seen:
            return gr.skip(), gr.skip(), gr.skip()
        return render_captions(state, presenter=bool(presenter)), render_status(state), key

    def sync_options(session, values):
        settings = session.snapshot().settings
        for name, value in zip(OPTIONS, values):
            if getattr(settings, name) != bool(value):
                session.set_option(name, bool(value))

    def control(name):
        def fn(webrtc_id, value):
            found, _ = lookup(webrtc_id)
            if found is not None:
                found[0].set_option(name, bool(value))
        return fn

    def ask(webrtc_id, text):
        found, _ = lookup(webrtc_id)
        text = (text or "").strip()
        if found is None:
            gr.Warning("Start the stream first (the record button on the video).")
            return text
        if text:
            found[0].ask(text[:2000])
        return ""

    def reset(webrtc_id):
        found, _ = lookup(webrtc_id)
        if found is not None:
            found[0].reset()

    def talk(webrtc_id, label):
        found, _ = lookup(webrtc_id)
        if found is None:
            gr.Warning("Start the stream first (the record button on the video).")
            return TALK
        pressed = label == TALK
        found[0].push_to_talk(pressed)
        return DONE_TALKING if pressed else TALK

    app_cfg = config.app
    with gr.Blocks(title="AURA Live", css=_css(), head=HEAD_JS + LEAVE_JS, analytics_enabled=False) as demo:
        gr.HTML("<h1 class='aura-title'>AURA Live</h1><p class='aura-sub'>A live assistant that watches "
                "your camera, listens, answers out loud, and speaks up when something you asked about "
                "happens.</p>")
        if banner:
            gr.HTML(f"<div class='aura-banner'>{html.escape(banner)}</div>")
        with gr.Tab("Live"):
            with gr.Row():
                with gr.Column(scale=3):
                    webrtc = WebRTC(label="Camera and microphone", modality="audio-video",
                                    mode="send-receive", mirror_webcam=True, full_screen=False,
                                    elem_id="aura-webrtc")
                with gr.Column(scale=2):
                    captions = gr.HTML(render_captions_idle(), elem_id="aura-captions")
                    status = gr.HTML("", elem_id="aura-status")
            with gr.Row():
                question = gr.Textbox(placeholder="Type a question", show_label=False,
                                      scale=5, max_length=2000, elem_id="aura-ask")
                send = gr.Button("Ask", scale=1, min_width=72, elem_id="aura-send")
            with gr.Row():
                hands_free = gr.Checkbox(app_cfg.hands_free, label="Hands-free (voice detection)")
                proactive = gr.Checkbox(app_cfg.proactive, label="Proactive remarks")
                voice = gr.Checkbox(app_cfg.voice, label="Spoken replies")
                presenter = gr.Checkbox(False, label="Presenter view (large captions)")
                mirror = gr.Checkbox(True, label="Mirror my video (preview only)")
            with gr.Row():
                talk_btn = gr.Button(TALK, elem_id="aura-talk")
                reset_btn = gr.Button("Reset context", elem_id="aura-reset")
            gr.HTML("<p class='aura-help'>Hands-free: just talk; talking over the assistant interrupts "
                    "it. Push-to-talk: untick hands-free, press Talk, speak, press Done. To "
                    "switch cameras (front or rear on a phone), tap the arrow beside Record on the "
                    "video.</p>")
            seen = gr.State("")
        if review_builder is not None:
            with gr.Tab("Review"):
                review_builder()

        # one limit, the app's: FastRTC takes the waiting visitors' connections too, and the
        # SessionManager decides who has a place (in arrival order)
        webrtc.stream(fn=handler_cls(), inputs=[webrtc], outputs=[webrtc],
                      concurrency_limit=app_cfg.max_sessions + WAITING_MAX, time_limit=None)
        # a closed tab frees its place within seconds (ui/presence.py), not WebRTC's ~30 s
        Sweeper(lambda: dict(webrtc.handlers), lambda conn_id: _drop(webrtc, conn_id), time.monotonic).start()
        timer = gr.Timer(REFRESH_S)
        boxes = (hands_free, proactive, voice)            # in OPTIONS order
        timer.tick(refresh, inputs=[webrtc, presenter, seen, *boxes], outputs=[captions, status, seen],
                   show_progress="hidden", queue=False)
        # .input: the person's own clicks only (with .change each click was sent twice)
        for box, name in zip(boxes, OPTIONS):
            box.input(control(name), inputs=[webrtc, box], outputs=None, queue=False)
        question.submit(ask, inputs=[webrtc, question], outputs=[question], queue=False)
        send.click(ask, inputs=[webrtc, question], outputs=[question], queue=False)
        reset_btn.click(reset, inputs=[webrtc], outputs=None, queue=False)
        talk_btn.click(talk, inputs=[webrtc, talk_btn], outputs=[talk_btn], queue=False)
        # the preview only: the model always gets the camera's own (unmirrored) frames
        mirror.change(None, inputs=[mirror], outputs=None, js=MIRROR_JS)
    return demo


def _drop(webrtc: Any, conn_id: str) -> None:
    """A page is gone: free its place (or spot in line) now, then close its
    WebRTC connection on FastRTC's event loop (FastRTC then cleans up as usual)."""
    handler = webrtc.handlers.get(conn_id)
    if handler is None:
        return
    handler.disconnect()
    pc, loop = webrtc.pcs.get(conn_id), getattr(handler, "_loop", None)
    if pc is not None and loop is not None and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(pc.close(), loop)


def render_waiting(place: int, places: int) -> str:
    """The one message a visitor sees while every place is taken (plain text, escaped)."""
    msg = (f"AURA Live is busy: all {places} place{'s are' if places != 1 else ' is'} in use. You are "
           f"number {place} in line and will join automatically as soon as a place frees; keep "
           "this page open. (Nobody can see or join another person's session.)")
    return f"<div class='aura-captions'><div class='aura-waiting' role='status'>{html.escape(msg)}</div></div>"


def render_captions_idle() -> str:
    return ("<div class='aura-captions'><div class='aura-cap aura-empty'>Captions appear here: what you "
            "say and what AURA answers.</div></div>")


SHARE_HINT = "[aura] for a temporary public link, start again with --share"
NOISY_FASTRTC_LOGGER = "fastrtc.webrtc_connection_mixin"


class _DropUnknownIce:
    """Log filter: a browser's trickled ICE candidate can arrive before (or after) its
    connection exists; FastRTC warns each time. Harmless: shown only when that logger is
    set to DEBUG."""
    def filter(self, record: Any) -> bool:
        import logging
        return (not record.getMessage().startswith("Received ICE candidate for unknown connection")
                or logging.getLogger(NOISY_FASTRTC_LOGGER).isEnabledFor(logging.DEBUG))


def quiet_console() -> None:
    """Keep library noise off the console: Gradio 5.50 prints "content_type ..." for every
    component request (each WebRTC offer and ICE candidate), FastRTC warns about early ICE
    candidates."""
    import builtins
    import logging
    import gradio.routes as routes

    def _print(*args: Any, **kwargs: Any) -> None:
        if not (args and args[0] == "content_type"):
            builtins.print(*args, **kwargs)
    routes.print = _print          # a module global shadows the builtin, in gradio.routes only
    noisy = logging.getLogger(NOISY_FASTRTC_LOGGER)
    if not any(isinstance(f, _DropUnknownIce) for f in noisy.filters):
        noisy.addFilter(_DropUnknownIce())


def launch_ui(demo: Any, config: Any, allowed_paths: list[str] | None = None,
              routes: list | None = None, block: bool = True) -> None:
    """Serve until interrupted (blocks), or start and return with ``block=False``.
    ``routes`` (Starlette routes, e.g. /healthz) come before Gradio's own and skip its login.
    Gradio's own console advice is off (quiet): it names ``share=True``, our users pass
    ``--share``; a public URL is still printed."""
    from ui.ice import restrict_media
    app = config.app
    restrict_media(app.host)        # WebRTC media on the served addresses only (ui/ice.py)
    auth = tuple(app.auth.split(":", 1)) if app.auth else None
    quiet_console()
    if not app.share:
        print(SHARE_HINT, file=sys.stderr, flush=True)
    demo.queue(default_concurrency_limit=None)
    demo.launch(server_name=app.host, server_port=app.port, share=app.share, auth=auth,
                ssl_certfile=app.ssl_certfile or None, ssl_keyfile=app.ssl_keyfile or None,
                ssl_verify=False if app.ssl_certfile else True, show_api=False,
                allowed_paths=allowed_paths or [], inbrowser=False, quiet=True,
                app_kwargs={"routes": list(routes or [])}, prevent_thread_lock=not block)
