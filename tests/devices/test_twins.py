"""app.devices twins and cameras: the data and timing contracts the pipeline relies on."""
import subprocess

import numpy as np
import pytest

from app.clock import ManualClock
from app.devices.base import Camera, DeviceError, Microphone, PlaybackReference, Speaker, parse_device
from app.devices.camera import FileCamera, OpenCVCamera
from app.devices.listing import list_devices
from app.devices.twins import WavMicrophone, WavSpeaker
from app.events import SpeechAudio
from speech.audio import BLOCK_S, BLOCK_SAMPLES, SAMPLE_RATE, read_audio, write_wav


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    t = np.arange(int(2.0 * 44100)) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    write_wav(d / "tone44k.wav", stereo.mean(axis=1), 44100)
    import soundfile as sf
    sf.write(str(d / "stereo44k.wav"), stereo, 44100)
    for ext in ("y4m", "mp4"):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                        "-t", "2", "-pix_fmt", "yuv420p", str(d / f"cam.{ext}")], check=True)
    return d


def test_twins_satisfy_the_protocols(media):
    """The pipeline types against the protocols; twins must be drop-in replacements."""
    clock = ManualClock()
    assert isinstance(WavMicrophone(media / "tone44k.wav", clock), Microphone)
    speaker = WavSpeaker(clock)
    assert isinstance(speaker, Speaker) and isinstance(speaker, PlaybackReference)
    assert isinstance(FileCamera(media / "cam.mp4", clock), Camera)
    assert isinstance(OpenCVCamera(0), Camera)
    assert parse_device("") is None and parse_device(" 3 ") == 3 and parse_device("USB Mic") == "USB Mic"


def test_wav_microphone_blocks_match_the_real_microphone_contract(media):
    """Any-rate stereo files must come out as 512-sample 16 kHz mono float32 blocks with
    capture times 32 ms apart, like SoundDeviceMicrophone's."""
    mic = WavMicrophone(media / "stereo44k.wav", ManualClock())
    blocks = list(mic.blocks(t0=5.0))
    assert len(blocks) == int(np.ceil(2.0 * SAMPLE_RATE / BLOCK_SAMPLES))
    assert all(b.pcm.shape == (BLOCK_SAMPLES,) and b.pcm.dtype == np.float32 and b.sample_rate == SAMPLE_RATE
               for b in blocks)
    np.testing.assert_allclose([b.t_s for b in blocks], 5.0 + np.arange(len(blocks)) * BLOCK_S)
    level = np.sqrt(np.mean(np.concatenate([b.pcm for b in blocks[2:-2]]) ** 2))
    assert level == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_wav_microphone_is_paced_by_the_clock_and_reports_bad_files(media, tmp_path):
    """start() must deliver each block only once the clock has passed its end (as a
    real device would), every block exactly once; a missing file is an ErrorEvent."""
    clock = ManualClock(10.0)
    mic = WavMicrophone(media / "tone44k.wav", clock)
    got, errors = [], []

    def on_block(block):
        assert clock.now() >= block.t_s + BLOCK_S - 1e-9
        got.append(block)
    mic.start(on_block, errors.append)
    assert mic.finished.wait(10)
    mic.stop()
    assert errors == [] and len(got) == len(list(mic.blocks()))
    assert got[0].t_s == 10.0
    bad = WavMicrophone(tmp_path / "missing.wav", clock)
    bad.start(got.append, errors.append)
    assert len(errors) == 1 and errors[0].source == "mic" and "no such file" in errors[0].message
    looped = WavMicrophone(media / "tone44k.wav", clock, loop=True).blocks()
    assert len([b for _, b in zip(range(200), looped)]) == 200


def _say(rid, seconds, index=0, rate=22050):
    return SpeechAudio(t_s=0.0, reply_id=rid, pcm=np.full(int(seconds * rate), 0.25, np.float32), sample_rate=rate,
                       sentence_index=index)


