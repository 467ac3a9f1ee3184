"""The Review tab: list recordings, play one back in sync, walk its timeline, export, delete.

Contract: ``build_review_tab(recordings_root)`` adds the tab's components and wiring to the
``gr.Blocks()`` / ``gr.Tab`` context it is called in (gradio 5.50; auth is app-wide).
All logic lives in ``Review``, plain methods the tests call without gradio:
``rows()``, ``open(rec_id)``, ``event_rows(events, kinds)``, ``jump_time(rows, index)``,
``export(rec_id)``, ``delete(rec_id, confirmed)``, and the testers' notes
(app/recording/annotations.py): ``note_rows``, ``save_note`` (new or edit), ``delete_note``,
``timeline``. Ids go through ``app.recording.library.resolve``
(regex, no traversal, no links); files handed to the browser are renders and copies in the
tab's own work folder, never a path built from input. Recording text (ASR, model replies,
error messages, notes) is shown as plain text cells or HTML-escaped in the timeline.
"""

import html
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.recording import annotations as notes
from app.recording import export as exporter
from app.recording import library as cat

HEADERS = ["recording", "started", "length", "questions", "replies", "proactive", "size", "status"]
EVENT_HEADERS = ["t (s)", "event", "detail"]
NOTE_HEADERS = ["#", "t (s)", "chunk", "note"]
KINDS = {
    "decisions": {"step"},
    "replies": {"reply_start", "reply", "tts_audio", "barge_in"},
    "questions": {"speech_start", "speech_end", "user"},
    "errors": {"error"},
    "other": {"chunk", "status", "latency", "reply_delta"},
}
DEFAULT_KINDS = ["decisions", "replies", "questions", "errors"]
JUMP_JS = """(t) => {
  const v = document.querySelector('#aura-review-video video');
  const s = parseFloat(t);
  if (v && Number.isFinite(s) && s >= 0) { v.currentTime = s; }
  return t;
}"""

PLAYER_TIME_JS = """() => {
  const v = document.querySelector('#aura-review-video video');
  return v ? v.currentTime.toFixed(2) : '';
}"""


