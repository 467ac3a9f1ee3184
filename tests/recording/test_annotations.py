"""Annotations: the chunk each note names, edits and deletes, bad input, crash safety, the CLI,
the export, and escaping in the Review tab's timeline.

The fake recording (tests/recording/session_fixture.py): chunks 0-2 are whole seconds, chunk 3
is 3.0-3.3 s (closed by the question, its step answers), chunks 4.. are 3.3-4.3, 4.3-5.3, ...;
chunk 6 (5.3-6.3 s) speaks a proactive remark.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app.recording import annotations as notes
from app.recording.annotations import AnnotationError

ROOT = Path(__file__).resolve().parents[2]
EVIL = "<script>window.__pwned=1</script>say \"hi\" & <b>bye</b>"


def test_each_note_names_the_chunk_it_corrects(recorded_copy):
    """Guards against a note pinned to the wrong model step: "should have said" belongs to the
    chunk on screen, "better answer"/"stayed silent" to the step that spoke what is heard."""
    rec = recorded_copy.path
    say = notes.add(rec, 4.5, "say", "The cup is red.")
    assert (say.chunk, round(say.chunk_start_s, 1), round(say.chunk_end_s, 1)) == (5, 4.3, 5.3)
    assert notes.add(rec, 0.0, "say", "Hello.").chunk == 0
    assert notes.add(rec, 4.0, "better", "A red cup.").chunk == 3     # hearing the answer of chunk 3
    assert notes.add(rec, 6.8, "silent").chunk == 6                   # hearing the proactive remark
    with pytest.raises(AnnotationError, match="nothing was said"):
        notes.add(rec, 1.0, "silent")
    assert [a.n for a in notes.load(rec)] == [2, 3, 1, 4]            # by time, numbers kept


def test_moment_reports_what_the_model_did(recorded_copy):
    """Guards against the 'before' of a note (finetune report, replay comparison) being wrong."""
    from app.recording.library import read_events
    events = read_events(recorded_copy.path / "events.jsonl")
    answer = notes.moment(events, 3)
    assert answer["decision"] == "speak" and answer["reply"] == "There is a red cup on the table."
    assert notes.moment(events, 4) == {"decision": "silent", "p_silent": 0.904, "reply": None}


def test_edit_and_delete_keep_numbers(recorded_copy):
    """Guards against edits that renumber notes or lose the others, and silent notes with text."""
    rec = recorded_copy.path
    a = notes.add(rec, 4.5, "say", "one")
    b = notes.add(rec, 7.0, "say", "two")
    c = notes.edit(rec, a.n, kind="silent", t_s=6.5)
    assert (c.n, c.kind, c.text, c.chunk) == (a.n, "silent", "", 6)
    d = notes.edit(rec, b.n, text="  two\nlines\x00 ")
    assert d.text == "two lines" and d.t == 7.0
    assert notes.delete(rec, a.n).n == a.n
    e = notes.add(rec, 2.5, "say", "three")
    assert [x.n for x in notes.load(rec)] == [e.n, b.n] and e.n == 3
    with pytest.raises(AnnotationError, match="no note number 1"):
        notes.delete(rec, 1)


@pytest.mark.parametrize("t, kind, text, message", [
    (1.0, "shout", "x", "kind must be one of"),
    (1.0, "say", "   ", "needs the text"),
    (1.0, "better", "\x01\ufffd", "needs the text"),
    (1.0, "say", "x" * 2001, "at most 2000"),
    (-1, "say", "x", "outside the recording"),
    (99, "say", "x", "outside the recording"),
    ("nan", "say", "x", "outside the recording"),
    ("soon", "say", "x", "must be a number"),
])
def test_bad_input_is_refused_in_one_line(recorded_copy, t, kind, text, message):
    """Guards against malformed notes reaching the file (and later the training data)."""
    with pytest.raises(AnnotationError, match=message) as got:
        notes.add(recorded_copy.path, t, kind, text)
    assert "\n" not in str(got.value)
    assert not (recorded_copy.path / notes.FILE).exists()


def test_text_is_stored_clean_and_unescaped(recorded_copy):
    """Guards against control characters in a note, and double escaping (viewers escape)."""
    rec = recorded_copy.path
    notes.add(rec, 2.0, "say", EVIL + "\x1b[31m\u200b")
    line = json.loads((rec / notes.FILE).read_text().splitlines()[0])
    assert line["text"] == EVIL + " [31m"
    assert notes.load(rec)[0].text == line["text"]


# A writer that SIGKILLs itself mid-write: after the first line of the new file (KILL_AT=dumps)
# or once the whole temp file is written but not yet renamed (KILL_AT=fsync).
WRITER = """
import os, signal, sys
from pathlib import Path
from app.recording import annotations as notes
rec, where = Path(sys.argv[1]), sys.argv[2]
real_dumps, real_fsync, calls = notes.json.dumps, os.fsync, []
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def dumps(obj, **kw):
    calls.append(1)
    if where == "dumps" and len(calls) == 2:
        die()
    return real_dumps(obj, **kw)
