"""The token layout of the AURA stream (protocol section 2), rendered as ids by us.

Contract: ``Specials.from_tokenizer(tok)`` reads the special-token ids from the tokenizer
(never guessed) and raises ``ValueError`` when one is missing (notably ``<|silent|>``).
``structural`` (ids never generated) never holds ``<|silent|>`` or ``<|im_end|>``, whether
or not the tokenizer lists them among its special tokens.
``Layout`` turns turns into ``Segment``s, the unit the session appends to a KV cache:

* ``system()``      ``<|im_start|>system\\n{prompt}<|im_end|>\\n``
* ``chunk(hw, q)``  ``<|im_start|>user\\n<0.5 seconds><|vision_start|><|video_pad|>*n<|vision_end|>{q}``
                    ``<|im_end|>\\n<|im_start|>assistant\\n`` (one chunk = one video item with a
                    chunk-local timestamp; the question, if any, after the video in the same turn)
* ``text_turn(t)``  ``<|im_start|>user\\n{t}<|im_end|>\\n<|im_start|>assistant\\n`` (QA history,
                    ``t`` may be empty for a continuation round)
* ``answer(ids)``   ``{ids}<|im_end|>\\n``, or ``<|silent|><|im_end|>\\n`` for ``None`` (silent)

Every user/assistant pair therefore ends with ``<|im_end|>\\n``: two user turns never
follow each other. Text between special tokens is tokenized as one span, which is what
tokenizing the whole chat-template string gives (special tokens split first). User text is
tokenized with ``split_special_tokens=True`` so a question cannot inject ``<|im_end|>``;
it is stripped and capped at ``MAX_QUESTION_CHARS``. The system prompt is trusted config
and keeps its special tokens: the benchmark prompt's literal `<|silent|>` becomes the
special token, as the chat template + tokenizer give it. ``n`` = merged grid h x w of the
chunk (one temporal group of 2 frames).

Relation to the HF processor (pinned by tests/model/test_prompt.py): transformers 5.x
expands the chat template's ``<|vision_start|><|video_pad|><|vision_end|>`` into
``<|vision_start|><t seconds><|vision_start|>pads<|vision_end|><|vision_end|>`` (an extra,
nested start/end pair around the timestamped group; 4.57 does not nest) and derives the
timestamp from frame indices and fps (``<0.2 seconds>`` for 2 frames at 2 fps). We render
the un-nested form with the configured timestamp (``<0.5 seconds>``, the benchmark's).
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_QUESTION_CHARS = 2000

_NAMES = {"im_start": "<|im_start|>", "im_end": "<|im_end|>",
          "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>",
          "image_pad": "<|image_pad|>", "video_pad": "<|video_pad|>", "silent": "<|silent|>"}


@dataclass(frozen=True)
class Specials:
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int
    silent: int
    extra: frozenset[int] = frozenset()   # other special ids of the tokenizer (never generated;
                                          # never <|silent|> or <|im_end|>)

    @classmethod
    def from_tokenizer(cls, tok) -> "Specials":
        vocab = tok.get_vocab()
        missing = [text for text in _NAMES.values() if text not in vocab]
        if missing:
            raise ValueError(f"the tokenizer has no {', '.join(missing)} token"
                             + (" (not an AURA checkpoint?)" if "<|silent|>" in missing else ""))
        ids = {name: vocab[text] for name, text in _NAMES.items()}
        # never the two silence tokens, however the tokenizer registers them: a fine-tune
        # usually adds <|silent|> as an additional special token (issue 12 item 1)
        extra = frozenset(int(i) for i in getattr(tok, "all_special_ids", [])) - {ids["im_end"], ids["silent"]}
        return cls(**ids, extra=extra)

    @property
    def structural(self) -> frozenset[int]:
        """Ids a reply must never contain: they would corrupt the turn layout. Never
        ``<|silent|>`` or ``<|im_end|>``: both must stay possible on the first token."""
        return (frozenset({self.im_start, self.vision_start, self.vision_end, self.image_pad,
                           self.video_pad}) | self.extra) - {self.silent, self.im_end}


@dataclass(frozen=True)
class Segment:
    """Ids appended to a cache in one go. ``vision_at`` is the index of the first video pad
    (-1 for text only); the block has ``grid_hw[0] * grid_hw[1]`` pads; ``key`` names the
    round whose vision features fill it."""
    ids: tuple[int, ...]
    vision_at: int = -1
    grid_hw: tuple[int, int] = (0, 0)
    key: int = -1

    @property
    def n_visual(self) -> int:
        return self.grid_hw[0] * self.grid_hw[1] if self.vision_at >= 0 else 0

    def __len__(self) -> int:
        return len(self.ids)


class Layout:
    """Renders turns as ids for one tokenizer, system prompt and timestamp label."""

    def __init__(self, tokenizer, specials: Specials, system_prompt: str, timestamp_s: float = 0.5):
        self.tok = tokenizer
        self.sp = specials
        self.system_prompt = system_prompt
        self.timestamp = f"<{timestamp_s:.1f} seconds>"
        self._nl = self._encode("\n")
        self._assistant_header = (specials.im_start, *self._encode("assistant\n"))
        self._turn_end = (specials.im_end, *self._nl)

    @classmethod
    def for_config(cls, tokenizer, specials: Specials, cfg) -> "Layout":
        """The layout an engine config asks for (``cfg``: an ``app.config.EngineConfig``):
        its system prompt plus the optional language instruction, its timestamp label."""
        system = cfg.system_prompt + (f" Respond in {cfg.language}." if cfg.language else "")
        return cls(tokenizer, specials, system, cfg.chunk_timestamp_s)

    def _encode(self, text: str, user: bool = False) -> tuple[int, ...]:
        if not text:
            return ()
        ids = self.tok.encode(text, add_special_tokens=False, split_special_tokens=user)
        return tuple(int(i) for i in ids)

    @staticmethod
    def clean(text: str | None) -> str:
        """A user's text as it goes into the prompt: stripped and capped."""
        return (text or "").strip()[:MAX_QUESTION_CHARS]

    def system(self) -> Segment:
        ids = (self.sp.im_start, *self._encode("system\n" + self.system_prompt), *self._turn_end)
        return Segment(ids)

    def chunk(self, grid_hw: tuple[int, int], question: str | None, key: int = -1) -> Segment:
        head = (self.sp.im_start, *self._encode("user\n" + self.timestamp), self.sp.vision_start)
        pads = (self.sp.video_pad,) * (grid_hw[0] * grid_hw[1])
        ids = (*head, *pads, self.sp.vision_end, *self._encode(self.clean(question), user=True),
               *self._turn_end,
               *self._assistant_header)
        return Segment(ids, vision_at=len(head), grid_hw=tuple(grid_hw), key=key)

    def text_turn(self, text: str | None) -> Segment:
        body = self._encode("user\n" + self.clean(text), user=True)
        return Segment((self.sp.im_start, *body, *self._turn_end, *self._assistant_header))

    def answer(self, reply: tuple[int, ...] | None) -> Segment:
        body = (self.sp.silent,) if reply is None else tuple(reply)
        return Segment((*body, *self._turn_end))
