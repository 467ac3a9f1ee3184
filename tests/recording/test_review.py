"""The Review tab: its callbacks as plain functions, escaping, refusal of bad ids, a render."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from app import events as ev
from tests.recording.conftest import record_story
from ui.review import Review, timeline_html

EVIL_Q = "<script>window.__pwned=1</script>what?"
EVIL_A = "<img src=x onerror=\"window.__pwned=2\">ok"


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """A recording whose transcript and reply carry markup."""
    story = [
        (1.0, ev.StatusChanged(1.0, "watching")),  # no video at all: allowed (audio-only)
        (1.0, ev.UserText(1.0, EVIL_Q, "typed")),
        (1.05, ev.StepDecision(1.05, "speak", 0.2, 300, 40.0, 0, EVIL_Q)),
        (1.05, ev.ReplyStarted(1.05, "r0", False)),
        (1.3, ev.ReplyEnded(1.3, "r0", EVIL_A, False, 70.0, 5)),
        (1.4, ev.ErrorEvent(1.4, "asr", "<b>bad</b> thing")),
    ]
    return record_story(tmp_path_factory.mktemp("evil"), story, session_id="evil")


def test_rows_list_the_recordings(recorded_copy, tmp_path):
    """Guards against the list missing a recording or its counts."""
    rows = Review(recorded_copy.root, tmp_path / "work").rows()
    assert len(rows) == 1
    rid, _started, length, questions, replies, proactive, _size, status = rows[0]
    assert rid == recorded_copy.path.name and (questions, replies, proactive) == (1, 2, 1)
    assert length.startswith("0:0") and status == "complete"


def test_open_renders_player_files_inside_the_work_dir(recorded_copy, tmp_path):
    """Guards against a player without video/voices/captions, or files served from
    outside the tab's work folder."""
    work = tmp_path / "work"
    got = Review(recorded_copy.root, work).open(recorded_copy.path.name)
    assert got["error"] is None
    for key in ("video", "captions", "mic", "assistant"):
        assert got[key].is_file() and got[key].resolve().is_relative_to(work.resolve())
    assert "AURA: There is a red cup" in got["captions"].read_text()
    assert "questions: 1; replies: 2" in got["summary"]
    first_mtime = got["video"].stat().st_mtime_ns
    again = Review(recorded_copy.root, work).open(recorded_copy.path.name)
    assert again["video"].stat().st_mtime_ns == first_mtime  # finished recordings are cached


@pytest.mark.parametrize("bad", ["../../etc", "..", "/etc/passwd", "20260101-000000-x/../..", ""])
def test_bad_ids_are_refused_without_touching_files(recorded_copy, tmp_path, bad):
    """Guards against path traversal through the tab's recording picker."""
    review = Review(recorded_copy.root, tmp_path / "work")
    assert review.open(bad)["error"]
    assert "refused" in review.delete(bad, True) or "not a recording id" in review.delete(bad, True)
    with pytest.raises(ValueError):
        review.export(bad)
    assert not (tmp_path / "work").exists() and recorded_copy.path.exists()


def test_recording_text_is_escaped_in_the_timeline(evil, tmp_path):
    """Guards against XSS: transcripts, replies and errors are shown escaped."""
    got = Review(evil.root, tmp_path / "work").open(evil.path.name)
    page = got["timeline"]
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=" in page
    assert "&lt;script&gt;" in got["captions"].read_text()


def test_event_rows_filter_and_jump(recorded, tmp_path):
    """Guards against the timeline list ignoring the filter or jumping to a wrong time."""
    from app.recording import library as cat
    events = cat.read_events(recorded.path / "events.jsonl")
    rows = Review.event_rows(events, ["decisions"])
    assert len(rows) == 9 and all(r[1] == "step" for r in rows)
    assert "p_silent=0.100" in rows[3][2] and "question: What is on the table?" in rows[3][2]
    both = Review.event_rows(events, ["decisions", "replies"])
    assert {r[1] for r in both} == {"step", "reply_start", "reply", "tts_audio", "barge_in"}
    assert Review.jump_time(rows, 3) == "3.35" and rows[3][0] == 3.35
    assert Review.jump_time(rows, 99) == ""
    assert Review.event_rows(events, []) == []


