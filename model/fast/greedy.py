"""``GreedyRun``: greedy decoding with the token kept on the device, one step ahead.

Contract: ``FastBackend.greedy(cache, position, bias, limit)`` returns a run over ``cache``;
``feed(token)`` says the consumer feeds ``token`` (the first one comes from the host, every
later one must be the token ``next()`` just returned); ``next()`` returns the greedy token
after everything fed so far (argmax of the raw logits plus ``bias``, a float32 vocabulary
vector: the session's repetition bias with ``-inf`` at banned ids, or None); ``close()``
leaves exactly the fed tokens in the cache (``position`` is the M-RoPE position of the
first fed token, text tokens take ``p, p, p``) and returns how many. At most ``limit``
tokens are fed.

Why: with the host choosing each token, the GPU idles while the host reads the logits,
picks a token and launches the next step (0.3-0.7 ms a token on the H100). Here one
graph (``FastBackend._greedy_step``) embeds the device-side token, runs the one-row
forward, adds the bias, takes the argmax into the same device token and advances the
cache length and position on the device; ``next()`` launches the step that feeds the
token it is about to return BEFORE waiting for it (a speculative step: if the token turns
out to be a stop, or the consumer stops, ``close()`` drops that row by truncation), so
the next forward is already queued while the host reads the token, turns it into text and
hands it on. The GPU runs step after step without a gap.

The backend's staging buffers are shared by all its caches: another append (or run) in
between makes the next launch reload this run's state (slot, length, position, bias and
its last token, read back from the host copy). Not thread-safe, like the backend.
"""
from __future__ import annotations

import torch

RING = 4


class GreedyRun:
    def __init__(self, backend, cache, position: int, bias: torch.Tensor | None, limit: int):
        self.be, self.cache = backend, cache
        self.base, self.pos0, self.limit = cache.length, int(position), int(limit)
        self.bias = bias
        self.launched = self.fed = 0
        self.first: int | None = None
        self.cuda = backend.device.type == "cuda"
        self.ring = torch.zeros(RING, dtype=torch.int64, pin_memory=self.cuda)
        self.events = [torch.cuda.Event() for _ in range(RING)] if self.cuda else None
        self.closed = False

    def _room(self) -> bool:
        return self.base + self.launched + 1 <= self.be.max_tokens

    def _launch(self) -> None:
        j, be = self.launched, self.be
        if not self._room():
            raise ValueError(f"greedy: {self.base + j} + 1 tokens exceed max_tokens={be.max_tokens}")
        if be._greedy_owner is not self:
            tok = self.first if j == 0 else self._read(j - 1)
            be._greedy_load(self.cache.slot, self.base + j, self.pos0 + j, tok, self.bias)
            be._greedy_owner = self
        be._greedy_launch(self.cache.slot, self.base + j)
        slot = j % RING
        self.ring[slot].copy_(be.buf.g_tok[0], non_blocking=self.cuda)
        if self.events is not None:
            self.events[slot].record()
        self.launched += 1
        self.cache.length = self.base + self.launched

    def _read(self, j: int) -> int:
        if self.events is not None:
            self.events[j % RING].synchronize()
        return int(self.ring[j % RING])

    def feed(self, token: int) -> None:
        if self.closed or self.fed >= self.limit:
            raise RuntimeError("greedy: feed after close() or beyond the limit")
        if self.fed == 0:
            self.first = int(token)
        if self.launched == self.fed:
            self._launch()
        self.fed += 1

    def next(self) -> int:
        if self.closed or self.fed == 0:
            raise RuntimeError("greedy: next() needs a fed token and an open run")
        if self.launched == self.fed and self.fed < self.limit and self._room():
            self._launch()         # the step feeding the token read below, queued first
        return self._read(self.fed - 1)

    def close(self) -> int:
        if not self.closed:
            self.closed = True
            self.cache.length = self.base + self.fed
            if self.be._greedy_owner is self:
                self.be._greedy_owner = None
        return self.fed