def test_wav_speaker_queues_flushes_and_renders_like_a_real_one():
    """Sentences play back to back; flush cuts the reply at 'now' and lets the next
    reply move up; playing() and played_audio() follow what was really audible."""
    clock = ManualClock(1.0)
    spk = WavSpeaker(clock)
    spk.play(_say("a", 1.0, 0))
    spk.play(_say("a", 1.0, 1))
    spk.play(_say("b", 0.5))
    segs = spk.segments()
    assert [(s.reply_id, round(s.start_s, 3)) for s in segs] == [("a", 1.0), ("a", 2.0), ("b", 3.0)]
    assert spk.playing() == "a"
    clock.set(1.5)
    spk.flush("a")
    assert [(s.reply_id, round(s.start_s, 3), round(s.end_s, 3)) for s in spk.segments()] == \
        [("a", 1.0, 1.5), ("b", 1.5, 2.0)]
    assert spk.playing() == "b"
    out = spk.played_audio(0.5, int(2.0 * SAMPLE_RATE))
    edge = 100     # resampling ringing at the steps
    assert np.all(out[:SAMPLE_RATE // 2] == 0)
    for a_s, b_s in ((1.0, 1.5), (1.5, 2.0)):      # "a" cut at 1.5, then "b" moved up
        part = out[int((a_s - 0.5) * SAMPLE_RATE) + edge:int((b_s - 0.5) * SAMPLE_RATE) - edge]
        assert np.all(np.abs(part - 0.25) < 5e-3)
    assert np.all(out[int(1.5 * SAMPLE_RATE) + edge:] == 0)
    clock.set(2.5)
    assert spk.playing() is None
    spk.flush()
    spk.stop()
    spk.play(_say("c", 1.0))
    assert [s.reply_id for s in spk.segments()] == ["a", "b"]


def test_wav_speaker_writes_what_it_played(tmp_path):
    """The recorded output can be saved and listened to (regression runs, replays)."""
    clock = ManualClock()
    spk = WavSpeaker(clock)
    spk.play(_say("a", 0.5))
    spk.write_wav(tmp_path / "out.wav")
    pcm, rate = read_audio(tmp_path / "out.wav")
    assert rate == SAMPLE_RATE and len(pcm) == SAMPLE_RATE // 2 and abs(np.median(pcm) - 0.25) < 1e-3


@pytest.mark.parametrize("ext", ["y4m", "mp4"])
def test_file_camera_follows_the_clock(media, ext):
    """Frame i is 'captured' at t0 + i/fps; latest() returns the newest frame due, RGB
    uint8; at the end the last frame stays (or the file loops)."""
    clock = ManualClock(3.0)
    cam = FileCamera(media / f"cam.{ext}", clock)
    cam.start()
    assert cam.fps == 10.0
    seen = []
    for t in (3.0, 3.05, 3.1, 3.55, 4.95, 6.0):
        clock.set(t)
        frame = cam.latest()
        seen.append(round(frame.t_s, 3))
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
    assert seen == [3.0, 3.0, 3.1, 3.5, 4.9, 4.9] and cam.finished
    cam.stop()
    loop = FileCamera(media / f"cam.{ext}", ManualClock(), loop=True)
    loop.start()
    loop.clock.set(5.05)
    assert loop.latest().t_s == pytest.approx(5.0) and not loop.finished


def test_opencv_camera_keeps_the_newest_frame_and_fails_clearly(media, tmp_path):
    """The real adapter (here on a video file) keeps delivering fresh RGB frames from its
    thread; a missing source is a one-line DeviceError at start."""
    import time
    cam = OpenCVCamera(str(media / "cam.mp4"))
    cam.start()
    try:
        deadline = time.monotonic() + 5
        while cam.latest() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first = cam.latest()
        time.sleep(0.3)
        later = cam.latest()
        assert first is not None and later.t_s > first.t_s and later.image.shape == (120, 160, 3)
    finally:
        cam.stop()
    with pytest.raises(DeviceError, match="no such video file"):
        OpenCVCamera(str(tmp_path / "none.mp4")).start()
    with pytest.raises(DeviceError, match="cannot be opened"):
        OpenCVCamera(str(media / "tone44k.wav")).start()


def test_list_devices_is_a_readable_table():
    """--list-devices must print both sections and never raise, whatever is attached."""
    text = list_devices()
    assert "Audio devices" in text and "Cameras" in text
    assert isinstance(text, str) and len(text.splitlines()) >= 4


def test_missing_sound_devices_are_clear_errors():
    """A microphone or speaker that does not exist must give one readable line (an
    ErrorEvent for the microphone, DeviceError for the speaker), never a traceback."""
    from app.devices.sound import SoundDeviceMicrophone, SoundDeviceSpeaker
    errors = []
    SoundDeviceMicrophone("no-such-microphone-xyz", ManualClock()).start(lambda b: None, errors.append)
    assert len(errors) == 1 and errors[0].source == "mic" and "no-such-microphone-xyz" in errors[0].message
    with pytest.raises(DeviceError, match="no-such-speaker-xyz"):
        SoundDeviceSpeaker("no-such-speaker-xyz", ManualClock())


def test_clipping_microphone_input_is_reported_once(tmp_path):
    """Clipped input (gain too high) must be surfaced as a non-fatal warning, not crash
    or flood the session; the audio still flows."""
    write_wav(tmp_path / "loud.wav", np.clip(np.sin(np.arange(32000) / 5.0) * 3, -1, 1), 16000)
    clock, blocks, errors = ManualClock(), [], []
    mic = WavMicrophone(tmp_path / "loud.wav", clock)
    mic.start(blocks.append, errors.append)
    assert mic.finished.wait(10)
    assert len(blocks) == 63 and len(errors) == 1 and "clipping" in errors[0].message and not errors[0].fatal
