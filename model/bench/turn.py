"""Speech end -> first audio on one GPU (issue 17, item 2).

    python -m model.bench.turn --out F.json [--turns 50] [--live 1 4]
    python -m model.bench.turn --tiny --device cpu --turns 3 --live 1 2 --out /tmp/t.json

Contract:
* Builds, with random weights in real shapes on one device: the engine as the app loads it
  (the 8B Qwen3-VL, ``AuraSession`` on the fast backend, ``EngineConfig`` defaults, caches
  for the largest ``--live``), the ASR and the voice. ASR: faster-whisper/CTranslate2 is
  not used (no CTranslate2 weights in the real shape can be made offline; the GPU image
  has neither package), so it is transformers' ``WhisperForConditionalGeneration`` in the
  large-v3-turbo shape, float16 on CUDA, as ``model.bench.speech_load`` builds it: log-mel
  features of the utterance (``WhisperFeatureExtractor``, CPU), the encoder over 30 s, a
  4-token prompt and ``--asr-tokens`` (12) greedy steps with a KV cache, the host reading
  each token. Voice: transformers' ``VitsModel`` at the MMS-TTS size (36 M, float32), one
  forward over the first sentence (``--sentence-chars`` characters). Labels in ``impl``.
* For each count in ``--live``: one turn session streams 1-s chunks (2 frames of 640x480)
  through the app's ``EngineWorker``, the other sessions run as live app sessions
  (``model.bench.fleet``, no questions) on the same worker; ``--turns`` turns, one every
  ``--turn-every-s``: ASR of the utterance -> the question rides on a 1-frame partial
  chunk (as the orchestrator closes it) -> the engine until the first sentence
  (``--sentence-tokens`` reply tokens; the reply goes on to 12-40 tokens meanwhile) ->
  VITS over the first sentence. Per part and for the sum: p50/p90 (ms).
* The VAD's end-of-speech wait is measured separately with the app's ``VadSegmenter``
  (its config: ``vad_min_silence_ms``) on a scripted probability (speech, then silence):
  from the end of speech as the VAD sees it (``SpeechEnded.t_s``) to the block that emits
  it. ``e2e_first_audio_ms_*`` = that wait + ASR + engine + TTS; ``sum_parts_ms_*``
  leaves the wait out (comparable with the authors' ~312 ms, ``anchor``).
* Top level: ``e2e_first_audio_ms_p50`` (with 1 live session) and per count under
  ``live``; JSON written after each count; bad arguments: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from model.bench.engine import add_model_args, bad_args, record_error, setup_or_record
from model.bench.stats import pct

AUTHORS_ESTIMATE_MS = 312
PROMPT_IDS = (50258, 50259, 50360, 50364)     # start of transcript, language, task, no timestamps
UTTERANCE_S = 2.5


def vad_end_wait_ms(cfg=None, speech_s: float = 1.0) -> float:
    """ms from the end of speech as the app's VAD sees it to the block that ends the
    utterance (speech probability 1 for ``speech_s``, then 0)."""
    from app.config import SpeechConfig
    from app.events import AudioBlock, SpeechEnded
    from speech.audio import BLOCK_S, BLOCK_SAMPLES, SAMPLE_RATE
    from speech.vad import VadSegmenter

    class Scripted:
        t = 0.0

        def prob(self, pcm) -> float:
            p = 1.0 if self.t < speech_s - 1e-9 else 0.0
            self.t += BLOCK_S
            return p

        def reset(self) -> None:
            pass
    seg = VadSegmenter(cfg or SpeechConfig(), model=Scripted())
    pcm = np.zeros(BLOCK_SAMPLES, np.float32)
    for k in range(int((speech_s + 5.0) / BLOCK_S)):
        for ev in seg.feed(AudioBlock(k * BLOCK_S, pcm, SAMPLE_RATE)):
            if isinstance(ev, SpeechEnded):
                return ((k + 1) * BLOCK_S - ev.t_s) * 1000
    raise RuntimeError("the VAD never ended the utterance")


class Speech:
    """Random-weight Whisper (large-v3-turbo shape) and VITS (MMS-TTS size) on one device."""

    def __init__(self, device: str, tiny: bool, asr_tokens: int, sentence_chars: int) -> None:
        import torch
        from transformers import VitsModel, WhisperFeatureExtractor, WhisperForConditionalGeneration

        from model.bench.speech_load import vits_config, whisper_config
        self.torch, self.dev = torch, torch.device(device)
        cuda = self.dev.type == "cuda"
        half = torch.float16 if cuda else torch.float32
        torch.manual_seed(0)
        with torch.device(self.dev):
            self.tts = VitsModel(vits_config(tiny)).eval()
            self.asr = WhisperForConditionalGeneration(whisper_config(tiny)).to(half).eval()
        self.features = WhisperFeatureExtractor(feature_size=128)
        self.half, self.asr_tokens = half, asr_tokens
        self.text = torch.randint(0, self.tts.config.vocab_size, (1, sentence_chars), device=self.dev)
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.utterance = np.random.default_rng(0).standard_normal(int(16000 * UTTERANCE_S)).astype(np.float32) * 0.1
        self.params_m = {"asr": sum(p.numel() for p in self.asr.parameters()) / 1e6,
                         "tts": sum(p.numel() for p in self.tts.parameters()) / 1e6}

    def transcribe(self) -> tuple[float, int]:
        """(ms, tokens): features, encoder, prompt + ``asr_tokens`` greedy steps."""
        torch = self.torch
        t0 = time.perf_counter()
        feats = self.features(self.utterance, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            enc = self.asr.model.encoder(feats.to(self.dev, self.half))
            tok = torch.tensor([PROMPT_IDS], device=self.dev)
            past, n = None, 0
            for _ in range(self.asr_tokens):
                out = self.asr(encoder_outputs=enc, decoder_input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1:].argmax(-1)
                int(tok)                                       # the host reads each token
                n += 1
        return (time.perf_counter() - t0) * 1000, n

    def first_audio(self) -> tuple[float, float]:
        """(ms, seconds of audio): VITS over the first sentence."""
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            wave = self.tts(input_ids=self.text).waveform
        self.sync()
        return (time.perf_counter() - t0) * 1000, wave.shape[-1] / self.tts.config.sampling_rate


class TurnSession:
    """One engine session streamed through the EngineWorker: a silent chunk each second,
    a question on a 1-frame partial chunk when asked."""

    def __init__(self, fleet, session_id: str, frames, warm_chunks: int) -> None:
        from model.bench.fleet import OffsetClock
        self.fleet, self.sid, self.frames = fleet, session_id, frames
        made: list = []
        fleet.on_engine(session_id, lambda: fleet._make(session_id, warm_chunks, made))
        self.session = made[0]
        self.clock = OffsetClock()
        self.last_end, self.index = 0.0, 0
        self.steps: list[float] = []

    def _submit(self, chunk, question, cancel, on_event) -> None:
        from app.workers import StepJob
        self.fleet.worker.submit(self.sid, StepJob(self.session, chunk, question, question is not None,
                                                   cancel, on_event, self.clock))

    def _chunk(self, end: float, frames):
        from app.events import VideoChunk
        chunk = VideoChunk(t_s=end, start_s=self.last_end, frames=frames, index=self.index)
        self.last_end, self.index = end, self.index + 1
        return chunk

    def tick(self) -> None:
        """Submit the silent chunks that are due (their end has passed)."""
        from app.events import StepDecision
        while self.last_end + 1.0 <= self.clock.now():
            def on_event(ev):
                if isinstance(ev, StepDecision):
                    self.steps.append(ev.step_ms)
            self._submit(self._chunk(self.last_end + 1.0, (self.frames[0], self.frames[1])), None,
                         lambda: False, on_event)

    def ask(self, text: str, first_sentence: int, reply_tokens: int) -> float:
        """ms from now to the ``first_sentence``-th reply token (the reply goes on to
        ``reply_tokens`` tokens without waiting)."""
        from app.orchestrator import StepFinished
        t0 = time.monotonic()
        hit, done, calls = threading.Event(), threading.Event(), [0]
        at: list[float] = []

        def cancel() -> bool:                  # asked by the engine after each reply token
            calls[0] += 1
            if calls[0] == first_sentence:
                at.append(time.monotonic())
                hit.set()
            return calls[0] >= reply_tokens

        def on_event(ev):
            if isinstance(ev, StepFinished):
                done.set()
                hit.set()
        self._submit(self._chunk(max(self.clock.now(), self.last_end + 1e-3), (self.frames[0],)), text,
                     cancel, on_event)
        hit.wait(60)
        self.pending = done
        if not at:
            raise RuntimeError("the engine ended the reply before the first sentence")
        return (at[0] - t0) * 1000

    def close(self) -> None:
        from app.workers import CallJob
        self.fleet.worker.submit(self.sid, CallJob(self.session.close))


class TurnBench:
    def __init__(self, args) -> None:
        import torch
        self.torch, self.args = torch, args
        self.dev = torch.device(args.device)
        self.out = Path(args.out)
        self.res: dict = {"mode": "turn", "errors": [], "live": {}}

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.res, indent=1, default=float), encoding="utf-8")

    def setup(self) -> None:
        from app.config import SpeechConfig
        from app.workers import EngineWorker
        from model.bench.engine import env_info, load_engine
        from model.bench.fleet import Fleet
        a = self.args
        cuda = self.dev.type == "cuda"
        t = time.perf_counter()
        self.model = load_engine(a.config, tiny=a.tiny, device=str(self.dev), sessions=max(a.live),
                                 overrides=a.engine_overrides)
        t1 = time.perf_counter()
        self.speech = Speech(str(self.dev), a.tiny, a.asr_tokens, a.sentence_chars)
        for _ in range(2):                                 # warm-up: kernels, allocator
            self.speech.transcribe()
            self.speech.first_audio()
        self.worker = EngineWorker().start()
        self.fleet = Fleet(self.model, self.worker)
        scfg = SpeechConfig()
        self.vad_ms = vad_end_wait_ms(scfg)
        cfg = self.model.cfg
        shape = "TINY (not the) " if a.tiny else ""
        self.res.update(
            **env_info(self.dev), args=vars(a), setup_engine_s=round(t1 - t, 1), setup_speech_s=round(time.perf_counter() - t1, 1),
            engine={"max_pixels": cfg.max_pixels, "pixel_budget": getattr(cfg, "pixel_budget", None),
                    "max_new_tokens": cfg.max_new_tokens, "cache_tokens": self.model.backend.max_tokens},
            impl={"asr": (f"transformers WhisperForConditionalGeneration, {shape}large-v3-turbo shape "
                          f"({self.speech.params_m['asr']:.0f} M), "
                          f"{'float16' if cuda else 'float32'}: features + encoder + {a.asr_tokens} greedy "
                          "tokens (NOT faster-whisper/CTranslate2: not installed on this machine / no "
                          "real-shape CTranslate2 weights offline)"),
                  "engine": "model.session.AuraSession, FastBackend + FastVision, through app.workers.EngineWorker",
                  "tts": (f"transformers VitsModel, {shape}MMS-TTS size ({self.speech.params_m['tts']:.0f} M), float32, "
                          f"one forward over {a.sentence_chars} characters (NOT Coqui VITS: not installed)")},
            vad_end_wait_ms=self.vad_ms, vad_min_silence_ms=scfg.vad_min_silence_ms,
            anchor={"authors_estimate_ms": AUTHORS_ESTIMATE_MS,
                    "note": "the authors add ASR + LLM first sentence + TTS first chunk, without "
                            "end-of-speech detection: compare with sum_parts_ms_p50"})
        print(f"setup: engine {self.res['setup_engine_s']} s, speech {self.res['setup_speech_s']} s; "
              f"VAD end wait {self.vad_ms:.0f} ms", flush=True)

    def phase(self, live: int) -> dict:
        a = self.args
        sid = f"turn{live}"
        stop, opened, box = threading.Event(), threading.Event(), {}
        turn = TurnSession(self.fleet, sid, self.fleet.frames, a.warm_chunks)
        bg = None
        if live > 1:
            def background():
                try:
                    box["rec"] = self.fleet.run(live - 1, seconds=1e6, settle_s=0.0, warm_chunks=a.warm_chunks,
                                                question_every_s=1e9, stop=stop, opened=opened,
                                                progress=lambda m: print(m, flush=True))
                except Exception as e:          # reported with the phase
                    box["error"] = e
                    opened.set()
            bg = threading.Thread(target=background, name="background-sessions", daemon=True)
            bg.start()
            opened.wait()
            if "error" in box:
                raise box["error"]
        turn.clock = type(turn.clock)()                   # the stream starts now
        rows = []
        try:
            next_turn = 2.0
            while len(rows) < a.turns:
                turn.tick()
                if turn.clock.now() < next_turn:
                    time.sleep(0.005)
                    continue
                next_turn += a.turn_every_s
                asr_ms, _n = self.speech.transcribe()
                engine_ms = turn.ask("What is on the table right now?", a.sentence_tokens,
                                     a.reply_tokens)
                tts_ms, audio_s = self.speech.first_audio()
                parts = asr_ms + engine_ms + tts_ms
                rows.append({"asr_ms": asr_ms, "engine_ms": engine_ms, "tts_ms": tts_ms, "sum_parts_ms": parts,
                             "e2e_ms": self.vad_ms + parts, "audio_s": audio_s})
                turn.pending.wait(60)                      # the reply has ended before the next turn
        finally:
            stop.set()
            if bg is not None:
                bg.join(120)
            turn.close()
            self.fleet.on_engine("turn-sync", lambda: None)
        out = {"turns": len(rows), "live_sessions": live}
        for key in ("asr_ms", "engine_ms", "tts_ms", "sum_parts_ms", "e2e_ms"):
            vals = [r[key] for r in rows]
            out[f"{key[:-3]}_ms_p50"], out[f"{key[:-3]}_ms_p90"] = pct(vals, 0.5), pct(vals, 0.9)
        out["turn_session_chunk_step_p50_ms"] = pct(turn.steps, 0.5)
        out["turn_session_chunk_step_p99_ms"] = pct(turn.steps, 0.99)
        if "rec" in box:
            from model.bench.capacity import summarize
            s = summarize(box["rec"])
            out["background"] = {k: s[k] for k in ("n", "chunk_step_p50_ms", "chunk_step_p99_ms",
                                                    "chunks_skipped", "engine_busy_fraction")}
        out["per_turn"] = [{k: round(v, 2) for k, v in r.items()} for r in rows]
        return out

    def run(self) -> int:
        if not setup_or_record(self):
            return 1
        try:
            for live in self.args.live:
                print(f"== {live} live session(s), {self.args.turns} turns", flush=True)
                try:
                    r = self.phase(live)
                except Exception:
                    record_error(self, f"live={live}")
                    continue
                self.res["live"][str(live)] = r
                self.res[f"e2e_first_audio_ms_p50_{live}_live"] = r["e2e_ms_p50"]
                if live == self.args.live[0]:
                    self.res.update(e2e_first_audio_ms_p50=r["e2e_ms_p50"], e2e_first_audio_ms_p90=r["e2e_ms_p90"],
                                    sum_parts_ms_p50=r["sum_parts_ms_p50"], e2e_live_sessions=live)
                self.save()
                print(f"  e2e p50/p90 {r['e2e_ms_p50']:.1f}/{r['e2e_ms_p90']:.1f} ms = VAD {self.vad_ms:.0f} + "
                      f"ASR {r['asr_ms_p50']:.1f} + engine {r['engine_ms_p50']:.1f} + TTS {r['tts_ms_p50']:.1f} "
                      f"(p50s)", flush=True)
        finally:
            self.worker.stop()
        return 1 if self.res["errors"] else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.bench.turn", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--live", type=int, nargs="+", default=[1, 4], help="live session counts (turn session included)")
    ap.add_argument("--turn-every-s", type=float, default=1.5)
    ap.add_argument("--asr-tokens", type=int, default=12, help="transcript length held fixed")
    ap.add_argument("--sentence-tokens", type=int, default=8, help="reply tokens of the first sentence")
    ap.add_argument("--reply-tokens", type=int, default=24, help="reply length (the reply goes on during TTS)")
    ap.add_argument("--sentence-chars", type=int, default=40, help="characters of the first sentence for VITS")
    ap.add_argument("--warm-chunks", type=int, default=30)
    add_model_args(ap)
    a = ap.parse_args(argv)
    own = None
    if a.turns < 1 or min(a.live) < 1 or a.sentence_tokens < 1 or a.reply_tokens < a.sentence_tokens:
        own = "--turns, --live and --sentence-tokens must be >= 1, and --reply-tokens >= --sentence-tokens"
    return bad_args(a, own) or TurnBench(a).run()


if __name__ == "__main__":
    sys.exit(main())
