"""Speech benchmark: the numbers quoted in docs/speech.md, measured on this machine.

``python -m speech.bench [--models DIR] [--asr-model M] [--tts-model M] [--repeat N]``
prints one JSON line per measurement:
* ``vad``: silero VAD cost per 512-sample block (median, p99, ms);
* ``echo``: ``EchoGuard.process`` per block with a playing reference (suppression + VAD);
* ``asr``: ``Transcriber.transcribe`` on a spoken phrase: seconds and real-time factor
  (processing time / audio duration; < 1 is faster than real time);
* ``tts``: ``Voice.synthesize`` for one sentence: seconds to first audio of that
  sentence and real-time factor, for espeak-ng and the Coqui model.
By default the tiny random models (built into ``--models``, default ``.cache/tiny-speech``)
are measured: they exercise the real code paths but are far smaller than real models,
so their speed says little about real ones. Pass ``--asr-model small.en`` /
``--tts-model tts_models/en/ljspeech/vits`` (or local directories) to measure real ones.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from app.config import SpeechConfig
from app.events import AudioBlock
from speech.audio import BLOCK_SAMPLES, SAMPLE_RATE, resample

PHRASE = "What is on the table next to the laptop? Tell me when the kettle starts boiling."


def _timed(fn, repeat: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def _blocks(pcm: np.ndarray) -> list[AudioBlock]:
    n = len(pcm) // BLOCK_SAMPLES
    return [AudioBlock(t_s=i * BLOCK_SAMPLES / SAMPLE_RATE, pcm=pcm[i * BLOCK_SAMPLES:(i + 1) * BLOCK_SAMPLES],
                       sample_rate=SAMPLE_RATE) for i in range(n)]


def bench_vad(speech16k: np.ndarray) -> dict:
    from speech.vad import SileroVad
    vad = SileroVad()
    blocks = _blocks(np.concatenate([speech16k] * 4))
    for b in blocks[:20]:
        vad.prob(b.pcm)
    times = []
    for b in blocks:
        t0 = time.perf_counter()
        vad.prob(b.pcm)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"what": "vad", "blocks": len(ms), "median_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def bench_echo(speech16k: np.ndarray) -> dict:
    from speech.echo import EchoGuard
    played = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech16k, speech16k])

    def reference(t_s: float, n: int) -> np.ndarray:
        a = int(round(t_s * SAMPLE_RATE))
        out = np.zeros(n, np.float32)
        lo, hi = max(a, 0), min(a + n, len(played))
        if lo < hi:
            out[lo - a:hi - a] = played[lo:hi]
        return out
    mic = np.zeros(len(played), np.float32)
    mic[800:] = 0.4 * played[:-800]
    guard = EchoGuard(SpeechConfig(), reference=reference)
    times = []
    for b in _blocks(mic):
        t0 = time.perf_counter()
        guard.process(b, "r1")
        times.append(time.perf_counter() - t0)
    ms = np.array(times[20:]) * 1000
    return {"what": "echo_guard", "blocks": len(ms), "median_ms": round(float(np.median(ms)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def bench_asr(model: str, speech16k: np.ndarray, repeat: int) -> dict:
    from speech.asr import load_transcriber
    t0 = time.perf_counter()
    tr = load_transcriber(SpeechConfig(asr_model=model))
    load_s = time.perf_counter() - t0
    tr.transcribe(speech16k)                          # warm-up
    times, text = _timed(lambda: tr.transcribe(speech16k), repeat)
    audio_s = len(speech16k) / SAMPLE_RATE
    return {"what": "asr", "model": tr.description, "load_s": round(load_s, 2), "audio_s": round(audio_s, 2),
            "median_s": round(float(np.median(times)), 3), "rtf": round(float(np.median(times)) / audio_s, 3),
            "chars": len(str(text))}


def bench_tts(cfg: SpeechConfig, repeat: int) -> dict:
    from speech.tts import load_voice
    t0 = time.perf_counter()
    voice = load_voice(cfg)
    load_s = time.perf_counter() - t0
    sentence = "I can see a red cup on the wooden table, next to a laptop."
    voice.synthesize(sentence)                        # warm-up
    times, pcm = _timed(lambda: voice.synthesize(sentence), repeat)
    audio_s = len(pcm) / voice.sample_rate
    return {"what": "tts", "voice": voice.description, "load_s": round(load_s, 2), "audio_s": round(audio_s, 2),
            "median_s": round(float(np.median(times)), 3), "rtf": round(float(np.median(times)) / audio_s, 3)}


def main(argv: list[str]) -> int:
    import argparse
    from speech.tiny import build
    from speech.voices import EspeakVoice, TtsLoadError
    parser = argparse.ArgumentParser(prog="python -m speech.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=".cache/tiny-speech", help="where the tiny models are built")
    parser.add_argument("--asr-model", default=None, help="default: the tiny Whisper")
    parser.add_argument("--tts-model", default=None, help="default: the tiny VITS")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        espeak = EspeakVoice("en-us")
    except TtsLoadError as e:
        print(f"error: the benchmark speaks its test phrase with espeak-ng: {e}", file=sys.stderr)
        return 2
    speech16k = resample(espeak.synthesize(PHRASE), espeak.sample_rate, SAMPLE_RATE)
    tiny = build(Path(args.models)) if args.asr_model is None or args.tts_model is None else {}
    rows = [bench_vad(speech16k), bench_echo(speech16k),
            bench_asr(args.asr_model or str(tiny["whisper"]), speech16k, args.repeat),
            bench_tts(SpeechConfig(tts="espeak"), args.repeat),
            bench_tts(SpeechConfig(tts_model=args.tts_model or str(tiny["vits"])), args.repeat)]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