def test_export_and_delete_from_the_tab(recorded_copy, tmp_path):
    """Guards against the download button producing nothing, and delete without confirmation."""
    review = Review(recorded_copy.root, tmp_path / "work")
    rid = recorded_copy.path.name
    out = review.export(rid)
    assert out.resolve().is_relative_to((tmp_path / "work").resolve())
    with zipfile.ZipFile(out) as z:
        assert f"{rid}/{rid}.mp4" in z.namelist()
    assert review.delete(rid, False).startswith("Tick") and recorded_copy.path.exists()
    assert review.delete(rid, True) == f"Deleted {rid}."
    assert not recorded_copy.path.exists() and review.rows() == []


def test_timeline_marks_decisions_by_p_silent():
    """Guards against a timeline that hides which steps spoke."""
    page = timeline_html([{"t": 1.0, "type": "step", "decision": "speak", "p_silent": 0.0},
                          {"t": 2.0, "type": "step", "decision": "silent", "p_silent": 1.0}], 4.0)
    assert "rgba(230,120,20,1.00)" in page and "rgba(120,120,120,0.25)" in page
    assert "left:25.000%" in page and "left:50.000%" in page


def test_tab_builds_inside_blocks(recorded):
    """Guards against a tab that fails to build in the lead's Blocks/Tab context."""
    import gradio as gr

    from ui.review import build_review_tab
    with gr.Blocks() as demo:
        with gr.Tab("Review"):
            build_review_tab(recorded.root)
    config = demo.get_config_file()
    ids = [c.get("props", {}).get("elem_id") for c in config["components"]]
    assert "aura-review-video" in ids
    tables = [c for c in config["components"] if c.get("type") == "dataframe"]
    assert tables and recorded.path.name in str(tables[0]["props"]["value"])


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    """A replay-like recording: a typed question, silent steps, no microphone, no voice."""
    story = [(0.5, ev.VideoChunk(0.5, 0.0, (np.full((48, 64, 3), 90, np.uint8),), 0)),
             (0.55, ev.StepDecision(0.55, "silent", 0.9, 100, 30.0, 0, None)),
             (0.8, ev.UserText(0.8, "anything new?", "typed")),
             (1.0, ev.VideoChunk(1.0, 0.5, (np.full((48, 64, 3), 120, np.uint8),), 1)),
             (1.05, ev.StepDecision(1.05, "silent", 0.8, 150, 30.0, 1, "anything new?")),
             (2.0, ev.VideoChunk(2.0, 1.0, (np.full((48, 64, 3), 150, np.uint8),), 2)),
             (2.05, ev.StepDecision(2.05, "silent", 0.95, 200, 30.0, 2, None))]
    return record_story(tmp_path_factory.mktemp("quiet"), story, session_id="quiet")


def test_empty_voice_tracks_are_not_handed_to_the_player(quiet, tmp_path):
    """Guards against the page throwing "Unable to decode audio data" (issue 13 item 9): a
    recording whose tracks hold no samples must not give the audio players a WAV."""
    got = Review(quiet.root, tmp_path / "work").open(quiet.path.name)
    assert got["error"] is None and got["video"].is_file()
    assert got["mic"] is None and got["assistant"] is None
    assert not (tmp_path / "work" / quiet.path.name / "assistant.wav").exists()


def test_export_writes_no_empty_caption_file(quiet, tmp_path):
    """Guards against an empty assistant.srt in the export (issue 13 item 9): a side that never
    spoke gets no caption files, and summary.md says why."""
    out = Review(quiet.root, tmp_path / "work").export(quiet.path.name)
    rid = quiet.path.name
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        summary = z.read(f"{rid}/summary.md").decode()
        user_srt = z.read(f"{rid}/captions/user.srt").decode()
    assert f"{rid}/captions/assistant.srt" not in names and f"{rid}/captions/assistant.vtt" not in names
    assert "anything new?" in user_srt
    assert "No assistant captions: AURA said nothing." in summary
