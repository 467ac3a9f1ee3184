"""The untrained tiny AURA checkpoint for the colour world, saved like the real one.

Contract: ``init(out_dir, seed=0, size=SIZE) -> out_dir`` writes a Qwen3-VL checkpoint
(config.json, model.safetensors, tokenizer with the Qwen special tokens and ``<|silent|>``,
video/image processor configs, chat template) that ``model.vlm.AuraModel.load`` loads.
The tokenizer is a byte-level BPE trained on the task's own sentences (so colour names
and the acknowledgement are a few tokens each); special tokens, chat template and
pre-tokenizer are model/tiny.py's. ``save(hf_model, out_dir)`` writes trained weights
(float32 safetensors). ``MAX_PIXELS`` is the pixel budget the model is trained and served
at (64x64 over two frames: a 2x2 or 1x2 merged grid per chunk). ``SIZES`` names the
model shapes ``init`` takes. ``copy_weights(src, out)``
copies a trained checkpoint (not its training record) to train it further.
"""
from __future__ import annotations

from pathlib import Path

from model.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, bpe_tokenizer
from model.train import tasks
from model.train.world import NAMES

MAX_PIXELS = 2 * 64 * 64
BPE_VOCAB = 600
# text hidden, layers, heads, kv heads, head dim, mlp; vision depth and hidden
SIZE = dict(hidden=96, layers=3, heads=4, kv_heads=2, head_dim=24, mlp=192, vdepth=1, vhidden=32)
# named sizes for ``python -m model.train --size``; "wide" has a power-of-two head dim (the
# fast backend's kernels need one) and stays under 5 MB of float32 weights
SIZES = {"small": SIZE,
         "wide": dict(hidden=128, layers=4, heads=4, kv_heads=2, head_dim=32, mlp=256, vdepth=1, vhidden=32)}


def corpus() -> list[str]:
    from app.config import BENCHMARK_SYSTEM_PROMPT
    lines = [BENCHMARK_SYSTEM_PROMPT, "user\n<0.5 seconds>", "assistant\n", "system\n", tasks.ACK]
    for c in NAMES:
        lines += [tasks.answer_colour(c), tasks.alert(c)] + [q.format(c=c) for q in tasks.ASK_WHEN]
    lines += list(tasks.ASK_COLOUR) + list(tasks.ASK_WAITING) + [tasks.NOTHING]
    for c in NAMES:
        lines += [tasks.answer_waiting(c), tasks.answer_is(c, c), tasks.answer_is("red" if c != "red" else "blue", c)]
        lines += [q.format(c=c) for q in tasks.ASK_IS]
    return lines


def tokenizer():
    return bpe_tokenizer(corpus(), BPE_VOCAB)


def config(tok, size: dict = SIZE):
    from transformers import Qwen3VLConfig
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half = size["head_dim"] // 2                   # mrope sections sum to head_dim / 2
    sections = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=size["hidden"], intermediate_size=size["mlp"],
                         num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                         num_key_value_heads=size["kv_heads"], head_dim=size["head_dim"],
                         max_position_embeddings=262144,
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                          "mrope_section": sections, "mrope_interleaved": True},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=size["vdepth"], hidden_size=size["vhidden"], intermediate_size=2 * size["vhidden"],
                           num_heads=2, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=size["hidden"], num_position_embeddings=256,
                           deepstack_visual_indexes=list(range(size["vdepth"]))),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)


def init(out_dir: Path, seed: int = 0, size: dict = SIZE) -> Path:
    import torch
    from transformers import (Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration, Qwen3VLProcessor,
                              Qwen3VLVideoProcessor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config(tok, size))
    px = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32 * 1024}
    Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=px),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, size=px, fps=2),
        tokenizer=tok, chat_template=CHAT_TEMPLATE).save_pretrained(out_dir)
    save(model, out_dir)
    return out_dir


def save(hf_model, out_dir: Path) -> None:
    import torch
    hf_model.to(torch.float32).save_pretrained(out_dir)


TRAINING_FILES = ("aura_train.json", "train_state.pt", "eval.json")


def copy_weights(src: Path, out_dir: Path) -> Path:
    """A trained checkpoint's files (weights, tokenizer, processor) into ``out_dir``, without
    its training record, notes or logs, so ``python -m model.train --init src`` trains it
    further."""
    import shutil
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in TRAINING_FILES and f.suffix not in (".md", ".log"):
            shutil.copy2(f, out_dir / f.name)
    return out_dir
