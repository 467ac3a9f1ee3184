"""Random Qwen3-VL models for the fast backend's tests and the benchmark.

Contract: ``build_qwen3vl(config_dict, dtype, device, seed)`` returns an eval-mode
``Qwen3VLForConditionalGeneration`` with random weights (transformers' own init, seeded)
built straight on ``device``; ``tiny_config()`` is the recipe of
``docs/environment.md`` (2 text layers of width 64, 2 vision blocks, deepstack after both
text layers) with the real Qwen3-VL vocabulary size so the real special-token ids fit.
``load_config(path)`` reads a JSON config such as ``qwen3vl8b_config.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

VOCAB = 151936
IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END = 151655, 151656, 151652, 151653


def tiny_config() -> dict:
    return {
        "model_type": "qwen3_vl",
        "image_token_id": IMAGE_PAD, "video_token_id": VIDEO_PAD,
        "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": VOCAB, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
            "attention_bias": False, "tie_word_embeddings": False,
            "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2],
                             "mrope_interleaved": True},
            "rope_theta": 5e6,
        },
        "vision_config": {
            "model_type": "qwen3_vl", "depth": 2, "hidden_size": 32, "intermediate_size": 64,
            "num_heads": 2, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "out_hidden_size": 64, "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0, 1], "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
        },
    }


def load_config(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def build_qwen3vl(config: dict, *, dtype, device, seed: int = 0, attn: str = "sdpa"):
    """A random-weight Qwen3-VL built on ``device`` (no download, no checkpoint)."""
    import torch
    try:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    except ImportError as exc:
        raise ImportError("the fast backend's model builder needs transformers >= 5 "
                          "(pip install transformers)") from exc
    cfg = Qwen3VLConfig.from_dict(config)
    cfg._attn_implementation = attn
    cfg.text_config._attn_implementation = attn
    cfg.vision_config._attn_implementation = attn
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    return model.eval()
