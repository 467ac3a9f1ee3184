"""Real-time capture and playback through a PulseAudio null sink (no sound card needed).

The fixture starts a private PulseAudio server (its own socket, no suspend-on-idle, a
null sink "aura_room") as a child process and points this process and its children at
it with PULSE_SERVER / PULSE_SINK / PULSE_SOURCE, so nothing global changes and parallel
test runs cannot disturb each other; each test gets a fresh server. Whatever the speaker (or paplay) plays into the
room, the microphone hears in real time through PortAudio's ALSA "pulse" device. The
server is stopped at the end. Marked slow (tens of seconds)."""
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from app.clock import MonotonicClock
from app.config import SpeechConfig
from app.devices.sound import SoundDeviceMicrophone, SoundDeviceSpeaker
from app.events import SpeechAudio, SpeechEnded, SpeechStarted
from speech.audio import BLOCK_S, SAMPLE_RATE
from speech.echo import EchoGuard
from speech.vad import VadSegmenter
from tests.speech import fixtures as fx

pytestmark = pytest.mark.slow
ROOM = "aura_room"


@dataclass
class PulseRoom:
    sink: str
    server: subprocess.Popen


@pytest.fixture
def pulse_room(tmp_path_factory):
    if not (shutil.which("pulseaudio") and shutil.which("paplay")):
        pytest.skip("pulseaudio / pulseaudio-utils not installed")
    runtime = tmp_path_factory.mktemp("pulse")
    socket = runtime / "native"
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(runtime), PULSE_STATE_PATH=str(runtime / "state"))
    server = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit=yes",
         "-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1",
         "-L", f"module-null-sink sink_name={ROOM}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if socket.exists() or server.poll() is not None:
                break
            time.sleep(0.05)
        if not socket.exists():
            pytest.skip(f"pulseaudio did not start: {server.stderr.read().decode(errors='replace')[-300:]}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PULSE_SERVER", f"unix:{socket}")
            mp.setenv("PULSE_SINK", ROOM)
            mp.setenv("PULSE_SOURCE", f"{ROOM}.monitor")
            import sounddevice as sd
            if not any(d["name"] == "pulse" for d in sd.query_devices()):
                pytest.skip("PortAudio has no 'pulse' device (ALSA PulseAudio plugin missing)")
            yield PulseRoom(ROOM, server)
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=10)


def _warm_up(device, seconds=0.3, timeout=8.0):
    """Wait until a new stream really runs (the ALSA pulse plugin can take ~2 s)."""
    deadline = time.monotonic() + timeout
    while device.frames_done < seconds * device.sample_rate and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device.frames_done >= seconds * device.sample_rate, "the audio device never started"


class LiveMic:
    """Collect a real microphone's blocks on a queue (callbacks only enqueue)."""

    def __init__(self, clock):
        self.mic = SoundDeviceMicrophone("pulse", clock)
        self.blocks, self.errors = queue.Queue(), []
        self.mic.start(self.blocks.put, self.errors.append)
        _warm_up(self.mic)
        self.drain()

    def drain(self):
        out = []
        while not self.blocks.empty():
            out.append(self.blocks.get())
        return out


def test_microphone_captures_in_real_time(pulse_room, three_turns):
    """paplay speaks three utterances into the room; the live microphone must deliver
    contiguous 32 ms blocks whose VAD segments have the file's durations and gaps."""
    path, _pcm, truth = three_turns
    clock = MonotonicClock()
    keep_awake = SoundDeviceSpeaker("pulse", clock)      # an idle player keeps the room running
    live = LiveMic(clock)
    try:
        subprocess.run(["paplay", f"--device={pulse_room.sink}", str(path)], check=True, timeout=30)
        time.sleep(1.0)
    finally:
        live.mic.stop()
        keep_awake.stop()
    blocks = live.drain()
    assert live.errors == [] and len(blocks) > 100
    np.testing.assert_allclose(np.diff([b.t_s for b in blocks]), BLOCK_S, atol=1e-6)
    vad, events = VadSegmenter(SpeechConfig()), []
    for b in blocks:
        events += vad.feed(b)
    events += vad.flush(blocks[-1].t_s + BLOCK_S)
    found = [(s.t_s, e.t_s) for s, e in zip(events[::2], events[1::2])]
    assert len(found) == len(truth)
    for (s, e), (ts, te) in zip(found, truth):
        assert abs((e - s) - (te - ts)) <= 0.15
    gaps = [b[0] - a[1] for a, b in zip(found, found[1:])]
    true_gaps = [b[0] - a[1] for a, b in zip(truth, truth[1:])]
    np.testing.assert_allclose(gaps, true_gaps, atol=0.15)


