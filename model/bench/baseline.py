"""The plain-transformers baseline of the benchmark (eager, DynamicCache), fed like AURA.

Contract: ``run_baseline(hf_model, make_pixels, chunks, decode_tokens, grid)`` drives the
full HF model exactly as a plain transformers engine would: per 1-s chunk one forward over
the user turn with ``pixel_values_videos`` (the HF vision encoder runs inside), explicit
M-RoPE positions and ``logits_to_keep=1``, then one forward for the silent turn; then
greedy decode of ``decode_tokens`` tokens at the context reached; then one window-cut
recompute (30 chunks re-encoded and re-prefilled into a fresh cache: what a plain engine
pays at each cut). Returns a dict of timings (ms); every figure is synchronised wall time.
"""
from __future__ import annotations

import time

import torch

from model.fast.reference import new_dynamic_cache
from model.bench.stream import SILENT_TURN, SYSTEM, V_PAD, relative_positions, user_chunk


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(dev, fn):
    _sync(dev)
    t = time.perf_counter()
    r = fn()
    _sync(dev)
    return r, (time.perf_counter() - t) * 1000


def run_baseline(hf_model, make_pixels, *, chunks: int, decode_tokens: int, grid=(1, 30, 40),
                 merge: int = 2, recompute_chunks: int = 30) -> dict:
    dev = next(hf_model.parameters()).device
    gh, gw = grid[1] // merge, grid[2] // merge
    ids = user_chunk(grid[0] * gh * gw)
    rel, adv = relative_positions(ids, gh, gw)
    ids_t = torch.tensor([ids], device=dev)
    mm = (ids_t == V_PAD).int() * 2
    thw = torch.tensor([list(grid)], device=dev)
    state = {"pos": 0}
    cfg = hf_model.config.text_config

    def forward(cache, input_ids, pos, **kw):
        with torch.no_grad():
            return hf_model(input_ids=input_ids, position_ids=pos[:, None, :].to(dev),
                            past_key_values=cache, use_cache=True, logits_to_keep=1, **kw).logits[0, -1]

    def text(cache, tokens):
        p = torch.arange(len(tokens)).expand(3, -1) + state["pos"]
        state["pos"] += len(tokens)
        return forward(cache, torch.tensor([tokens], device=dev), p)

    def chunk(cache):
        logits = forward(cache, ids_t, rel + state["pos"], pixel_values_videos=make_pixels(),
                         video_grid_thw=thw, mm_token_type_ids=mm)
        state["pos"] += adv
        int(logits.argmax())
        text(cache, SILENT_TURN)

    cache = new_dynamic_cache(cfg)
    text(cache, SYSTEM)
    chunk(cache)                                   # warm-up (not counted)
    cache, state["pos"] = new_dynamic_cache(cfg), 0
    text(cache, SYSTEM)
    steps = [_timed(dev, lambda: chunk(cache))[1] for _ in range(chunks)]
    context = cache.get_seq_length()
    tok = [int(text(cache, [1000]).argmax())]

    def decode():
        for _ in range(decode_tokens):
            tok.append(int(text(cache, [tok[-1]]).argmax()))
    _, dec_ms = _timed(dev, decode)
    del cache
    if dev.type == "cuda":
        torch.cuda.empty_cache()

    ids_n = torch.tensor([ids * recompute_chunks], device=dev)
    rel_n = torch.cat([rel + i * adv for i in range(recompute_chunks)], 1)
    pix_n = torch.cat([make_pixels() for _ in range(recompute_chunks)])

    def recompute():
        c = new_dynamic_cache(cfg)
        forward(c, ids_n, rel_n, pixel_values_videos=pix_n, video_grid_thw=thw.repeat(recompute_chunks, 1),
                mm_token_type_ids=(ids_n == V_PAD).int() * 2)
    _, cut_ms = _timed(dev, recompute)
    s = sorted(steps)
    return {"chunk_steps_ms": steps, "chunk_step_p50_ms": s[len(s) // 2],
            "chunk_step_max_ms": s[-1], "context_tokens": context,
            "decode_ms_per_token": dec_ms / decode_tokens, "window_cut_recompute_ms": cut_ms,
            "recompute_tokens": ids_n.shape[1]}
