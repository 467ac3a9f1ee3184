"""``check-model``: does a checkpoint see and decide as the engine feeds it? (no weights)

Contract: ``run_check(cfg, say=print) -> int`` reads the tokenizer, the processor (chat
template + video processor) and the config of ``cfg.model`` (HF id or local directory; no
weights are loaded) and says, one line each:
* the special-token ids, and whether ``<|silent|>`` and ``<|im_end|>`` can be generated
  (never in the engine's banned set, inside the LM head's vocabulary);
* whether the engine's ids for a short scripted stream (system prompt, four chunks of
  640x480 frames, a question, a spoken answer, silent turns, the generation prompt) equal
  the checkpoint's own ``chat_template`` + processor, compared after the two known,
  intended differences are undone (the processor's chunk timestamp label; the extra
  ``<|vision_start|>...<|vision_end|>`` pair transformers 5.x nests around a video), with
  the first difference shown (position and tokens on both sides);
* whether the engine's pixel rows equal the processor's (resizing on) within 1 level;
* tokens per chunk for 640x480 and 1280x720 at the configured pixel budget, checked
  against the processor's grid.
Returns 0 when everything matches, 1 on a mismatch, 2 when the checkpoint cannot be read
(one line on stderr, like every start-up error).
"""
from __future__ import annotations

import re
import sys
from typing import Callable

import numpy as np

from app.config import PIXEL_BUDGETS, EngineConfig

Say = Callable[[str], None]
SIZES = ((480, 640), (720, 1280))            # (h, w) of the usual webcams
QUESTION = "What is on the table?"
ANSWER = "There is a red cup on the table."
CONTEXT = 6                                  # tokens shown on each side of a difference


