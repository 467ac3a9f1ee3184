"""speech.tts: voices through the real adapters, sentence streaming, cancel, CLI."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.clock import MonotonicClock
from app.config import SpeechConfig
from app.events import ReplyDelta
from speech.tts import TTSStream, TtsError, TtsLoadError, load_voice
from speech.audio import read_audio

ROOT = Path(__file__).resolve().parents[2]


class ToneVoice:
    """A file-free voice twin: 50 ms of tone per word, optionally slow, optionally failing."""
    sample_rate = 16000
    description = "tone"

    def __init__(self, delay_s=0.0, fail_on=None):
        self.delay_s, self.fail_on, self.calls = delay_s, fail_on, []
        self.started = threading.Event()

    def synthesize(self, text):
        self.calls.append(text)
        self.started.set()
        time.sleep(self.delay_s)
        if self.fail_on and self.fail_on in text:
            raise TtsError(f"cannot say {text!r}")
        return np.full(800 * len(text.split()), 0.1, np.float32)


class Collector:
    def __init__(self):
        self.items, self.errors, self.cond = [], [], threading.Condition()

    def __call__(self, audio):
        with self.cond:
            self.items.append(audio)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=20.0):
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.items), timeout), self.items


def _delta(rid, text):
    return ReplyDelta(t_s=0.0, reply_id=rid, text=text)


def test_sentences_stream_in_order_before_the_reply_ends():
    """The first sentence must be spoken while the reply is still being written, and
    every sentence must come out once, in order, the final one marked last."""
    got = Collector()
    stream = TTSStream(ToneVoice(), got, MonotonicClock())
    try:
        stream.feed(_delta("r1", "Hello **there**! I see a"))
        got.wait_for(lambda items: len(items) == 1)        # no end() yet
        assert got.items[0].text == "Hello there!" and not got.items[0].last
        stream.feed(_delta("r1", " cup. It is red 😀. And"))
        stream.feed(_delta("r1", " small"))
        stream.end("r1")
        got.wait_for(lambda items: items and items[-1].last)
        assert [a.text for a in got.items] == ["Hello there!", "I see a cup.", "It is red .", "And small"]
        assert [a.sentence_index for a in got.items] == [0, 1, 2, 3]
        assert all(a.reply_id == "r1" and a.sample_rate == 16000 and len(a.pcm) for a in got.items)
    finally:
        stream.close()


def test_end_after_everything_was_spoken_emits_a_last_marker():
    """Listeners must learn that a reply's audio is complete even when end() arrives
    after the last sentence was already synthesised."""
    got = Collector()
    stream = TTSStream(ToneVoice(), got, MonotonicClock())
    try:
        stream.feed(_delta("r1", "Done. "))
        got.wait_for(lambda items: len(items) == 1)
        stream.end("r1")
        got.wait_for(lambda items: len(items) == 2)
        marker = got.items[1]
        assert marker.last and len(marker.pcm) == 0 and marker.sentence_index == 1
    finally:
        stream.close()


def test_cancel_drops_queued_and_in_flight_audio_quickly():
    """Barge-in: after cancel() returns (well under 150 ms, without waiting for the
    synthesis in flight) no audio of that reply may be emitted; late deltas for it are
    ignored; the next reply is spoken normally."""
    got = Collector()
    voice = ToneVoice(delay_s=0.4)
    stream = TTSStream(voice, got, MonotonicClock())
    try:
        stream.feed(_delta("r1", "One. Two. Three. Four. "))
        assert voice.started.wait(5)
        t0 = time.perf_counter()
        stream.cancel("r1")
        cancel_s = time.perf_counter() - t0
        assert cancel_s < 0.15
        stream.feed(_delta("r1", "Five. "))
        stream.end("r1")
        stream.feed(_delta("r2", "Next reply."))
        stream.end("r2")
        got.wait_for(lambda items: any(a.reply_id == "r2" and a.last for a in items))
        assert [a.reply_id for a in got.items] == ["r2"]
        assert voice.calls == ["One.", "Next reply."]
    finally:
        stream.close()


def test_synthesis_failure_is_an_error_event_and_the_reply_goes_on():
    """A sentence the voice cannot say must surface as a non-fatal ErrorEvent; the other
    sentences are still spoken and the reply still ends."""
    got, errors = Collector(), []
    stream = TTSStream(ToneVoice(fail_on="bad"), got, MonotonicClock(), on_error=errors.append)
    try:
        stream.feed(_delta("r1", "Good one. A bad one. Good two."))
        stream.end("r1")
        got.wait_for(lambda items: items and items[-1].last)
        assert [a.text for a in got.items] == ["Good one.", "Good two."]
        assert len(errors) == 1 and errors[0].source == "tts" and not errors[0].fatal
    finally:
        stream.close()


def test_espeak_voice_streams_real_speech():
    """--tts espeak is a real offline voice: each sentence becomes audible audio."""
    voice = load_voice(SpeechConfig(tts="espeak"))
    got = Collector()
    stream = TTSStream(voice, got, MonotonicClock())
    try:
        stream.feed(_delta("r", "What a nice day. The cup is blue."))
        stream.end("r")
        got.wait_for(lambda items: items and items[-1].last)
        assert [a.sentence_index for a in got.items] == [0, 1]
        assert all(a.sample_rate == voice.sample_rate and np.max(np.abs(a.pcm)) > 0.05 for a in got.items)
    finally:
        stream.close()
    with pytest.raises(TtsLoadError):
        load_voice(SpeechConfig(tts="espeak", espeak_voice="--help"))
    with pytest.raises(TtsLoadError, match="does not work"):
        load_voice(SpeechConfig(tts="espeak", espeak_voice="xx-nope"))


def test_tiny_coqui_vits_loads_through_the_real_adapter(tiny_models):
    """The tiny VITS goes through load_voice exactly like a real Coqui model and
    produces audio for each sentence of a streamed reply, in order."""
    voice = load_voice(SpeechConfig(tts="coqui", tts_model=str(tiny_models["vits"]), tts_device="cpu"))
    assert voice.sample_rate == 22050 and "Coqui" in voice.description
    got = Collector()
    stream = TTSStream(voice, got, MonotonicClock())
    try:
        stream.feed(_delta("r", "Hello there. What is"))
        stream.feed(_delta("r", " on the table?"))
        stream.end("r")
        got.wait_for(lambda items: items and items[-1].last, timeout=60)
        assert [a.text for a in got.items] == ["Hello there.", "What is on the table?"]
        assert all(a.pcm.dtype == np.float32 and len(a.pcm) > 1000 for a in got.items)
    finally:
        stream.close()


def test_bad_coqui_settings_are_clear_errors(tmp_path):
    """A folder without a checkpoint, or a nonsense model name, must be a TtsLoadError."""
    with pytest.raises(TtsLoadError, match="not a Coqui model directory"):
        load_voice(SpeechConfig(tts_model=str(tmp_path), tts_device="cpu"))
    with pytest.raises(TtsLoadError, match="not a directory, a Coqui model name .* or a Hugging Face id"):
        load_voice(SpeechConfig(tts_model="no-such-voice", tts_device="cpu"))


def test_cli_writes_speech_and_fails_cleanly(tmp_path):
    """`python -m speech.tts TEXT --out F.wav --tts espeak` writes audible speech; an
    unspeakable text or a bad output path is one line and exit code 2."""
    out = tmp_path / "hello.wav"
    done = subprocess.run([sys.executable, "-m", "speech.tts", "Hello there. How are you?", "--out", str(out),
                           "--tts", "espeak"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pcm, rate = read_audio(out)
    assert rate == 22050 and len(pcm) > rate and np.max(np.abs(pcm)) > 0.05
    for args in (["😀", "--out", str(out)], ["hi", "--out", str(tmp_path / "missing" / "x.wav")],
                 ["hi", "--out", str(tmp_path / "x.mp3")]):
        bad = subprocess.run([sys.executable, "-m", "speech.tts", *args, "--tts", "espeak"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_an_unexpected_voice_failure_does_not_kill_the_stream():
    """A bug inside a voice (not a TtsError) must be reported and must not stop the
    worker: later replies are still spoken."""
    class Broken(ToneVoice):
        def synthesize(self, text):
            if "boom" in text:
                raise ZeroDivisionError("boom")
            return super().synthesize(text)
    got, errors = Collector(), []
    stream = TTSStream(Broken(), got, MonotonicClock(), on_error=errors.append)
    try:
        stream.feed(_delta("r1", "boom."))
        stream.end("r1")
        stream.feed(_delta("r2", "Still here."))
        stream.end("r2")
        got.wait_for(lambda items: any(a.reply_id == "r2" and a.last for a in items))
        assert "ZeroDivisionError" in errors[0].message
        assert [(a.reply_id, a.text) for a in got.items] == [("r1", ""), ("r2", "Still here.")]
    finally:
        stream.close()
