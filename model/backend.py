"""The seam between the session engine and the language-model runtime.

Contract: an ``LMBackend`` runs the Qwen3-VL *text* stack over a per-session KV cache.
The engine owns everything above it (token layout, embeddings, vision features, M-RoPE
position ids, the context policy); a backend owns only the cache and the forward pass.

* ``new_cache()`` returns an empty cache handle; handles are independent (a session may
  hold two: the live one and a shadow being rebuilt for the next window cut).
* ``append(cache, embeds, position_ids, visual_mask, deepstack)`` appends ``L`` tokens
  at the end of ``cache`` and returns the float32 logits of the LAST appended position,
  shape ``(vocab,)``.
  - ``embeds``: ``(L, hidden)`` input embeddings, vision features already scattered in.
  - ``position_ids``: ``(3, L)`` int64 M-RoPE positions (t, h, w rows), explicit always.
  - ``visual_mask``: ``(L,)`` bool, True at vision-token positions, or None.
  - ``deepstack``: list of ``(n_visual, hidden)`` tensors added to the hidden states at
    the visual positions after the first ``len(deepstack)`` decoder layers, or None.
* ``length(cache)`` is the number of tokens held; ``truncate(cache, n)`` keeps the first
  ``n``; ``release(cache)`` frees it (the handle must not be used afterwards).

Two implementations: ``model.reference.ReferenceBackend`` (plain transformers with a
``DynamicCache``: slow, obviously correct, the CPU path) and the fast GPU backend. The
fast one is tested against the reference one (architecture rule 5).
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class LMBackend(Protocol):
    def new_cache(self) -> Any: ...

    def append(self, cache: Any, embeds: torch.Tensor, position_ids: torch.Tensor,
               visual_mask: torch.Tensor | None = None,
               deepstack: list[torch.Tensor] | None = None) -> torch.Tensor: ...

    def length(self, cache: Any) -> int: ...

    def truncate(self, cache: Any, n: int) -> None: ...

    def release(self, cache: Any) -> None: ...
