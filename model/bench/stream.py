"""An AURA-fed stream over an LMBackend: the benchmark's harness of the engine's work.

Contract: ``StreamHarness(backend, encode, embed_weight, ...)`` keeps a live cache and a
shadow cache of ``backend`` and feeds them exactly what AURA's engine feeds its model
(aura-protocol.md): a system prompt, then per 1-s chunk one user turn
``<|im_start|>user\\n<0.5 seconds><|vision_start|>{video pads}<|vision_end|>{question}
<|im_end|>\\n<|im_start|>assistant\\n`` and one assistant turn (``<|silent|><|im_end|>\\n``,
or a reply), with explicit M-RoPE positions and the chunk's deepstack features.
``step(pixels, question)`` runs one chunk (vision encoder included) and returns timings;
``idle(budget_ms)`` does the shadow rebuild work that fits in the idle part of the second.

Window (protocol section 3): the video window grows to N + N' chunks; then the oldest N'
are dropped at once. The cache for what remains (system + the last M QA groups as text +
the kept chunks, positions re-based) is built ahead in the shadow cache during idle time,
from the cached vision features, and swapped in at the cut: a cut costs no recompute on
the critical path. If the shadow is not ready at a cut, the missing work is done inside
that step and counted there. Replies are forced to ``reply_tokens`` greedy tokens (random
weights say nothing meaningful); silence is scripted, as the benchmark fixes the schedule.

``fold_turn_end=True`` appends the end of each assistant turn (the 3 silent-turn tokens, or
the reply's last token + ``<|im_end|>\n``) at the front of the NEXT chunk's append instead
of in a forward of its own: the cache holds the same tokens at the same positions before
the next decision, and the 3-row forward (a full pass over the weights, ~7 ms) disappears.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

IM_START, IM_END, NL, USER, ASSISTANT = 151644, 151645, 198, 872, 77091
V_START, V_END, V_PAD, SILENT = 151652, 151653, 151656, 151669
TIMESTAMP = [27, 15, 13, 20, 6486, 29]                 # "<0.5 seconds>"
SYSTEM = [IM_START, 8948, NL] + list(range(1000, 1044)) + [IM_END, NL]
SILENT_TURN = [SILENT, IM_END, NL]


def user_chunk(n_vis: int, question: list[int] | None = None) -> list[int]:
    return ([IM_START, USER, NL, *TIMESTAMP, V_START] + [V_PAD] * n_vis + [V_END]
            + list(question or []) + [IM_END, NL, IM_START, ASSISTANT, NL])


def text_qa(question: list[int], answer: list[int]) -> list[int]:
    return ([IM_START, USER, NL, *question, IM_END, NL, IM_START, ASSISTANT, NL]
            + list(answer) + [IM_END, NL])


def relative_positions(ids: list[int], gh: int, gw: int) -> tuple[torch.Tensor, int]:
    """(3, L) M-RoPE positions from 0 and the advance: text +1 per token; a block of
    gh*gw video pads gets t=base, h=base+row, w=base+col and advances max(gh, gw)."""
    rows, p, i = [], 0, 0
    while i < len(ids):
        if ids[i] == V_PAD:
            r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
            rows.append(torch.stack([torch.zeros(gh * gw, dtype=torch.long), r.flatten(), c.flatten()]) + p)
            p, i = p + max(gh, gw), i + gh * gw
        else:
            rows.append(torch.full((3, 1), p, dtype=torch.long))
            p, i = p + 1, i + 1
    return torch.cat(rows, 1), p


@dataclass
class _Chunk:
    user: list[int]
    vision: tuple[torch.Tensor, list[torch.Tensor]]
    assistant: list[int] = field(default_factory=list)
    question: list[int] | None = None


@dataclass
class _CacheState:
    handle: object
    next_pos: int = 0


class StreamHarness:
    def __init__(self, backend, encode, embed_weight: torch.Tensor, *, grid=(1, 30, 40),
                 merge: int = 2, window_chunks: int = 30, float_chunks: int = 15,
                 qa_groups: int = 10, fold_turn_end: bool = False):
        self.backend, self.encode, self.embed_weight = backend, encode, embed_weight
        self.grid = tuple(grid)
        self.gh, self.gw = grid[1] // merge, grid[2] // merge
        self.n_vis = grid[0] * self.gh * self.gw
        self.n_keep, self.n_drop, self.qa_groups = window_chunks, float_chunks, qa_groups
        self.device = embed_weight.device
        self._pos_cache: dict[tuple[int, ...], tuple[torch.Tensor, int]] = {}
        self.live = _CacheState(backend.new_cache())
        self.shadow = _CacheState(backend.new_cache())
        self.window: list[_Chunk] = []
        self.qa: list[tuple[list[int], list[int]]] = []
        self.queue: list[tuple[list[int], object]] = []
        self.shadow_started = False
        self.queued_upto = 0
        self.cuts = 0
        self.fold = fold_turn_end
        self.pending: list[int] = []
        self._append(self.live, SYSTEM)

    # ---------------------------------------------------------------- appends
    def _append(self, st: _CacheState, ids: list[int], vision=None) -> torch.Tensor:
        key = tuple(ids)
        if key not in self._pos_cache:
            self._pos_cache[key] = relative_positions(ids, self.gh, self.gw)
        rel, adv = self._pos_cache[key]
        ids_t = torch.tensor(ids, device=self.device)
        emb = self.embed_weight[ids_t]
        mask = ds = None
        if vision is not None:
            mask = torch.tensor([i == V_PAD for i in ids])
            emb[mask.to(self.device)] = vision[0].to(emb.dtype)
            ds = vision[1]
        logits = self.backend.append(st.handle, emb, rel + st.next_pos, mask, ds)
        st.next_pos += adv
        return logits

    def _decode(self, st: _CacheState, token: int) -> torch.Tensor:
        return self._append(st, [token])

    # ---------------------------------------------------------------- the window
    def _qa_after_drop(self) -> list[tuple[list[int], list[int]]]:
        dropped = [(c.question, c.assistant[:-2]) for c in self.window[:self.n_drop] if c.question]
        return (self.qa + dropped)[-self.qa_groups:] if self.qa_groups else []

    def _cut(self) -> float:
        """Swap in the shadow; returns ms of shadow work that had to run inside the step."""
        t = time.perf_counter()
        late = bool(self.queue) or not self.shadow_started
        if late:
            self._work(float("inf"))
        self.qa = self._qa_after_drop()
        self.window = self.window[self.n_drop:]
        self.live, self.shadow = self.shadow, self.live
        self.pending = []                      # the shadow holds every finished turn in full
        self.backend.truncate(self.shadow.handle, 0)
        self.shadow.next_pos = 0
        self.shadow_started, self.queued_upto = False, 0
        self.cuts += 1
        return (time.perf_counter() - t) * 1000 if late else 0.0

    def _fill_queue(self) -> None:
        if not self.shadow_started:
            if len(self.window) <= self.n_drop:
                return
            self.backend.truncate(self.shadow.handle, 0)
            self.shadow.next_pos = 0
            prefix = list(SYSTEM)
            for q, a in self._qa_after_drop():
                prefix += text_qa(q, a)
            self.queue = [(prefix, None)]
            self.shadow_started, self.queued_upto = True, self.n_drop
        for c in self.window[self.queued_upto:]:
            self.queue.append((c.user + c.assistant, c.vision))
        self.queued_upto = len(self.window)

    def _work(self, budget_ms: float) -> None:
        t = time.perf_counter()
        self._fill_queue()
        while self.queue and (time.perf_counter() - t) * 1000 < budget_ms:
            ids, vision = self.queue.pop(0)
            self._append(self.shadow, ids, vision)
        torch.cuda.synchronize() if self.device.type == "cuda" else None

    def idle(self, budget_ms: float = 600.0) -> float:
        t = time.perf_counter()
        self._work(budget_ms)
        return (time.perf_counter() - t) * 1000

    # ---------------------------------------------------------------- one chunk
    def step(self, pixels: torch.Tensor, question: list[int] | None = None,
             reply_tokens: int = 12) -> dict:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        cut_ms = self._cut() if len(self.window) >= self.n_keep + self.n_drop else None
        embeds, deepstack = self.encode(pixels, self.grid)
        chunk = _Chunk(user_chunk(self.n_vis, question), (embeds, deepstack), question=question)
        logits = self._append(self.live, self.pending + chunk.user, chunk.vision)
        self.pending = []
        p_silent = torch.softmax(logits, -1)[SILENT]
        first, p_silent = torch.stack([logits.argmax().float(), p_silent]).tolist()
        first = int(first)
        t_first = time.perf_counter()
        out = {"kind": "question" if question else "silent", "cut": cut_ms is not None,
               "cut_late_ms": cut_ms or 0.0, "p_silent": p_silent, "decode_ms": []}
        if question:
            reply = [first]
            while len(reply) < reply_tokens:
                td = time.perf_counter()
                reply.append(int(self._decode(self.live, reply[-1]).argmax()))
                out["decode_ms"].append((time.perf_counter() - td) * 1000)
            chunk.assistant = reply + [IM_END, NL]
            self._end_turn([reply[-1], IM_END, NL])     # the last token is not in the cache yet
            out["ttft_ms"] = (t_first - t0) * 1000
        else:
            chunk.assistant = list(SILENT_TURN)
            self._end_turn(SILENT_TURN)
        sync()
        out["ms"] = (time.perf_counter() - t0) * 1000
        out["decision_ms"] = (t_first - t0) * 1000
        out["context"] = self.backend.length(self.live.handle)
        self.window.append(chunk)
        return out

    def _end_turn(self, ids: list[int]) -> None:
        if self.fold:
            self.pending = list(ids)
        else:
            self._append(self.live, ids)

    def close(self) -> None:
        for st in (self.live, self.shadow):
            self.backend.release(st.handle)
