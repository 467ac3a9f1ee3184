"""Voice activity detection: silero-vad (bundled ONNX weights) as a streaming segmenter.

Contract:
* ``SileroVad()`` wraps the ONNX model shipped inside the ``silero_vad`` wheel (found
  without importing the package, which would import torch); ``prob(block)`` returns the
  speech probability of one 512-sample 16 kHz block (the model also sees the previous 64
  samples of context and carries a recurrent state); ``reset()`` clears both.
* ``VadSegmenter(cfg, model=None)`` follows architecture rule 6: ``feed(block)`` takes one
  ``AudioBlock`` (512 samples, 16 kHz mono float32) and returns zero or more events;
  ``flush(t_s)`` ends the stream; ``reset()`` forgets everything; ``speaking`` is True
  between a ``SpeechStarted`` and its ``SpeechEnded``.
  - Speech starts at the first block whose probability reaches ``vad_threshold``; it is
    confirmed (``SpeechStarted(t_s=that block's start)``) once it has lasted
    ``vad_min_speech_ms`` (so clicks never start a turn). A candidate that falls silent
    for ``vad_min_silence_ms`` before confirmation is dropped.
  - Speech ends when the probability stays below ``threshold - 0.15`` for
    ``vad_min_silence_ms``: ``SpeechEnded(t_s=end of the last voiced block, start_s, pcm)``
    is returned by the block that completes the silence. ``pcm`` starts at ``start_s`` =
    speech start minus up to ``vad_preroll_ms`` of pre-roll (so the first word is not
    clipped) and runs to ``t_s`` plus up to ``postroll_ms`` of trailing audio.
  - An utterance longer than ``max_speech_s`` is ended there and a new one may start.
  - ``model`` is anything with ``prob(np.ndarray) -> float`` and ``reset()``; by default
    ``SileroVad``. The segmenter itself is pure bookkeeping over block times.
* ``python -m speech.vad FILE`` prints one JSON line ``{"start_s": .., "end_s": ..}`` per
  utterance (speech bounds, pre-roll excluded); any rate / channel count; a bad file is
  one line on stderr and exit code 2.
"""
from __future__ import annotations

import importlib.util
import sys
from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np

from app.config import SpeechConfig
from app.events import AudioBlock, SpeechEnded, SpeechStarted
from speech.audio import BLOCK_SAMPLES, SAMPLE_RATE, AudioInputError

VadEvent = SpeechStarted | SpeechEnded
_CONTEXT = 64


