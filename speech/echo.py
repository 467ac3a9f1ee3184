"""Echo and barge-in: the assistant's own voice never becomes a user turn; a person who
talks over it for ``barge_in_ms`` stops it and is heard.

Through local speakers the microphone hears the assistant. Three layers deal with it:

1. ``EchoSuppressor`` (reference-based, spectral): for each 512-sample mic block it takes
   what the speaker played over the same stream time (``reference(t_s, n)``, e.g.
   ``WavSpeaker.played_audio``), estimates the echo's delay by correlating log-energy
   envelopes of mic and reference (from ``-lookahead_s`` to ``max_delay_s``: device
   timestamps are approximate), learns a per-band echo gain on echo-only frames once the
   delay is known (frozen during double talk; until then a conservative +6 dB), predicts
   the echo's power spectrum with a reverberation tail, and attenuates the bands the echo
   explains (over-subtraction x4, floor -40 dB). Output is resynthesised by overlap-add
   (sqrt-Hann, 1024/512), so it lags one block: the cleaned block carries ``t_s`` of the
   previous input block, and times stay exact. It also reports ``near_end``: the share of
   the frame's energy the echo does not explain (1.0 when nothing was played lately).
2. Gating (``EchoGuard``, which owns the ``VadSegmenter`` and runs it on the cleaned
   audio): while the assistant is audible, or within ``tail_s`` after, a VAD start is
   held back. It is released only when near-end evidence (a block with VAD speech and
   ``near_end >= near_min``) forms a run lasting ``barge_in_ms`` that is at least
   ``min_voiced`` voiced (a run survives short pauses: each unvoiced block takes back
   ``leak`` of a voiced one); the released ``SpeechStarted`` carries the run's start when
   echo residue opened the VAD earlier, and the utterance's pcm is cut to match. If a
   reply is playing, a ``BargeIn(reply_id)`` comes with it (once per reply). An
   utterance whose start was never released ends silently (listed in
   ``ListenResult.dropped``): echo, not the user. Speech that starts outside the echo
   zone passes at once (and still barges in if a reply starts while the person keeps
   talking).
3. ``EchoTextGuard``: the transcript of an accepted utterance is compared with what the
   assistant said in the last ``window_s``; three or more words mostly found, in order,
   in that text mark it as leaked echo.

Everything here is pure bookkeeping over block times (no clock, no threads): feed
blocks in stream order from one thread. ``EchoGuard(cfg, reference=None)`` (browser
path, where the browser cancels echo) passes audio through unchanged and only applies
the barge-in rule.
"""
from __future__ import annotations

import difflib
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from app.config import SpeechConfig
from app.events import AudioBlock, BargeIn, SpeechEnded, SpeechStarted
from speech.audio import BLOCK_S, BLOCK_SAMPLES, SAMPLE_RATE
from speech.vad import VadSegmenter

Reference = Callable[[float, int], np.ndarray]
_FRAME = 2 * BLOCK_SAMPLES
_WINDOW = np.sqrt(np.hanning(_FRAME + 1)[:_FRAME]).astype(np.float32)