def fsync(fd):
    if where == "fsync":
        die()
    return real_fsync(fd)
notes.json.dumps, os.fsync = dumps, fsync
notes.add(rec, 5.0, "say", "the new note")
print("not killed", flush=True)
"""


@pytest.mark.parametrize("where", ["dumps", "fsync"])
def test_annotations_survive_a_crash_mid_write(recorded_copy, where):
    """Guards against a torn or lost annotations.jsonl: a writer killed (SIGKILL) in the middle
    of rewriting it leaves the previous notes whole, and the next write clears its temp file."""
    rec = recorded_copy.path
    before = [notes.add(rec, 2.0, "say", "first"), notes.add(rec, 6.8, "silent")]
    done = subprocess.run([sys.executable, "-c", WRITER, str(rec), where], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert list(rec.glob(notes.FILE + ".tmp-*")), "the kill did not land mid-write"
    lines = (rec / notes.FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["n"] for x in lines] == [1, 2]          # every line whole, none lost
    assert notes.load(rec) == sorted(before, key=lambda a: a.t)
    after = notes.add(rec, 3.0, "say", "after")
    assert after.n == 3 and not list(rec.glob(notes.FILE + ".tmp-*"))
    assert len(notes.load(rec)) == 3


def test_cli_annotate_list_delete(recorded_copy, capsys):
    """Guards the scripted review path: launch.py annotate adds, lists and deletes notes, and
    bad input is one line on stderr with exit code 2."""
    sys.path.insert(0, str(ROOT))
    import launch
    rec = str(recorded_copy.path)
    assert launch.cmd_annotate([rec, "--at", "4.5", "--say", "The cup is red."]) == 0
    assert launch.cmd_annotate([rec, "--at", "6.8", "--silent"]) == 0
    assert launch.cmd_annotate([rec, "--at", "4.0", "--better", "A red cup."]) == 0
    capsys.readouterr()
    assert launch.cmd_annotate([rec, "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "#3" in out[0] and "better answer: A red cup." in out[0]
    assert "chunk 5 (4.30-5.30 s)  should have said: The cup is red." in out[1]
    assert launch.cmd_annotate([rec, "--delete", "2"]) == 0
    assert [a.n for a in notes.load(recorded_copy.path)] == [3, 1]
    for bad in ([rec, "--at", "1.0", "--silent"], [rec, "--say", "x"], [rec, "--delete", "9"],
                [rec, "--at", "1", "--list"], [rec, "--at", "1", "--say", "x", "--silent"],
                [str(recorded_copy.root), "--list"], [rec, "--delete", "two"], [rec]):
        capsys.readouterr()
        code = _exit_code(launch.cmd_annotate, bad)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (bad, err)


def _exit_code(command, argv) -> int:
    """The exit code whether the command returns it or argparse exits with it."""
    try:
        return command(argv)
    except SystemExit as stop:
        return stop.code


def test_export_holds_the_notes(recorded_copy, tmp_path):
    """Guards against notes missing from the shared bundle."""
    from app.recording.export import export
    notes.add(recorded_copy.path, 4.5, "say", EVIL)
    notes.add(recorded_copy.path, 6.8, "silent")
    rid = recorded_copy.path.name
    with zipfile.ZipFile(export(recorded_copy.path, tmp_path / "out.zip")) as z:
        lines = z.read(f"{rid}/annotations.jsonl").decode().splitlines()
        summary = z.read(f"{rid}/summary.md").decode()
    assert [json.loads(x)["kind"] for x in lines] == ["say", "silent"]
    assert "## Annotations" in summary and "should have stayed silent" in summary
    assert "should have said: <script>" in summary  # summary.md is plain text, like the transcript


def test_timeline_shows_notes_escaped(recorded_copy, tmp_path):
    """Guards against notes missing from the timeline, or their text running as markup."""
    from ui.review import Review
    notes.add(recorded_copy.path, 4.5, "say", EVIL)
    got = Review(recorded_copy.root, tmp_path / "work").open(recorded_copy.path.name)
    page = got["timeline"]
    assert "aura-note" in page and "<script" not in page and "<b>" not in page
    assert "should have said: &lt;script&gt;" in page