def silero_onnx_path() -> Path:
    """The ONNX weights inside the installed silero-vad wheel."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise RuntimeError("silero-vad is not installed: pip install silero-vad==6.2.3")
    path = Path(spec.origin).parent / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise RuntimeError(f"silero-vad's bundled ONNX model is missing ({path}); reinstall silero-vad")
    return path


class SileroVad:
    """Speech probability per 512-sample block (ONNX Runtime, one CPU thread)."""

    def __init__(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(silero_onnx_path()), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._input = np.zeros((1, _CONTEXT + BLOCK_SAMPLES), np.float32)
        self._sr = np.array(SAMPLE_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._input[:] = 0.0

    def prob(self, pcm: np.ndarray) -> float:
        if pcm.shape != (BLOCK_SAMPLES,):
            raise AudioInputError(f"VAD needs {BLOCK_SAMPLES}-sample blocks, got shape {pcm.shape}")
        self._input[0, :_CONTEXT] = self._input[0, -_CONTEXT:]
        self._input[0, _CONTEXT:] = pcm
        out, self._state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._sr})
        return float(out[0, 0])


class SpeechProbability(Protocol):
    def prob(self, pcm: np.ndarray) -> float: ...

    def reset(self) -> None: ...


class VadSegmenter:
    """Blocks in, ``SpeechStarted`` / ``SpeechEnded`` out (see the module contract)."""

    def __init__(self, cfg: SpeechConfig, model: SpeechProbability | None = None,
                 postroll_ms: int = 300, max_speech_s: float = 30.0) -> None:
        self.cfg = cfg
        self.model = model if model is not None else SileroVad()
        self.threshold = cfg.vad_threshold
        self.neg_threshold = max(cfg.vad_threshold - 0.15, 0.01)
        self.min_silence_s = cfg.vad_min_silence_ms / 1000
        self.min_speech_s = cfg.vad_min_speech_ms / 1000
        self.postroll_s = postroll_ms / 1000
        self.max_speech_s = max_speech_s
        self._preroll_blocks = int(np.ceil(cfg.vad_preroll_ms / 1000 * SAMPLE_RATE / BLOCK_SAMPLES))
        self.last_prob = 0.0
        self.reset()

    @property
    def speaking(self) -> bool:
        return self._confirmed

    def reset(self) -> None:
        self.model.reset()
        self._ring: deque[AudioBlock] = deque(maxlen=max(self._preroll_blocks, 1))
        self._blocks: list[AudioBlock] = []   # pre-roll + candidate/confirmed speech
        self._start_s: float | None = None    # speech start (candidate or confirmed)
        self._voiced_end_s = 0.0              # end of the last block at/above threshold
        self._silence_from: float | None = None
        self._confirmed = False

    def feed(self, block: AudioBlock) -> list[VadEvent]:
        if block.sample_rate != SAMPLE_RATE or block.pcm.shape != (BLOCK_SAMPLES,):
            raise AudioInputError(f"VAD needs {BLOCK_SAMPLES}-sample {SAMPLE_RATE} Hz blocks, got "
                                  f"{block.pcm.shape} at {block.sample_rate} Hz (use speech.audio.Reblocker)")
        p = self.model.prob(block.pcm.astype(np.float32, copy=False))
        self.last_prob = p
        end_s = block.t_s + BLOCK_SAMPLES / SAMPLE_RATE
        if self._start_s is None:
            if p < self.threshold:
                if self._preroll_blocks:
                    self._ring.append(block)
                return []
            self._start_s, self._voiced_end_s, self._silence_from = block.t_s, end_s, None
            self._blocks = list(self._ring) if self._preroll_blocks else []
            self._ring.clear()
        self._blocks.append(block)
        if p >= self.threshold:
            self._voiced_end_s, self._silence_from = end_s, None
        elif p < self.neg_threshold and self._silence_from is None:
            self._silence_from = block.t_s
        events: list[VadEvent] = []
        if not self._confirmed and self._voiced_end_s - self._start_s >= self.min_speech_s:
            self._confirmed = True
            events.append(SpeechStarted(t_s=self._start_s))
        silent_long = self._silence_from is not None and end_s - self._silence_from >= self.min_silence_s
        too_long = self._confirmed and end_s - self._start_s >= self.max_speech_s
        if silent_long or too_long:
            if self._confirmed:
                events.append(self._ended(self._voiced_end_s if silent_long else end_s))
            self._drop_candidate()
        return events

    def flush(self, t_s: float) -> list[VadEvent]:
        """End of stream at ``t_s``: close an utterance in progress (if long enough)."""
        events: list[VadEvent] = []
        if self._start_s is not None:
            end_s = min(self._voiced_end_s, t_s)
            if not self._confirmed and end_s - self._start_s >= self.min_speech_s:
                self._confirmed = True
                events.append(SpeechStarted(t_s=self._start_s))
            if self._confirmed:
                events.append(self._ended(end_s))
        self.reset()
        return events

    def _ended(self, end_s: float) -> SpeechEnded:
        first = self._blocks[0]
        keep_until = end_s + self.postroll_s
        parts = [b.pcm for b in self._blocks if b.t_s < keep_until]
        pcm = np.concatenate(parts).astype(np.float32, copy=False)
        n_keep = int(round((keep_until - first.t_s) * SAMPLE_RATE))
        return SpeechEnded(t_s=end_s, start_s=first.t_s, pcm=pcm[:max(n_keep, 0)].copy())

    def _drop_candidate(self) -> None:
        tail = self._blocks[-self._preroll_blocks:] if self._preroll_blocks else []
        self._ring.clear()
        self._ring.extend(tail)
        self._blocks = []
        self._start_s, self._silence_from, self._confirmed = None, None, False


def segment_file(path: str | Path, cfg: SpeechConfig | None = None) -> list[tuple[float, float]]:
    """(start_s, end_s) of each utterance in a sound file (pre-roll excluded)."""
    from speech.audio import Reblocker, read_audio
    pcm, rate = read_audio(path)
    cfg = cfg or SpeechConfig()
    segmenter = VadSegmenter(cfg)
    reblocker = Reblocker(rate)
    blocks = reblocker.feed(pcm, 0.0) + reblocker.flush()
    events: list[VadEvent] = []
    for block in blocks:
        events += segmenter.feed(block)
    events += segmenter.flush(len(pcm) / rate)
    out, start = [], None
    for e in events:
        if isinstance(e, SpeechStarted):
            start = e.t_s
        elif start is not None:
            out.append((start, e.t_s))
            start = None
    return out


def main(argv: list[str]) -> int:
    import argparse
    import json
    parser = argparse.ArgumentParser(prog="python -m speech.vad", description="Print utterance bounds as JSON lines.")
    parser.add_argument("file", help="a sound file (wav, flac, ogg, ...); any rate or channel count")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--min-silence-ms", type=int, default=None)
    parser.add_argument("--min-speech-ms", type=int, default=None)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("vad_threshold", args.threshold), ("vad_min_silence_ms", args.min_silence_ms),
                                   ("vad_min_speech_ms", args.min_speech_ms)) if v is not None}
    try:
        cfg = SpeechConfig(**overrides)
        segments = segment_file(args.file, cfg)
    except (AudioInputError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for start_s, end_s in segments:
        print(json.dumps({"start_s": round(start_s, 3), "end_s": round(end_s, 3)}))
    if not segments:
        print(f"note: no speech found in {args.file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