def _length(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def describe(e: dict[str, Any]) -> str:
    """One line of plain text for an events.jsonl record."""
    kind = e.get("type")
    if kind == "step":
        q = f"  question: {e['question']}" if e.get("question") else ""
        return f"{e.get('decision')}  p_silent={float(e.get('p_silent', 0)):.3f}  " \
               f"context={e.get('context_tokens')}  {float(e.get('step_ms', 0)):.0f} ms{q}"
    if kind in ("reply", "reply_start"):
        tag = "proactive" if e.get("proactive") else "answer"
        tag += ", cancelled" if e.get("cancelled") else ""
        return f"[{tag}] {e.get('text', '')}".strip()
    if kind == "tts_audio":
        return f"voice {e.get('play_s')}-{e.get('play_end_s')} s: {e.get('text', '')}"
    if kind == "user":
        return f"[{e.get('source')}] {e.get('text', '')}"
    if kind == "latency" and e.get("speech_end_s") is not None and e.get("first_audio_s") is not None:
        return f"speech end -> first audio {1000 * (e['first_audio_s'] - e['speech_end_s']):.0f} ms"
    if kind == "error":
        return f"{e.get('source')}: {e.get('message')}"
    skip = {"t", "type"}
    return ", ".join(f"{k}={v}" for k, v in e.items() if k not in skip)


def timeline_html(events: list[dict[str, Any]], duration_s: float,
                  annotations: list[notes.Annotation] = ()) -> str:
    """A strip of decisions (grey silent, orange speak; opacity follows 1 - p_silent) with
    question and reply marks, and the testers' notes below. Every recording-derived string
    (and every note) is escaped."""
    span = max(duration_s, 1e-3)
    parts = ['<div class="aura-timeline" style="position:relative;height:66px;'
             'background:#f4f4f4;border-radius:4px;overflow:hidden">']
    for a in annotations:
        left = 100.0 * a.chunk_start_s / span
        width = 100.0 * max(a.chunk_end_s - a.chunk_start_s, 0.0) / span
        tip = html.escape(f"note #{a.n} at {a.t:.2f} s (chunk {a.chunk}): {a.label()}", quote=True)
        parts.append(f'<div class="aura-note" title="{tip}" style="position:absolute;left:{left:.3f}%;'
                     f'top:46px;width:max(14px,{width:.3f}%);height:18px;background:#7b3fbf;color:#fff;'
                     f'font-size:11px;line-height:18px;overflow:hidden">#{a.n}</div>')
    for e in events:
        left = 100.0 * float(e["t"]) / span
        kind = e.get("type")
        tip = html.escape(f"{float(e['t']):.2f} s {kind}: {describe(e)}", quote=True)
        if kind == "step":
            speak = e.get("decision") == "speak"
            alpha = 0.25 + 0.75 * (1.0 - float(e.get("p_silent", 1.0)))
            color = f"rgba(230,120,20,{alpha:.2f})" if speak else f"rgba(120,120,120,{alpha:.2f})"
            parts.append(f'<div title="{tip}" style="position:absolute;left:{left:.3f}%;top:0;'
                         f'width:max(2px,{100.0 / span:.3f}%);height:22px;background:{color}"></div>')
        elif kind in ("user", "reply", "barge_in"):
            color = {"user": "#2a6fdb", "reply": "#1a9e55", "barge_in": "#d0342c"}[kind]
            parts.append(f'<div title="{tip}" style="position:absolute;left:{left:.3f}%;top:24px;'
                         f'width:4px;height:20px;background:{color}"></div>')
    parts.append("</div><div style='font-size:12px'>decisions: grey silent, orange speak "
                 "(darker = lower p_silent); marks: blue question, green reply, red barge-in; "
                 "purple: your notes, over the chunk each corrects</div>")
    return "".join(parts)


class Review:
    """The tab's state and actions (no gradio here)."""

    def __init__(self, root: Path, work_dir: Path) -> None:
        self.root = Path(root)
        self.work_dir = Path(work_dir)

    def rows(self) -> list[list[Any]]:
        return [[r.id, r.started, _length(r.duration_s), r.n_questions, r.n_replies, r.n_proactive,
                 _size(r.size_bytes), "recording" if r.live else ("complete" if r.complete else "cut short")]
                for r in cat.list_recordings(self.root)]

    def ids(self) -> list[str]:
        return [r[0] for r in self.rows()]

    def _out_dir(self, rec_id: str) -> Path:
        cat.check_id(rec_id)
        return self.work_dir / rec_id

    def open(self, rec_id: str) -> dict[str, Any]:
        """Render the player's files; ``error`` holds one line when the id is refused."""
        try:
            path = cat.resolve(self.root, rec_id)
        except cat.RecordingError as e:
            return {"error": str(e)}
        events = cat.read_events(path / "events.jsonl")
        out = self._out_dir(path.name)
        fresh = (out / "preview.mp4").is_file() and not cat.is_live(path) and \
            (out / "preview.mp4").stat().st_mtime >= (path / "events.jsonl").stat().st_mtime
        files = {"video": out / "preview.mp4", "captions": out / "captions.vtt"} if fresh \
            else exporter.preview(path, out)
        for name in ("mic.wav", "assistant.wav"):
            (out / name).unlink(missing_ok=True)
            # an empty track (no voice in a replay, AURA never spoke) is not handed over:
            # the browser cannot decode a WAV without samples ("Unable to decode audio data")
            if not (path / name).is_symlink() and cat.wav_duration_s(path / name) > 0:
                shutil.copyfile(path / name, out / name)
        duration = cat.recording_duration_s(path, events)
        return {"error": None, "id": path.name, "video": files["video"], "captions": files["captions"],
                "mic": out / "mic.wav" if (out / "mic.wav").is_file() else None,
                "assistant": out / "assistant.wav" if (out / "assistant.wav").is_file() else None,
                "summary": exporter.summary_text(path.name, events, cat.read_meta(path), duration),
                "timeline": timeline_html(events, duration, notes.load(path)), "events": events,
                "notes": self.note_rows(path.name)}

    # --- notes (app/recording/annotations.py); each returns one line for the status box
    def timeline(self, rec_id: str) -> str:
        path = cat.resolve(self.root, rec_id)
        events = cat.read_events(path / "events.jsonl")
        return timeline_html(events, cat.recording_duration_s(path, events), notes.load(path))

    def note_rows(self, rec_id: str) -> list[list[Any]]:
        return [[a.n, a.t, a.chunk, a.label()] for a in notes.load(cat.resolve(self.root, rec_id))]

    def save_note(self, rec_id: str, n: Any, at: Any, kind: str, text: str) -> str:
        """A new note when ``n`` is empty, else a change to note ``n``."""
        try:
            path = cat.resolve(self.root, rec_id)
            if n in (None, "", 0):
                a = notes.add(path, at, kind, text)
                return f"Added note #{a.n} on chunk {a.chunk}."
            a = notes.edit(path, n, t_s=at, kind=kind, text=text)
            return f"Saved note #{a.n} on chunk {a.chunk}."
        except (cat.RecordingError, ValueError, OSError) as e:
            return f"Note not saved: {e}"

    def delete_note(self, rec_id: str, n: Any) -> str:
        try:
            a = notes.delete(cat.resolve(self.root, rec_id), n)
        except (cat.RecordingError, ValueError, OSError) as e:
            return f"Note not deleted: {e}"
        return f"Deleted note #{a.n}."

    @staticmethod
    def event_rows(events: list[dict[str, Any]], kinds: list[str]) -> list[list[Any]]:
        wanted = set().union(*(KINDS[k] for k in kinds if k in KINDS)) if kinds else set()
        return [[round(float(e["t"]), 2), str(e.get("type")), describe(e)]
                for e in events if e.get("type") in wanted]

    @staticmethod
    def jump_time(rows: list[list[Any]], index: int) -> str:
        """The clicked row's time as the "Jump to (s)" box shows it ("" for no row)."""
        if not 0 <= index < len(rows):
            return ""
        try:
            return f"{float(rows[index][0]):g}"
        except (TypeError, ValueError):
            return ""

    def export(self, rec_id: str) -> Path:
        path = cat.resolve(self.root, rec_id)
        return exporter.export(path, self._out_dir(path.name) / f"{path.name}.zip")

    def delete(self, rec_id: str, confirmed: bool) -> str:
        if not confirmed:
            return "Tick the confirmation box first."
        try:
            cat.delete(self.root, rec_id)
        except cat.RecordingError as e:
            return str(e)
        shutil.rmtree(self._out_dir(rec_id), ignore_errors=True)
        return f"Deleted {rec_id}."


def build_review_tab(recordings_root: Path) -> None:
    """Add the Review tab's components inside the caller's Blocks/Tab context."""
    try:
        import gradio as gr
    except ImportError:
        raise RuntimeError("the Review tab needs gradio: pip install -r requirements.txt") from None
    review = Review(Path(recordings_root), Path(tempfile.mkdtemp(prefix="aura-review-")))

    def refresh():
        rows = review.rows()
        return rows, gr.update(choices=[r[0] for r in rows])

    def open_one(rec_id, kinds):
        if not rec_id:
            return (None, None, None, "", "", [], [], [], "Pick a recording.")
        try:
            got = review.open(rec_id)
        except (RuntimeError, OSError) as e:  # ffmpeg or disk trouble: say so in the tab
            return (None, None, None, "", "", [], [], [], f"Cannot open {rec_id}: {e}")
        if got["error"]:
            return (None, None, None, "", "", [], [], [], got["error"])
        return ((str(got["video"]), str(got["captions"])), track(got["mic"], "Your microphone"),
                track(got["assistant"], "AURA's voice"), got["summary"], got["timeline"],
                got["events"], review.event_rows(got["events"], kinds), got["notes"], "")

    def track(path, label):
        if path is None:
            return gr.update(value=None, label=f"{label} (nothing recorded)")
        return gr.update(value=str(path), label=label)

    def export_one(rec_id):
        try:
            return str(review.export(rec_id)), ""
        except (cat.RecordingError, ValueError, RuntimeError, OSError) as e:
            return None, f"Export failed: {e}"

    def after_note(rec_id, message):
        """Notes table, timeline, status, and the note-number box cleared for a new note."""
        try:
            return review.note_rows(rec_id), review.timeline(rec_id), message, ""
        except cat.RecordingError as e:
            return [], "", str(e), ""

    def save_note(rec_id, n, at, kind, text):
        return after_note(rec_id, review.save_note(rec_id, str(n or "").strip(), at, kind, text))

    def delete_note(rec_id, n):
        return after_note(rec_id, review.delete_note(rec_id, str(n or "").strip() or None))

    def pick_note(rec_id, rows, evt: gr.SelectData):
        rows = rows.values.tolist() if hasattr(rows, "values") else rows
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        try:
            n = int(rows[int(index)][0])
            a = next(a for a in notes.load(cat.resolve(review.root, rec_id)) if a.n == n)
        except (IndexError, TypeError, ValueError, StopIteration):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return str(a.n), f"{a.t:g}", a.kind, a.text

    def delete_one(rec_id, confirmed):
        message = review.delete(rec_id, confirmed)
        rows, choices = refresh()
        return rows, choices, False, message

    def pick(rows, evt: gr.SelectData):
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return review.jump_time(rows.values.tolist() if hasattr(rows, "values") else rows, int(index))

    gr.Markdown("Recorded sessions. Pick one to play it back: left channel is you, right is AURA.")
    with gr.Row():
        refresh_btn = gr.Button("Refresh list", scale=0)
        choice = gr.Dropdown(label="Recording", choices=review.ids(), scale=3)
        open_btn = gr.Button("Open", variant="primary", scale=0)
    table = gr.Dataframe(headers=HEADERS, value=review.rows(), interactive=False, datatype="str",
                         label="Recordings")
    message = gr.Textbox(label="Status", interactive=False, max_lines=2)
    with gr.Row():
        video = gr.Video(label="Playback with captions", elem_id="aura-review-video",
                         interactive=False, scale=3)
        summary = gr.Textbox(label="Summary", interactive=False, lines=14, scale=2)
    with gr.Accordion("Separate audio tracks", open=False):
        mic = gr.Audio(label="Your microphone", interactive=False, type="filepath")
        voice = gr.Audio(label="AURA's voice", interactive=False, type="filepath")
    timeline = gr.HTML()
    with gr.Group(elem_id="aura-review-note-editor"):
        gr.Markdown("**Notes**: mark what AURA should have done at a moment; each note belongs to "
                    "the chunk it corrects. `launch.py finetune` learns from them.")
        with gr.Row():
            note_at = gr.Textbox(label="At (s)", placeholder="seconds", max_lines=1, scale=1)
            here_btn = gr.Button("Use player time", scale=0)
            note_kind = gr.Radio([(label, key) for key, label in notes.KINDS.items()], value="say",
                                 label="AURA", scale=3)
        note_text = gr.Textbox(label="Text (what AURA should have said)", max_lines=3,
                               max_length=notes.MAX_TEXT)
        with gr.Row():
            note_n = gr.Textbox(label="Note # (empty: a new note)", max_lines=1, scale=1)
            save_note_btn = gr.Button("Save note", variant="primary", scale=0)
            new_note_btn = gr.Button("New note", scale=0)
            delete_note_btn = gr.Button("Delete note", variant="stop", scale=0)
        notes_table = gr.Dataframe(headers=NOTE_HEADERS, interactive=False, datatype="str", wrap=True,
                                   label="Notes (click one to edit it)", elem_id="aura-review-notes")
    kinds = gr.CheckboxGroup(list(KINDS), value=DEFAULT_KINDS, label="Show events")
    events_state = gr.State([])
    events_table = gr.Dataframe(headers=EVENT_HEADERS, interactive=False, datatype="str",
                                label="Events (click a row to jump there)", wrap=True,
                                elem_id="aura-review-events")
    with gr.Row():
        # a Textbox, not a Number: gr.Number shows 0 while nothing is chosen
        jump_t = gr.Textbox(label="Jump to (s)", value="", placeholder="seconds, e.g. 12.5",
                            max_lines=1, scale=1)
        jump_btn = gr.Button("Jump", scale=0)
    with gr.Row():
        export_btn = gr.Button("Export zip", scale=0)
        download = gr.File(label="Download", interactive=False, scale=2)
    with gr.Row():
        confirm = gr.Checkbox(label="Yes, delete this recording", value=False)
        delete_btn = gr.Button("Delete", variant="stop", scale=0)

    refresh_btn.click(refresh, None, [table, choice])
    outputs = [video, mic, voice, summary, timeline, events_state, events_table, notes_table, message]
    open_btn.click(open_one, [choice, kinds], outputs)
    choice.input(open_one, [choice, kinds], outputs)
    kinds.change(review.event_rows, [events_state, kinds], events_table)
    events_table.select(pick, [events_table], jump_t).then(None, [jump_t], None, js=JUMP_JS)
    jump_btn.click(None, [jump_t], None, js=JUMP_JS)
    export_btn.click(export_one, [choice], [download, message])
    here_btn.click(None, None, note_at, js=PLAYER_TIME_JS)
    note_out = [notes_table, timeline, message, note_n]
    save_note_btn.click(save_note, [choice, note_n, note_at, note_kind, note_text], note_out)
    delete_note_btn.click(delete_note, [choice, note_n], note_out)
    new_note_btn.click(lambda: ("", ""), None, [note_n, note_text])
    notes_table.select(pick_note, [choice, notes_table], [note_n, note_at, note_kind, note_text])
    delete_btn.click(delete_one, [choice, confirm], [table, choice, confirm, message])
