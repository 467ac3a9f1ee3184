"""Export: the zip bundle, caption timing, the stereo mp4, the summary and the CLI."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.recording import library as cat
from app.recording.export import Cue, assistant_cues, export, preview, to_srt, to_vtt, user_cues
from app.recording.media import frame_at, iter_video_frames
from tests.recording.session_fixture import ANSWER, PROACTIVE, QUESTION, read_counter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(recorded, tmp_path_factory):
    out = export(recorded.path, tmp_path_factory.mktemp("export") / "bundle.zip")
    dest = out.parent / "x"
    with zipfile.ZipFile(out) as z:
        z.extractall(dest)
    return dest / recorded.path.name


def _cues(text: str) -> list[tuple[float, float, str]]:
    out = []
    for m in re.finditer(r"(\d\d):(\d\d):(\d\d)[,.](\d{3}) --> (\d\d):(\d\d):(\d\d)[,.](\d{3})\n(.+)", text):
        g = [int(x) for x in m.groups()[:8]]
        out.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000,
                    g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000, m.group(9)))
    return out


def test_zip_holds_the_whole_bundle(bundle, recorded):
    """Guards against an export missing a promised file."""
    names = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    rid = recorded.path.name
    assert names == {f"{rid}.mp4", "events.jsonl", "meta.json", "summary.md",
                     "captions/user.srt", "captions/user.vtt",
                     "captions/assistant.srt", "captions/assistant.vtt"}
    assert (bundle / "events.jsonl").read_bytes() == (recorded.path / "events.jsonl").read_bytes()


def test_caption_timing_follows_speech_and_audio(bundle, recorded):
    """Guards against captions at the wrong time: the question spans the utterance, an
    assistant sentence starts when its audio starts and stops at the barge-in."""
    events = cat.read_events(recorded.path / "events.jsonl")
    speech = next(e for e in events if e["type"] == "speech_end")
    audio = [e for e in events if e["type"] == "tts_audio"]
    barge = next(e for e in events if e["type"] == "barge_in")
    for ext in ("srt", "vtt"):
        user = _cues((bundle / f"captions/user.{ext}").read_text())
        assert user == [(pytest.approx(speech["start_s"], abs=1e-3), pytest.approx(speech["t"], abs=1e-3), QUESTION)]
        bot = _cues((bundle / f"captions/assistant.{ext}").read_text())
        assert [c[2] for c in bot] == [ANSWER, PROACTIVE]
        assert bot[0][0] == pytest.approx(audio[0]["play_s"], abs=1e-3)
        assert bot[0][1] == pytest.approx(audio[0]["play_end_s"], abs=1e-3)
        assert bot[1][0] == pytest.approx(audio[1]["play_s"], abs=1e-3)
        assert bot[1][1] == pytest.approx(barge["t"], abs=1e-3)
    assert (bundle / "captions/user.vtt").read_text().startswith("WEBVTT\n\n")
    assert (bundle / "captions/user.srt").read_text().startswith("1\n")


def test_mp4_has_user_left_assistant_right_and_aligned_video(bundle, recorded):
    """Guards against swapped or mono channels, and video shifted against the audio."""
    import av
    events = cat.read_events(recorded.path / "events.jsonl")
    with av.open(str(bundle / f"{recorded.path.name}.mp4")) as c:
        assert len(c.streams.subtitles) == 2
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    pcm = np.concatenate(chunks, axis=1)  # (2, n) planar float at 48 kHz
    assert pcm.shape[0] == 2

    def rms(ch: int, a: float, b: float) -> float:
        return float(np.sqrt(np.mean(pcm[ch, int(a * 48000):int(b * 48000)] ** 2)))

    speech = next(e for e in events if e["type"] == "speech_end")
    answer = next(e for e in events if e["type"] == "tts_audio")
    assert rms(0, speech["start_s"] + 0.2, speech["t"] - 0.2) > 0.02 > rms(1, speech["start_s"], speech["t"]) * 10
    assert rms(1, answer["play_s"] + 0.2, answer["play_end_s"] - 0.2) > 0.02 > rms(0, answer["play_s"], answer["play_end_s"]) * 10
    frames = list(iter_video_frames(bundle / f"{recorded.path.name}.mp4"))
    for e in events:
        if e["type"] in ("step", "user", "barge_in"):
            assert abs(read_counter(frame_at(frames, e["t"])[1]) - e["t"]) <= 0.5


def test_summary_counts_and_conversation(bundle):
    """Guards against a summary that misreports what happened."""
    text = (bundle / "summary.md").read_text()
    assert "questions: 1; replies: 2 (proactive 1, cancelled 0); barge-ins: 1" in text
    assert f"You: {QUESTION}" in text and f"AURA: {ANSWER}" in text
    assert f"AURA (proactive): {PROACTIVE}" in text
    assert "speech end to first audio: median" in text


def test_caption_text_cannot_inject_markup_or_break_cues():
    """Guards against model/ASR text injecting WebVTT tags or a fake cue via '-->'/newlines."""
    cues = [Cue(1.0, 2.0, "<script>alert(1)</script> & x\n\n00:00:09.000 --> 00:00:10.000\nfake")]
    vtt = to_vtt(cues)
    assert "<script>" not in vtt and "&lt;script&gt;" in vtt and "&amp;" in vtt
    assert len(_cues(vtt)) == 1 and len(_cues(to_srt(cues))) == 1


def test_reply_without_audio_and_typed_question_get_captions():
    """Guards against losing captions when voice is off or the question was typed."""
    events = [
        {"t": 2.0, "type": "user", "text": "typed?", "source": "typed", "speech_end_s": None},
        {"t": 2.5, "type": "reply_start", "reply_id": "a", "proactive": False},
        {"t": 3.0, "type": "reply", "reply_id": "a", "text": "No voice.", "proactive": False},
    ]
    assert user_cues(events) == [Cue(2.0, 3.5, "typed?")]
    assert assistant_cues(events) == [Cue(2.5, 4.0, "No voice.")]


def test_preview_writes_playable_video_and_combined_captions(recorded, tmp_path):
    """Guards against the Review tab's player missing a voice or the captions."""
    out = preview(recorded.path, tmp_path)
    vtt = out["captions"].read_text()
    assert f"You: {QUESTION}" in vtt and f"AURA: {ANSWER}" in vtt
    import av
    with av.open(str(out["video"])) as c:
        assert c.streams.audio[0].channels == 2 and c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AURA_LIVE_SKIP_SETUP="1")
    return subprocess.run([sys.executable, "launch.py", "export", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_exports_and_refuses_a_bad_folder_with_one_line(recorded, tmp_path):
    """Guards against the CLI crashing with a traceback on a wrong path, or not exporting."""
    bad = _cli(str(tmp_path / "nope"), "--out", str(tmp_path / "x.zip"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a recording folder" in bad.stderr and not (tmp_path / "x.zip").exists()
    good = _cli(str(recorded.path), "--out", str(tmp_path / "ok.zip"))
    assert good.returncode == 0, good.stderr
    with zipfile.ZipFile(tmp_path / "ok.zip") as z:
        assert f"{recorded.path.name}/summary.md" in z.namelist()