def test_speaker_plays_flushes_and_keeps_a_reference(pulse_room, speech_dir):
    """The live speaker must report the reply it is playing, stop it on flush within
    150 ms, and remember what it played (the echo reference) at the right times."""
    clock = MonotonicClock()
    errors = []
    speaker = SoundDeviceSpeaker("pulse", clock, on_error=errors.append)
    _warm_up(speaker)
    reply = fx.espeak_16k("This is a fairly long sentence that the assistant is saying out loud.", speech_dir,
                          fx.ASSISTANT_VOICE)
    try:
        t_play = clock.now()
        speaker.play(SpeechAudio(t_s=t_play, reply_id="r1", pcm=reply, sample_rate=SAMPLE_RATE))
        time.sleep(1.0)
        assert speaker.playing() == "r1"
        t_flush = clock.now()
        speaker.flush("r1")
        time.sleep(0.15)
        assert speaker.playing() is None
        time.sleep(0.5)
        ref = speaker.played_audio(t_play - 0.5, int(2.5 * SAMPLE_RATE))
    finally:
        speaker.stop()
    assert errors == []
    loud = np.flatnonzero(np.abs(ref) > 0.01) / SAMPLE_RATE + t_play - 0.5
    lead_s = fx.speech_bounds(reply)[0] / SAMPLE_RATE        # espeak's own leading silence
    assert loud.size and loud[0] - (t_play + lead_s) < 0.5   # heard soon after play()
    assert loud[-1] - t_flush < 0.15                         # silent within 150 ms of flush


def test_live_echo_never_becomes_a_turn_and_a_user_barges_in(pulse_room, speech_dir):
    """Closed loop in real time: the speaker's voice goes into the room and back into
    the microphone. It must not produce a user turn; a person (paplay) talking over it
    must barge in, stop the speaker, and be delivered as an utterance."""
    clock = MonotonicClock()
    speaker = SoundDeviceSpeaker("pulse", clock)
    _warm_up(speaker)
    sentences = ["Sure. I can see a red cup on the wooden table, next to a laptop.",
                 "The cup looks empty. Is there anything else you would like me to watch for?"]
    user = fx.padded_phrase("Stop, what is that on the left?", speech_dir, lead_s=0.0, tail_s=0.3,
                            voice=fx.USER_VOICE)
    guard = EchoGuard(SpeechConfig(), reference=speaker.played_audio)
    live = LiveMic(clock)
    events, barge, t_user = [], [], None
    try:
        for i, s in enumerate(sentences):
            speaker.play(SpeechAudio(t_s=clock.now(), reply_id="r1", sample_rate=SAMPLE_RATE, sentence_index=i,
                                     pcm=0.5 * fx.espeak_16k(s, speech_dir, fx.ASSISTANT_VOICE)))
        player, t_reply = None, clock.now()
        deadline = t_reply + 9.0
        while clock.now() < deadline:
            try:
                block = live.blocks.get(timeout=0.5)
            except queue.Empty:
                continue
            result = guard.process(block, speaker.playing())
            events += [(e, clock.now()) for e in result.events]
            if result.barge_in is not None:
                barge.append((result.barge_in, clock.now()))
                speaker.flush(result.barge_in.reply_id)
            if player is None and clock.now() > t_reply + 3.0:
                t_user = clock.now()
                player = threading.Thread(target=subprocess.run, args=(["paplay", f"--device={pulse_room.sink}",
                                                                        str(user.path)],), daemon=True)
                player.start()
    finally:
        live.mic.stop()
        speaker.stop()
    assert live.errors == []
    before_user = [e for e, seen_at in events if seen_at < t_user]
    assert before_user == []                           # the echo alone never made a turn
    assert len(barge) == 1 and barge[0][0].reply_id == "r1"
    assert 0.3 <= barge[0][1] - t_user <= 2.0          # paplay itself needs a few hundred ms
    kinds = [type(e) for e, _ in events]
    assert kinds == [SpeechStarted, SpeechEnded]


def test_a_vanished_audio_server_is_reported_not_fatal(pulse_room):
    """When the audio system goes away mid-session (unplugged device, crashed server),
    the microphone and speaker must each report one clear ErrorEvent."""
    clock, errors = MonotonicClock(), []
    speaker = SoundDeviceSpeaker("pulse", clock, on_error=errors.append)
    mic = SoundDeviceMicrophone("pulse", clock)
    mic.start(lambda block: None, errors.append)
    try:
        _warm_up(mic)
        pulse_room.server.kill()
        deadline = time.monotonic() + 10
        while len(errors) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        mic.stop()
        speaker.stop()
    assert sorted(e.source for e in errors) == ["mic", "speaker"]
    assert all("unplugged" in e.message and not e.fatal for e in errors)
