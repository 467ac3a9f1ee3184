"""The speech stack as a GPU load, for the placement benchmark (model/bench/gpus.py).

Contract: ``speech_worker(conn, device, tiny, alone_s)`` is the entry point of a separate
process (multiprocessing, spawn) or of a thread (``--speech-in-process``). It builds, with random weights in real shapes of
transformers' own classes (the GPU image has no coqui-tts or faster-whisper):
* ``VitsModel`` at ``VitsConfig()``'s defaults, the MMS-TTS size (36 M parameters,
  float32 as Coqui runs VITS), synthesising an 80-character sentence;
* ``WhisperForConditionalGeneration`` in the large-v3-turbo shape (32 encoder / 4 decoder
  layers, d_model 1280, 20 heads, 128 mel bins, 809 M parameters, float16 on CUDA as
  faster-whisper runs it): the encoder over 30 s of features (128 x 3000), then 20 greedy
  decoder steps with a KV cache (a host sync per token, as a real decoder loop has);
then loops TTS + ASR back to back (a continuous load). It measures the loop alone for
``alone_s`` seconds, sends ``{"type": "ready", "setup_s", "params_m", "alone": stats}``,
keeps looping until the parent sends ``"stop"``, then sends ``{"type": "done",
"loaded": stats, "max_memory_allocated_gb"}``; any failure is sent as ``{"type": "error",
"error": traceback}``. ``stats``: iterations, loops per second, TTS / ASR-encode /
ASR-decode ms (p50, p90) and the audio produced. ``tiny=True``: small shapes (CPU tests).
"""
from __future__ import annotations

import time
import traceback

from model.bench.stats import pct

SENTENCE_CHARS = 80
ASR_TOKENS = 20
FEATURE_FRAMES = 3000          # 30 s of 10-ms mel frames


def whisper_config(tiny: bool):
    from transformers import WhisperConfig
    if tiny:
        return WhisperConfig(vocab_size=51866, num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=2,
                             encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                             decoder_ffn_dim=128, max_source_positions=1500, max_target_positions=448)
    return WhisperConfig(vocab_size=51866, num_mel_bins=128, d_model=1280, encoder_layers=32, decoder_layers=4,
                         encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120,
                         decoder_ffn_dim=5120, max_source_positions=1500, max_target_positions=448)


def vits_config(tiny: bool):
    from transformers import VitsConfig
    if tiny:
        return VitsConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, flow_size=32,
                          upsample_initial_channel=32, prior_encoder_num_wavenet_layers=2,
                          posterior_encoder_num_wavenet_layers=2, duration_predictor_filter_channels=32,
                          upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
                          resblock_dilation_sizes=[[1, 3]])
    return VitsConfig()


class SpeechLoad:
    """Random-weight TTS + ASR on one device; ``once()`` runs one TTS + ASR round."""

    def __init__(self, device: str, tiny: bool):
        import torch
        from transformers import VitsModel, WhisperForConditionalGeneration
        self.torch = torch
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.set_device(self.device)
        half = torch.float16 if cuda else torch.float32
        torch.manual_seed(0)
        with torch.device(self.device):
            self.tts = VitsModel(vits_config(tiny)).eval()
            self.asr = WhisperForConditionalGeneration(whisper_config(tiny)).to(half).eval()
        self.text = torch.randint(0, self.tts.config.vocab_size, (1, SENTENCE_CHARS), device=self.device)
        self.features = torch.randn(1, 128, FEATURE_FRAMES, device=self.device, dtype=half)
        self.start = self.asr.config.decoder_start_token_id
        self.sync = torch.cuda.synchronize if cuda else (lambda: None)
        self.params_m = {"tts": sum(p.numel() for p in self.tts.parameters()) / 1e6,
                         "asr": sum(p.numel() for p in self.asr.parameters()) / 1e6}
        self.sample_rate = self.tts.config.sampling_rate

    def once(self) -> dict:
        torch = self.torch
        with torch.inference_mode():
            t0 = time.perf_counter()
            wave = self.tts(input_ids=self.text).waveform
            self.sync()
            t1 = time.perf_counter()
            enc = self.asr.model.encoder(self.features)
            self.sync()
            t2 = time.perf_counter()
            tok = torch.tensor([[self.start]], device=self.device)
            past = None
            for _ in range(ASR_TOKENS):
                out = self.asr(encoder_outputs=enc, decoder_input_ids=tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
                tok = out.logits[:, -1:].argmax(-1)
                int(tok)                                   # the host reads each token
            t3 = time.perf_counter()
        return {"tts_ms": (t1 - t0) * 1e3, "encode_ms": (t2 - t1) * 1e3, "decode_ms": (t3 - t2) * 1e3,
                "audio_s": wave.shape[-1] / self.sample_rate, "t_end": t3}


def summarize(rounds: list[dict], wall_s: float) -> dict:
    out = {"iterations": len(rounds), "wall_s": wall_s,
           "loops_per_s": len(rounds) / wall_s if wall_s > 0 else None,
           "tts_audio_s_per_s": sum(r["audio_s"] for r in rounds) / wall_s if wall_s > 0 else None}
    for key in ("tts_ms", "encode_ms", "decode_ms"):
        vals = [r[key] for r in rounds]
        out[f"{key[:-3]}_p50_ms"], out[f"{key[:-3]}_p90_ms"] = pct(vals, 0.5), pct(vals, 0.9)
    return out


def speech_worker(conn, device: str, tiny: bool, alone_s: float) -> None:
    try:
        t0 = time.perf_counter()
        load = SpeechLoad(device, tiny)
        for _ in range(2):                                  # warm-up: kernels, allocator
            load.once()
        setup_s = time.perf_counter() - t0
        rounds, t_alone = [], time.perf_counter()
        while not rounds or time.perf_counter() - t_alone < alone_s:
            rounds.append(load.once())
        alone = summarize(rounds, time.perf_counter() - t_alone)
        conn.send({"type": "ready", "setup_s": setup_s, "params_m": load.params_m, "alone": alone})
        rounds, t_loaded = [], time.perf_counter()
        while not conn.poll():
            rounds.append(load.once())
        conn.recv()
        loaded = summarize(rounds, time.perf_counter() - t_loaded)
        mem = None
        if load.device.type == "cuda":
            mem = load.torch.cuda.max_memory_allocated(load.device) / 1e9
        conn.send({"type": "done", "loaded": loaded, "max_memory_allocated_gb": mem})
    except Exception:                      # reported to the parent, which records it and fails
        conn.send({"type": "error", "error": traceback.format_exc(limit=6)})
    finally:
        conn.close()
