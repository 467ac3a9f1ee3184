"""The slow, obviously correct twin the fast backend is checked against.

Contract: ``HFTextCache(hf_model)`` runs the plain transformers Qwen3-VL text stack over a
``DynamicCache`` with the same ``append(embeds, position_ids, visual_mask, deepstack) ->
float32 logits of the last row`` call as ``LMBackend`` (one cache per object), plus
``kv()`` (per-layer keys/values, for ``FastBackend.load_kv``). Until the engine's
``model.reference.ReferenceBackend`` lands on this branch, this is the reference path of
the fast backend's tests and of the benchmark's 8B agreement check.
"""
from __future__ import annotations

import copy

import torch

from model.fast.backend import text_parts


def new_dynamic_cache(text_config):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=text_config)
    except TypeError:          # older signature without a config
        return DynamicCache()


class HFTextCache:
    """``attn`` picks the transformers attention implementation for this cache's forwards
    (e.g. "eager" next to the default "sdpa", to measure how much two correct references
    differ); ``copy_of`` starts from a copy of another HFTextCache's cache."""

    def __init__(self, hf_model, *, attn: str | None = None, copy_of: "HFTextCache | None" = None):
        self.text, self.lm_head = text_parts(hf_model)
        self.attn = attn
        if copy_of is not None:
            self.cache, self.length = copy.deepcopy(copy_of.cache), copy_of.length
        else:
            self.cache, self.length = new_dynamic_cache(self.text.config), 0

    def append(self, embeds, position_ids, visual_mask=None, deepstack=None) -> torch.Tensor:
        kw = {}
        if deepstack:
            kw = dict(visual_pos_masks=visual_mask.to(embeds.device)[None],
                      deepstack_visual_embeds=[f.to(embeds.device, embeds.dtype) for f in deepstack])
        cfg = self.text.config
        before = cfg._attn_implementation
        try:
            if self.attn:
                cfg._attn_implementation = self.attn
            with torch.no_grad():
                out = self.text(inputs_embeds=embeds[None], position_ids=position_ids.to(embeds.device)[:, None, :],
                                past_key_values=self.cache, use_cache=True, **kw)
                logits = self.lm_head(out.last_hidden_state[:, -1])
        finally:
            cfg._attn_implementation = before
        self.length += embeds.shape[0]
        return logits[0].float()

    def kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer ``(kv_heads, T, head_dim)`` keys and values."""
        keys, values = [], []
        for i in range(len(self.text.layers)):
            layer = self.cache.layers[i] if hasattr(self.cache, "layers") else None
            k = layer.keys if layer is not None else self.cache.key_cache[i]
            v = layer.values if layer is not None else self.cache.value_cache[i]
            keys.append(k[0])
            values.append(v[0])
        return keys, values
