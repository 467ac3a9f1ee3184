"""``ReferenceBackend``: the LMBackend of model/backend.py on plain transformers.

Contract: see ``model.backend.LMBackend``. The cache handle is a transformers
``DynamicCache``; ``append`` runs the checkpoint's own Qwen3-VL text stack
(``model.language_model``) on the given embeddings with the explicit 3-row positions,
the visual mask and the deepstack features, then the LM head on the last position.
Slow and obviously right: the CPU path, and what the fast GPU backend is tested against.
Only APIs that behave the same in transformers 5.17 and 5.23 are used (the cache is made
without arguments; ``truncate`` slices the layers itself instead of ``crop()``, whose
meaning changed).
"""
from __future__ import annotations

import torch


class ReferenceBackend:
    def __init__(self, hf_model):
        self.lm = hf_model.model.language_model
        self.head = hf_model.lm_head

    def new_cache(self):
        from transformers import DynamicCache
        return DynamicCache()

    @torch.inference_mode()
    def append(self, cache, embeds: torch.Tensor, position_ids: torch.Tensor,
               visual_mask: torch.Tensor | None = None,
               deepstack: list[torch.Tensor] | None = None) -> torch.Tensor:
        has_visual = visual_mask is not None and bool(visual_mask.any()) and deepstack
        dev = embeds.device
        out = self.lm(inputs_embeds=embeds[None], position_ids=position_ids[:, None, :].to(dev),
                      past_key_values=cache, use_cache=True,
                      visual_pos_masks=visual_mask[None].to(dev) if has_visual else None,
                      deepstack_visual_embeds=list(deepstack) if has_visual else None)
        # a VLM split over several GPUs ends on the last one: logits go back to the first
        return self.head(out.last_hidden_state[0, -1]).float().to(dev)

    def length(self, cache) -> int:
        return int(cache.get_seq_length())

    def truncate(self, cache, n: int) -> None:
        if n < 0 or n > self.length(cache):
            raise ValueError(f"truncate: cannot keep {n} of {self.length(cache)} tokens")
        for layer in cache.layers:
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys = layer.keys[..., :n, :]
                layer.values = layer.values[..., :n, :]

    def release(self, cache) -> None:
        for layer in cache.layers:
            layer.keys = None
            layer.values = None
        cache.layers.clear()
