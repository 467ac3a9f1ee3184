"""Tiny random speech models for offline tests and ``--preset offline``.

Contract: ``build(out_dir) -> {"whisper": DIR, "vits": DIR}`` writes
* ``out_dir/whisper-ct2``: a random Whisper (1 encoder + 1 decoder layer, d_model 32)
  converted to CTranslate2, with its own ``tokenizer.json`` (a byte-level BPE trained
  here on a few sentences, English-only special tokens in Whisper's order, 1501
  timestamp tokens) and ``preprocessor_config.json``, so faster-whisper never reaches the
  hub. It is shaped so that decoding yields text: the final layer norm carries a bias
  along one hidden axis and the timestamp tokens' (tied) embeddings point against it,
  so timestamps never win and random text tokens come out.
* ``out_dir/vits``: a random Coqui VITS (about 0.35 M parameters, espeak phonemes,
  22.05 kHz) as ``model.pth`` + ``config.json``.
Both load through exactly the adapters real models use (``speech.asr``, ``speech.tts``);
they produce noise and gibberish, and exist to exercise the real code paths. Building is
deterministic (seeded) and skipped when a finished build is already there.

``python -m speech.tiny OUT_DIR`` builds them and prints the paths as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

_STAMP = "tiny-speech-v1"
_CORPUS = [
    "what is on the table", "hello there how are you", "tell me when the kettle boils",
    "the quick brown fox jumps over the lazy dog", "a cup of coffee and a book",
    "is anyone at the door", "what colour is my shirt", "thanks that is all",
]
_WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                     "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _whisper_tokenizer(hf_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    tok.train_from_iterator(_CORPUS * 10, trainer)
    tok.add_special_tokens(_WHISPER_SPECIALS)
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    tok.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "model_max_length": 448}))
    return tok


def build_whisper(out: Path) -> Path:
    """A tiny random Whisper in CTranslate2 format at ``out``."""
    import shutil
    import tempfile

    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    with tempfile.TemporaryDirectory() as tmp:
        hf = Path(tmp)
        tok = _whisper_tokenizer(hf)
        ids = {s: tok.token_to_id(s) for s in _WHISPER_SPECIALS}
        eot, d_model = ids["<|endoftext|>"], 32
        config = WhisperConfig(
            vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=d_model,
            encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
            decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
            max_source_positions=1500, max_target_positions=448,
            pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
            decoder_start_token_id=ids["<|startoftranscript|>"],
            suppress_tokens=[], begin_suppress_tokens=[eot])
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config)
        model.generation_config.suppress_tokens = []
        model.generation_config.begin_suppress_tokens = [eot]
        with torch.no_grad():
            axis = torch.zeros(d_model)
            axis[0] = 1.0
            model.model.decoder.layer_norm.bias.copy_(10.0 * axis)
            emb = model.model.decoder.embed_tokens.weight       # tied with proj_out
            emb[:, 0] = 0.0
            emb[ids["<|notimestamps|>"] + 1:, 0] = -1.0
        model.save_pretrained(hf)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        ctranslate2.converters.TransformersConverter(
            str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(staging), force=True)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def build_vits(out: Path) -> Path:
    """A tiny random Coqui VITS (model.pth + config.json) at ``out``."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    args = VitsArgs(hidden_channels=32, hidden_channels_ffn_text_encoder=64, num_heads_text_encoder=2,
                    num_layers_text_encoder=1, num_layers_posterior_encoder=1, num_layers_flow=1,
                    upsample_initial_channel_decoder=32, resblock_kernel_sizes_decoder=[3],
                    resblock_dilation_sizes_decoder=[[1, 3, 5]], use_sdp=False, init_discriminator=False)
    audio = BaseAudioConfig(sample_rate=22050, fft_size=1024, win_length=1024, hop_length=256,
                            num_mels=80, mel_fmin=0, mel_fmax=None)
    config = VitsConfig(model_args=args, audio=audio, use_phonemes=True, phonemizer="espeak",
                        phoneme_language="en-us", text_cleaner="english_cleaners")
    torch.manual_seed(0)
    model = Vits(config)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, out / "model.pth")
    config.save_json(str(out / "config.json"))
    return out


def build(out_dir: Path) -> dict[str, Path]:
    """Build (or reuse) both tiny models under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"whisper": out_dir / "whisper-ct2", "vits": out_dir / "vits"}
    stamp = out_dir / "tiny-speech.done"
    if stamp.is_file() and stamp.read_text() == _STAMP and all(p.is_dir() for p in paths.values()):
        return paths
    build_whisper(paths["whisper"])
    build_vits(paths["vits"])
    stamp.write_text(_STAMP)
    return paths


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m speech.tiny",
                                     description="Write a tiny random Whisper (CTranslate2) and Coqui VITS.")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a directory", file=sys.stderr)
        return 2
    try:
        paths = build(out)
    except (ImportError, OSError) as e:
        print(f"error: could not build the tiny models: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