def _band_index(n_bins: int = _FRAME // 2 + 1, n_bands: int = 24) -> np.ndarray:
    edges = np.unique(np.concatenate([[0], np.round(np.geomspace(3, n_bins - 1, n_bands)).astype(int), [n_bins]]))
    index = np.zeros(n_bins, np.int64)
    for b in range(len(edges) - 1):
        index[edges[b]:edges[b + 1]] = b
    return index


class EchoSuppressor:
    """Spectral echo suppression against a playback reference (see the module docstring)."""

    def __init__(self, reference: Reference, max_delay_s: float = 0.5, lookahead_s: float = 0.064,
                 over_subtract: float = 4.0,
                 floor: float = 0.01, reverb_decay: float = 0.6, initial_gain: float = 4.0) -> None:
        self.reference = reference
        self.initial_gain = initial_gain
        self._band = _band_index()
        self._n_bands = int(self._band.max()) + 1
        # the reference is read ``lookahead`` blocks ahead of the mic frame: a speaker's
        # timestamps can run a little late, so the echo may seem to come before it
        self._lookahead = int(round(lookahead_s / BLOCK_S))
        self._max_delay = int(round(max_delay_s / BLOCK_S)) + self._lookahead
        self.over_subtract, self.floor, self.reverb_decay = over_subtract, floor, reverb_decay
        self.reset()

    def reset(self) -> None:
        self._prev: AudioBlock | None = None
        self._tail = np.zeros(BLOCK_SAMPLES, np.float32)
        self._ref_hist = np.zeros((self._max_delay + 2, self._n_bands))
        self._echo_prev = np.zeros(self._n_bands)
        self._gain = np.full(self._n_bands, self.initial_gain)   # echo / reference power, per band
        self._adapted = 0                             # echo-only frames seen (for warm-up)
        self._log_mic: deque[float] = deque(maxlen=64 + self._max_delay)
        self._log_ref: deque[float] = deque(maxlen=64 + self._max_delay)
        self._since_estimate = 0
        self.delay_blocks: int | None = None       # history index of the echo (lookahead + delay)
        self.near_end = 1.0
        self.echo_active = False

    def _bands(self, spectrum: np.ndarray) -> np.ndarray:
        return np.bincount(self._band, weights=np.abs(spectrum) ** 2, minlength=self._n_bands)

    def _estimate_delay(self) -> None:
        n = min(64, len(self._log_mic) - self._max_delay)
        if n < 16:
            return
        mic = np.array(self._log_mic)[-n:]
        ref = np.array(self._log_ref)
        best, best_d = 0.3, None
        for d in range(self._max_delay + 1):
            r = ref[len(ref) - n - d:len(ref) - d]
            if r.std() < 1e-3 or mic.std() < 1e-3:
                continue
            c = float(np.corrcoef(mic, r)[0, 1])
            if c > best:
                best, best_d = c, d
        if best_d is not None:
            self.delay_blocks = best_d

    def process(self, block: AudioBlock) -> AudioBlock:
        """One 16 kHz block in; the cleaned previous block out (``t_s`` one block earlier)."""
        prev = self._prev if self._prev is not None else AudioBlock(
            t_s=block.t_s - BLOCK_S, pcm=np.zeros(BLOCK_SAMPLES, np.float32), sample_rate=SAMPLE_RATE)
        self._prev = block
        frame_t = prev.t_s
        mic = np.fft.rfft(np.concatenate([prev.pcm, block.pcm]) * _WINDOW)
        ref_t = frame_t + self._lookahead * BLOCK_S
        ref = np.fft.rfft(np.asarray(self.reference(ref_t, _FRAME), np.float32) * _WINDOW)
        p_mic, p_ref = self._bands(mic), self._bands(ref)
        self._ref_hist = np.roll(self._ref_hist, 1, axis=0)
        self._ref_hist[0] = p_ref
        # log energies floored near -57 dBFS so digital silence does not dominate the match
        self._log_mic.append(float(np.log(p_mic.sum() + 1.0)))
        self._log_ref.append(float(np.log(p_ref.sum() + 1.0)))
        self.echo_active = bool(self._ref_hist.sum() > 1e-6)
        if not self.echo_active:
            gains = np.ones(self._n_bands)
            self._echo_prev[:] = 0.0
            self.near_end = 1.0
        else:
            self._since_estimate += 1
            if self._since_estimate >= 4:
                self._since_estimate = 0
                self._estimate_delay()
            d = self.delay_blocks
            window = self._ref_hist if d is None else self._ref_hist[max(d - 1, 0):d + 2]
            ref_d = window.max(axis=0)
            echo = np.maximum(self._gain * ref_d, self.reverb_decay * self._echo_prev)
            self._echo_prev = echo
            if d is not None:          # a gain learnt against a misaligned reference is too low
                self._adapt(p_mic, ref_d, echo)
            gains = np.clip(1.0 - self.over_subtract * echo / np.maximum(p_mic, 1e-12), self.floor, 1.0)
            total = float(p_mic.sum())
            self.near_end = float(np.maximum(p_mic - self.over_subtract * echo, 0.0).sum() / total) if total > 0 else 0.0
        out = np.fft.irfft(mic * gains[self._band], n=_FRAME).astype(np.float32) * _WINDOW
        cleaned = self._tail + out[:BLOCK_SAMPLES]
        self._tail = out[BLOCK_SAMPLES:].copy()
        return AudioBlock(t_s=frame_t, pcm=cleaned, sample_rate=SAMPLE_RATE)

    def _adapt(self, p_mic: np.ndarray, ref_d: np.ndarray, echo: np.ndarray) -> None:
        """Track the echo gain per band (median-like steps) on frames without double talk."""
        double_talk = np.mean(p_mic > 8.0 * echo) > 0.5 and self._adapted > 20
        active = ref_d > 1e-5 * _FRAME
        if double_talk or not active.any():
            return
        step = 1.25 if self._adapted < 20 else 1.06
        ratio = p_mic / np.maximum(ref_d, 1e-12)
        self._gain = np.where(active, np.where(ratio > self._gain, self._gain * step, self._gain / step), self._gain)
        self._gain = np.clip(self._gain, 1e-6, 100.0)
        self._adapted += 1


_WORD = re.compile(r"[a-z0-9']+")


class EchoTextGuard:
    """Is a transcript what the assistant itself just said?"""

    def __init__(self, window_s: float = 15.0, min_words: int = 3, min_match: float = 0.6) -> None:
        self.window_s, self.min_words, self.min_match = window_s, min_words, min_match
        self._spoken: deque[tuple[float, list[str]]] = deque()

    def spoken(self, text: str, t_s: float) -> None:
        """Record text the assistant made audible at ``t_s``."""
        words = _WORD.findall(text.lower())
        if words:
            self._spoken.append((t_s, words))

    def is_echo(self, text: str, t_s: float) -> bool:
        while self._spoken and self._spoken[0][0] < t_s - self.window_s:
            self._spoken.popleft()
        heard = _WORD.findall(text.lower())
        if len(heard) < self.min_words or not self._spoken:
            return False
        said = [w for _t, words in self._spoken for w in words]
        matcher = difflib.SequenceMatcher(a=heard, b=said, autojunk=False)
        matched = sum(block.size for block in matcher.get_matching_blocks())
        return matched / len(heard) >= self.min_match


@dataclass
class ListenResult:
    """What one microphone block produced after echo handling."""
    clean: AudioBlock
    events: list[SpeechStarted | SpeechEnded] = field(default_factory=list)
    barge_in: BargeIn | None = None
    dropped: list[SpeechEnded] = field(default_factory=list)


class EchoGuard:
    """Echo suppression + VAD + the hold/release/barge-in rule, one call per mic block."""

    def __init__(self, cfg: SpeechConfig, reference: Reference | None = None, vad: VadSegmenter | None = None,
                 near_min: float = 0.2, leak: float = 0.5, min_voiced: float = 0.4, tail_s: float = 0.6, text_window_s: float = 15.0) -> None:
        self.cfg = cfg
        self.vad = vad if vad is not None else VadSegmenter(cfg)
        self.suppressor = EchoSuppressor(reference) if reference is not None else None
        self.text = EchoTextGuard(window_s=text_window_s)
        self.barge_in_s = cfg.barge_in_ms / 1000
        self.near_min, self.leak, self.min_voiced, self.tail_s = near_min, leak, min_voiced, tail_s
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        if self.suppressor is not None:
            self.suppressor.reset()
        self._last_playing_s = -1e9
        self._run_start: float | None = None
        self._run_voiced_s = 0.0
        self._run_credit = 0.0
        self._held: SpeechStarted | None = None
        self._passing = False            # the current utterance's start was passed on
        self._released_at: float | None = None   # speech start of a released held utterance
        self._barged: set[str] = set()

    def _evidence(self, t_s: float, voiced: bool) -> float:
        """Track a run of near-end speech: it starts at a voiced block and lives while a
        leaky count of voiced time stays positive (each unvoiced block takes back
        ``leak`` of a block). Returns the run's length once at least ``min_voiced`` of it
        was voiced, else 0."""
        if voiced:
            if self._run_start is None:
                self._run_start, self._run_voiced_s, self._run_credit = t_s, 0.0, 0.0
            self._run_voiced_s += BLOCK_S
            self._run_credit += BLOCK_S
        elif self._run_start is not None:
            self._run_credit -= self.leak * BLOCK_S
            if self._run_credit <= 0.0:
                self._run_start = None
        if self._run_start is None:
            return 0.0
        lasted = t_s + BLOCK_S - self._run_start
        return lasted if self._run_voiced_s >= self.min_voiced * lasted else 0.0

    def process(self, block: AudioBlock, playing: str | None) -> ListenResult:
        """``playing``: the reply id the speaker is playing now (``Speaker.playing()``)."""
        clean = self.suppressor.process(block) if self.suppressor is not None else block
        near = self.suppressor.near_end if self.suppressor is not None else 1.0
        if playing is not None:
            self._last_playing_s = clean.t_s
        in_echo_zone = self.suppressor is not None and clean.t_s - self._last_playing_s <= self.tail_s
        result = ListenResult(clean=clean)
        for event in self.vad.feed(clean):
            if isinstance(event, SpeechStarted):
                if in_echo_zone:
                    self._held = event
                else:
                    self._passing = True
                    result.events.append(event)
            elif self._passing:
                self._passing = False
                result.events.append(self._trim(event))
            else:
                self._held = None
                result.dropped.append(event)
        voiced = self.vad.last_prob >= self.cfg.vad_threshold and near >= self.near_min
        lasted = self._evidence(clean.t_s, voiced)
        if lasted >= self.barge_in_s:
            if self._held is not None:
                # echo residue may have opened the utterance early: start it where the
                # near-end evidence began
                start = self._held.t_s if self._run_start is None else max(self._held.t_s, self._run_start)
                result.events.append(SpeechStarted(t_s=start))
                self._held, self._passing, self._released_at = None, True, start
            if playing is not None and playing not in self._barged and (self._passing or self.vad.speaking):
                self._barged.add(playing)
                result.barge_in = BargeIn(t_s=clean.t_s + BLOCK_S, reply_id=playing)
        return result

    def finish(self, t_s: float) -> list[SpeechStarted | SpeechEnded]:
        """The mic stops reaching this guard (hands-free off, push-to-talk): end the
        utterance in progress at ``t_s`` as if the stream ended; one held as echo is dropped."""
        passing, held, out = self._passing, self._held, []
        for event in self.vad.flush(t_s):
            if isinstance(event, SpeechStarted):
                if held is None and not passing:
                    passing = True
                    out.append(event)
            elif passing:
                out.append(self._trim(event))
        self.reset()
        return out

    def _trim(self, ended: SpeechEnded) -> SpeechEnded:
        """Cut the pcm of a released utterance to its real start (minus the pre-roll)."""
        start, self._released_at = self._released_at, None
        if start is None:
            return ended
        keep_from = max(ended.start_s, start - self.cfg.vad_preroll_ms / 1000)
        cut = int(round((keep_from - ended.start_s) * SAMPLE_RATE))
        if cut <= 0:
            return ended
        return SpeechEnded(t_s=ended.t_s, start_s=ended.start_s + cut / SAMPLE_RATE, pcm=ended.pcm[cut:].copy(),
                           sample_rate=ended.sample_rate)

    def spoken(self, text: str, t_s: float) -> None:
        self.text.spoken(text, t_s)

    def is_echo_text(self, text: str, t_s: float) -> bool:
        return self.text.is_echo(text, t_s)
