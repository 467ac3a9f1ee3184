"""Reusable speech fixtures (plain functions; conftest.py wraps them as cached fixtures).

espeak-ng speaks a phrase, sox converts it to 16 kHz mono, and known silence is put around
it, so the true speech bounds are known to the sample: ``speech_start_s`` /
``speech_end_s`` are where espeak's signal first/last rises above 1 % of its peak, plus
the padding. A faint noise floor (about -66 dBFS) keeps the silence realistic.

Other parts of the project (the lead's pipeline tests) import these helpers directly:

    from tests.speech.fixtures import espeak_16k, padded_phrase, conversation, room_echo
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech.audio import SAMPLE_RATE, read_audio, write_wav

USER_VOICE = "en-us+m3"      # the "person" in tests
ASSISTANT_VOICE = "en-gb+f3"  # a different espeak voice for the assistant


@dataclass(frozen=True)
class Phrase:
    """A fixture utterance: 16 kHz mono float32 ``pcm`` saved at ``path``."""
    text: str
    path: Path
    pcm: np.ndarray
    speech_start_s: float
    speech_end_s: float


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"speech fixtures need {' and '.join(missing)} (apt-get install espeak-ng sox)")


def espeak_16k(text: str, out_dir: Path, voice: str = USER_VOICE, speed_wpm: int = 160) -> np.ndarray:
    """espeak-ng speech for ``text`` as 16 kHz mono float32 (cached by content in out_dir)."""
    require_tools()
    out_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{voice}|{speed_wpm}|{text}".encode()).hexdigest()[:16]
    final = out_dir / f"espeak-{key}.wav"
    if not final.exists():
        raw = out_dir / f"espeak-{key}.raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(raw), "--", text],
                       check=True, capture_output=True)
        subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(final)],
                       check=True, capture_output=True)
        raw.unlink()
    pcm, rate = read_audio(final)
    assert rate == SAMPLE_RATE
    return pcm


def speech_bounds(pcm: np.ndarray, rel: float = 0.01) -> tuple[int, int]:
    """First and one-past-last sample whose magnitude exceeds ``rel`` of the peak."""
    loud = np.flatnonzero(np.abs(pcm) > rel * np.max(np.abs(pcm)))
    return int(loud[0]), int(loud[-1]) + 1


def noise_floor(n: int, seed: int, level: float = 5e-4) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * level).astype(np.float32)


def padded_phrase(text: str, out_dir: Path, lead_s: float = 1.0, tail_s: float = 1.0,
                  voice: str = USER_VOICE, seed: int = 0) -> Phrase:
    """``text`` spoken with exactly ``lead_s``/``tail_s`` of (noise-floor) silence around it."""
    speech = espeak_16k(text, out_dir, voice)
    a, b = speech_bounds(speech)
    speech = speech[a:b]
    lead, tail = int(lead_s * SAMPLE_RATE), int(tail_s * SAMPLE_RATE)
    pcm = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    pcm = pcm + noise_floor(len(pcm), seed)
    key = hashlib.sha1(f"{text}|{voice}|{lead_s}|{tail_s}|{seed}".encode()).hexdigest()[:16]
    path = out_dir / f"phrase-{key}.wav"
    write_wav(path, pcm, SAMPLE_RATE)
    pcm, _ = read_audio(path)
    return Phrase(text, path, pcm, lead / SAMPLE_RATE, (lead + len(speech)) / SAMPLE_RATE)


def conversation(texts: list[str], out_dir: Path, gap_s: float = 1.5, lead_s: float = 0.8,
                 voice: str = USER_VOICE, name: str = "conversation") -> tuple[Path, np.ndarray, list[tuple[float, float]]]:
    """Several phrases separated by ``gap_s`` of silence: (wav path, pcm, true bounds)."""
    parts, bounds, t = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)], [], lead_s
    for text in texts:
        speech = espeak_16k(text, out_dir, voice)
        a, b = speech_bounds(speech)
        speech = speech[a:b]
        bounds.append((t, t + len(speech) / SAMPLE_RATE))
        parts += [speech, np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
        t += len(speech) / SAMPLE_RATE + gap_s
    pcm = np.concatenate(parts)
    pcm = pcm + noise_floor(len(pcm), 1)
    path = out_dir / f"{name}.wav"
    write_wav(path, pcm, SAMPLE_RATE)
    pcm, _ = read_audio(path)
    return path, pcm, bounds


def room_echo(played: np.ndarray, delay_ms: float = 60.0, gain: float = 0.35,
              reflections: tuple[tuple[float, float], ...] = ((17.0, 0.5), (41.0, 0.25), (83.0, 0.12))) -> np.ndarray:
    """What a microphone hears of ``played`` (16 kHz) in a small room: a direct path after
    ``delay_ms`` at ``gain``, a few later reflections (ms after the direct path, relative
    gain) and a mild high-frequency loss, like a laptop speaker and mic."""
    n = len(played)
    out = np.zeros(n, np.float32)
    d0 = int(delay_ms * SAMPLE_RATE / 1000)
    for extra_ms, rel in ((0.0, 1.0), *reflections):
        d = d0 + int(extra_ms * SAMPLE_RATE / 1000)
        if d < n:
            out[d:] += gain * rel * played[:n - d]
    smoothed = out.copy()
    smoothed[1:] = 0.6 * out[1:] + 0.4 * out[:-1]
    return smoothed


def room_mix(speaker, delay_ms: float = 60.0, gain: float = 0.35):
    """A ``WavMicrophone(mix=...)`` callable: what the microphone hears of ``speaker`` (any
    ``PlaybackReference``, e.g. ``WavSpeaker``) through ``room_echo``."""
    pad = int((delay_ms + 150.0) / 1000 * SAMPLE_RATE)     # the echo's whole history

    def mix(t_s: float, n: int) -> np.ndarray:
        heard = room_echo(speaker.played_audio(t_s - pad / SAMPLE_RATE, n + pad), delay_ms, gain)
        return heard[-n:]
    return mix



def mic_track(out_dir: Path, duration_s: float, talker: np.ndarray | None = None, talker_at_s: float = 0.0,
              talker_gain: float = 0.5, name: str = "mic-track", seed: int = 7) -> Path:
    """A WAV for ``WavMicrophone``: a noise floor, optionally a person talking from ``talker_at_s``."""
    pcm = noise_floor(int(duration_s * SAMPLE_RATE), seed)
    if talker is not None:
        a = int(talker_at_s * SAMPLE_RATE)
        part = talker[:max(len(pcm) - a, 0)] * talker_gain
        pcm[a:a + len(part)] += part
    path = out_dir / f"{name}.wav"
    write_wav(path, pcm, SAMPLE_RATE)
    return path