def _frames(h: int, w: int, seed: int) -> np.ndarray:
    """Two frames (2, h, w, 3): a smooth pattern with noise, so a resize shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 127 + 100 * np.sin(x / 23.0 + seed) * np.cos(y / 17.0)
    frames = base[None, ..., None] + rng.normal(0, 20, (2, h, w, 3))
    return frames.clip(0, 255).astype(np.uint8)


def _unnest(ids: list[int], start: int, end: int) -> list[int]:
    """Drop an outer ``start ... start ... end end`` pair (transformers 5.x nests one)."""
    out, pending = [], 0
    for k, t in enumerate(ids):
        if t == start:
            nxt = next((u for u in ids[k + 1:] if u in (start, end)), None)
            if nxt == start:
                pending += 1
                continue
        if t == end and pending and out and out[-1] == end:
            pending -= 1
            continue
        out.append(t)
    return out


def first_difference(ours: list[int], theirs: list[int]) -> int | None:
    """Index of the first differing id (or the shorter length), None when equal."""
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return k
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def _window(tok, ids: list[int], k: int) -> str:
    return repr(tok.convert_ids_to_tokens(ids[max(0, k - CONTEXT):k + CONTEXT]))


class _Checker:
    def __init__(self, cfg: EngineConfig, say: Say):
        from transformers import AutoConfig, AutoProcessor
        from model.prompt import Specials
        from model.vlm import locate
        self.cfg, self.say = cfg, say
        path = locate(cfg.model, say)
        self.proc = AutoProcessor.from_pretrained(path)
        self.tok = self.proc.tokenizer
        self.vproc = self.proc.video_processor
        self.vproc.cap_pixels_per_frame = False        # as the loader: the budget is ours
        self.sp = Specials.from_tokenizer(self.tok)
        text_cfg = getattr(AutoConfig.from_pretrained(path), "text_config", None)
        self.vocab = int(getattr(text_cfg, "vocab_size", 0) or len(self.tok))
        self.ok = True

    def fail(self, line: str) -> None:
        self.ok = False
        self.say("MISMATCH " + line)

    def specials(self) -> None:
        sp = self.sp
        named = ", ".join(f"{n} {getattr(sp, n)}" for n in
                          ("im_start", "im_end", "vision_start", "vision_end", "image_pad", "video_pad", "silent"))
        self.say(f"special ids: {named}; LM head rows {self.vocab}")
        registered = set(getattr(self.tok, "all_special_ids", []))
        for name, tid in (("<|silent|>", sp.silent), ("<|im_end|>", sp.im_end)):
            kind = "a registered special token" if tid in registered else "an added token"
            if tid in sp.structural or tid >= self.vocab:
                self.fail(f"{name} ({tid}, {kind}) can NOT be generated")
            else:
                self.say(f"{name} ({tid}, {kind}) can be generated")

    def _processor(self, text: str, videos: list[np.ndarray], **extra):
        from transformers.video_utils import VideoMetadata
        meta = [VideoMetadata(total_num_frames=len(v), fps=2.0, frames_indices=list(range(len(v))))
                for v in videos]
        size = {"shortest_edge": self.vproc.size.shortest_edge, "longest_edge": self.cfg.max_pixels}
        return self.proc(text=[text], videos=videos, return_tensors="pt",
                         videos_kwargs=dict(do_resize=True, size=size, do_sample_frames=False,
                                            video_metadata=meta, **extra))

    def rendering(self) -> None:
        from model.pixels import ChunkPixels
        from model.prompt import Layout
        videos = [_frames(480, 640, seed) for seed in range(4)]
        questions = [None, QUESTION, None, None]
        answers = [None, ANSWER, None]
        messages = [{"role": "system", "content": Layout.for_config(self.tok, self.sp, self.cfg).system_prompt}]
        for k, q in enumerate(questions):
            content = [{"type": "video"}] + ([{"type": "text", "text": q}] if q else [])
            messages.append({"role": "user", "content": content})
            if k < len(answers):
                messages.append({"role": "assistant", "content": answers[k] or "<|silent|>"})
        text = self.proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        theirs = self._processor(text, videos)["input_ids"][0].tolist()
        label = re.search(r"<(\d+(?:\.\d+)?) seconds>", self.tok.decode(theirs))
        stamp = float(label.group(1)) if label else self.cfg.chunk_timestamp_s
        layout = Layout(self.tok, self.sp, messages[0]["content"], stamp)
        grid = ChunkPixels(self.vproc, self.cfg.max_pixels, "cpu").grid_for(480, 640)
        merged = (grid[1] // self.vproc.merge_size, grid[2] // self.vproc.merge_size)
        ours = list(layout.system().ids)
        for k, q in enumerate(questions):
            ours += layout.chunk(merged, q).ids
            if k < len(answers):
                reply = None if answers[k] is None else tuple(self.tok.encode(answers[k], add_special_tokens=False))
                ours += layout.answer(reply).ids
        theirs = _unnest(theirs, self.sp.vision_start, self.sp.vision_end)
        note = (f"timestamps compared as the processor labels them (<{stamp:g} seconds>; the engine "
                f"uses <{self.cfg.chunk_timestamp_s:g} seconds>)")
        k = first_difference(ours, theirs)
        if k is None:
            self.say(f"rendering: the engine's {len(ours)} ids equal the chat template + processor's; {note}")
        else:
            self.fail(f"rendering: first difference at id {k} of {len(ours)} (engine) / {len(theirs)} "
                      f"(checkpoint): engine {_window(self.tok, ours, k)} vs checkpoint "
                      f"{_window(self.tok, theirs, k)}; {note}")

    def pixels(self) -> None:
        from model.pixels import ChunkPixels
        prep = ChunkPixels(self.vproc, self.cfg.max_pixels, "cpu")
        std = min(self.vproc.image_std) if self.vproc.do_normalize else 1.0
        level = (float(self.vproc.rescale_factor) if self.vproc.do_rescale else 1.0) / std
        for h, w in SIZES:
            frames = _frames(h, w, 7)
            out = self._processor("<|vision_start|><|video_pad|><|vision_end|>", [frames])
            grid = tuple(out["video_grid_thw"][0].tolist())
            tokens = grid[0] * grid[1] * grid[2] // self.vproc.merge_size ** 2
            mine, mine_grid = prep.prepare(tuple(frames))
            if tuple(mine_grid[0].tolist()) != grid:
                self.fail(f"{w}x{h}: engine grid {tuple(mine_grid[0].tolist())}, processor {grid}")
                continue
            diff = float((mine - out["pixel_values_videos"]).abs().max()) / level
            line = (f"{w}x{h}: {tokens} tokens per chunk at pixel budget {self.cfg.pixel_budget} "
                    f"({self.cfg.max_pixels:,} px); pixels within {diff:.2f} levels of the processor's")
            if diff > 1.0 + 1e-3:
                self.fail(line)
            else:
                self.say(line)


def run_check(cfg: EngineConfig, say: Say = print) -> int:
    from model.vlm import ModelLoadError
    try:
        checker = _Checker(cfg, say)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, AttributeError) as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        print(f"error: {cfg.model}: cannot read the tokenizer/processor/config ({why})", file=sys.stderr)
        return 2
    say(f"checking {cfg.model}")
    checker.specials()
    checker.rendering()
    checker.pixels()
    other = ", ".join(f"{name} = {px:,} px" for name, px in PIXEL_BUDGETS.items())
    verdict = ("OK: the engine feeds this checkpoint what its own template and processor give"
               if checker.ok else "MISMATCH: see the lines above")
    say(f"{verdict} (pixel budgets: {other}; --pixel-budget to change)")
    return 0 if checker.ok else 1
