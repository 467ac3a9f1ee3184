"""The catalogue: listing, strict id -> path resolution (no traversal), deletion."""
from __future__ import annotations

import os

import pytest

from app.recording import library as cat
from app.clock import ManualClock
from app.recording.recorder import Recorder


def test_list_shows_date_length_and_counts(recorded):
    """Guards against the Review list showing wrong lengths or counts."""
    rows = cat.list_recordings(recorded.root)
    assert [r.id for r in rows] == [recorded.path.name]
    row = rows[0]
    assert row.n_questions == 1 and row.n_replies == 2 and row.n_proactive == 1
    assert 8.0 <= row.duration_s <= 9.0  # the barge-in cut the assistant track's tail
    assert row.started[:4] == recorded.path.name[:4] and row.started[10] == " "
    assert row.complete and not row.live and row.size_bytes > 0


@pytest.mark.parametrize("bad", [
    "..", "../etc", "/etc/passwd", "20261124-012611-abc/../../x", "20261124-012611-abc/",
    "20261124-012611-abc\x00", "20261124-012611-../x", "%2e%2e", "", None, 5,
    "20261124-012611-" + "a" * 65,
])
def test_traversal_and_malformed_ids_are_refused(recorded, bad):
    """Guards against path traversal through a recording id (UI or API input)."""
    with pytest.raises(cat.RecordingError):
        cat.resolve(recorded.root, bad)


def test_symlinked_recording_escaping_the_root_is_refused(recorded, tmp_path):
    """Guards against a link inside the root that points at another folder."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "events.jsonl").write_text('{"t": 0, "type": "user", "text": "secret"}\n')
    os.symlink(outside, root / "20260101-000000-link")
    with pytest.raises(cat.RecordingError, match="link"):
        cat.resolve(root, "20260101-000000-link")
    assert cat.list_recordings(root) == []


def test_only_allow_listed_files_are_served(recorded, tmp_path):
    """Guards against reading an arbitrary file through a valid recording id, or a link
    planted in the recording that points outside."""
    rid = recorded.path.name
    assert cat.recording_file(recorded.root, rid, "mic.wav") == recorded.path.resolve() / "mic.wav"
    for name in ("../../etc/passwd", ".lock", "meta.json.tmp", "/etc/passwd"):
        with pytest.raises(cat.RecordingError):
            cat.recording_file(recorded.root, rid, name)
    root = tmp_path / "r"
    (root / rid).mkdir(parents=True)
    os.symlink("/etc/passwd", root / rid / "events.jsonl")
    with pytest.raises(cat.RecordingError):
        cat.recording_file(root, rid, "events.jsonl")


def test_torn_last_line_is_skipped(tmp_path):
    """Guards against a crash-cut events.jsonl making the whole recording unreadable."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"t": 1.0, "type": "user", "text": "hi"}\n{"t": 2.0, "type": "rep')
    assert [e["type"] for e in cat.read_events(path)] == ["user"]


def test_delete_refuses_a_live_recording_and_removes_a_finished_one(tmp_path):
    """Guards against deleting the session being recorded, and against delete not deleting."""
    rec = Recorder.open(tmp_path, "live", {}, ManualClock(), lambda e: None)
    rid = rec.path.name
    try:
        assert cat.info(tmp_path, rid).live
        with pytest.raises(cat.RecordingError, match="still being written"):
            cat.delete(tmp_path, rid)
    finally:
        rec.close()
    assert not cat.info(tmp_path, rid).live
    cat.delete(tmp_path, rid)
    assert not rec.path.exists()
    with pytest.raises(cat.RecordingError):
        cat.delete(tmp_path, rid)
