"""speech.audio: conversion, streaming resampling, exact 512-sample blocks, file errors."""
import numpy as np
import pytest

from speech.audio import (BLOCK_SAMPLES, SAMPLE_RATE, AudioInputError, ClipMonitor, Reblocker, Resampler,
                          read_audio, resample, to_mono_float32, write_wav)


def test_to_mono_float32_handles_dtypes_and_layouts():
    """Device buffers arrive as int16 frames x channels (PortAudio) or channels x frames
    (WebRTC); both must become the same mono float32 signal in [-1, 1]."""
    mono = np.array([0, 16384, -32768, 32767], np.int16)
    expected = np.array([0, 0.5, -1.0, 32767 / 32768], np.float32)
    np.testing.assert_allclose(to_mono_float32(mono), expected)
    stereo_frames = np.stack([mono, mono], axis=1)          # (4, 2)
    np.testing.assert_allclose(to_mono_float32(stereo_frames), expected)
    webrtc = mono[None, :]                                   # (1, 4)
    np.testing.assert_allclose(to_mono_float32(webrtc), expected)
    wild = np.array([np.nan, np.inf, -5.0, 0.25])
    np.testing.assert_allclose(to_mono_float32(wild), [0, 1, -1, 0.25])
    with pytest.raises(AudioInputError):
        to_mono_float32(np.zeros((2, 2, 2)))
    with pytest.raises(AudioInputError):
        to_mono_float32(np.array(["a"]))


@pytest.mark.parametrize("rates", [(48000, 16000), (44100, 16000), (22050, 16000), (16000, 22050), (8000, 16000)])
def test_streaming_resampler_matches_whole_signal_and_is_accurate(rates):
    """Resampling device buffers of random sizes must give exactly the whole-signal
    result (no clicks at buffer edges) and a faithful waveform (no pitch/level error)."""
    a, b = rates
    t = np.arange(2 * a) / a
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    whole = resample(x, a, b)
    assert len(whole) == int(np.ceil(len(x) * b / a))
    r, parts, i, rng = Resampler(a, b), [], 0, np.random.default_rng(0)
    while i < len(x):
        n = int(rng.integers(1, 2500))
        parts.append(r.feed(x[i:i + n]))
        i += n
    streamed = np.concatenate(parts + [r.flush()])
    np.testing.assert_array_equal(streamed, whole)
    tt = np.arange(len(whole)) / b
    ideal = 0.5 * np.sin(2 * np.pi * 440 * tt) + 0.3 * np.sin(2 * np.pi * 2500 * tt)
    mid = slice(len(whole) // 4, 3 * len(whole) // 4)
    assert np.max(np.abs(whole[mid] - ideal[mid])) < 1e-3


def test_downsampling_removes_frequencies_above_the_new_nyquist():
    """A 12 kHz tone from a 48 kHz mic must not alias into the 16 kHz speech band."""
    t = np.arange(48000) / 48000
    y = resample(np.sin(2 * np.pi * 12000 * t).astype(np.float32), 48000, 16000)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 1e-3


def test_reblocker_emits_exact_blocks_with_stream_times():
    """VAD needs exactly 512 samples at 16 kHz per block, stamped with the time of the
    first sample, whatever buffer size/rate/channels the device delivers."""
    rb = Reblocker(48000)
    blocks = []
    for i in range(30):   # 30 x 10 ms stereo int16 buffers at 48 kHz
        buf = np.full((480, 2), 1000 * (i % 3), np.int16)
        blocks += rb.feed(buf, 5.0 + i * 0.01)
    blocks += rb.flush()
    assert all(b.pcm.shape == (BLOCK_SAMPLES,) and b.pcm.dtype == np.float32 for b in blocks)
    assert all(b.sample_rate == SAMPLE_RATE for b in blocks)
    assert len(blocks) == int(np.ceil(0.3 * SAMPLE_RATE / BLOCK_SAMPLES))
    np.testing.assert_allclose([b.t_s for b in blocks], 5.0 + np.arange(len(blocks)) * BLOCK_SAMPLES / SAMPLE_RATE)
    assert rb.feed(np.zeros(0, np.int16), 9.0) == []


def test_reblocker_reanchors_after_dropped_audio():
    """When the device drops a second of audio, later blocks must carry the real stream
    time, not a sample count that lags behind the clock."""
    rb = Reblocker(16000)
    first = rb.feed(np.zeros(1024, np.float32), 0.0)
    later = rb.feed(np.zeros(1024, np.float32), 1.064)
    assert [b.t_s for b in first] == [0.0, 0.032]
    assert later[0].t_s == pytest.approx(1.064)


def test_clip_monitor_warns_once_per_period():
    """Clipped input should be reported (so the user lowers the gain) without flooding."""
    m = ClipMonitor(every_s=10)
    loud = np.ones(512, np.float32)
    assert "clipping" in m.check(loud, 0.0)
    assert m.check(loud, 5.0) is None
    assert m.check(np.zeros(512, np.float32), 20.0) is None
    assert m.check(loud, 20.0) is not None


def test_read_audio_errors_are_one_line(tmp_path):
    """Missing, unsupported and empty files must raise a readable AudioInputError."""
    with pytest.raises(AudioInputError, match="no such file"):
        read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioInputError, match="not a readable audio file"):
        read_audio(bad)
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioInputError, match="no audio"):
        read_audio(empty)
