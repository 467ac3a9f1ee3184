"""A tiny random AURA-compatible checkpoint, built offline in about ten seconds.

Contract: ``build(out_dir, seed=0) -> out_dir`` writes a complete Qwen3-VL checkpoint
directory: ``config.json`` + ``model.safetensors`` (random weights, ~0.3 M parameters),
a byte-level BPE tokenizer trained on a small built-in English text with the Qwen special
tokens and AURA's ``<|silent|>``, the image/video processor configs and a Qwen-style chat
template. ``model.vlm.AuraModel.load`` loads it through exactly the same code as the real
``aurateam/AURA``. The same seed gives byte-identical files.

Speak/silent balance. Random weights give flat logits, so greedy decoding would pick one
arbitrary token forever. The builder therefore calibrates two LM-head rows (the head has
no bias) on states of real sessions (model/session.py, 64x64 random frames, windows
6 s / 3 s): two runs that always speak (same structure, different frames) give, per row,
the hidden-state direction that moves most with the frames relative to how much the
stream's structure moves it; then ``<|silent|>`` is fitted to be the state's top other
logit plus ``SPREAD`` x (that signal - a threshold) at decision positions (6 below the
top inside replies), and ``<|im_end|>`` likewise at reply positions. Two more runs of the
shaped model set the thresholds so about ``SILENT_FRACTION`` of decisions are silent and
a reply ends with chance ``END_PER_TOKEN`` per token. ``silent_fraction=0`` builds a model
that (practically) always speaks (the pipeline tests use it: a question always gets an
answer, a meaningless one). Structural specials, and tokens with nothing printable (lone
control or partial UTF-8 bytes, which the app strips), get a logit near -30. Honest
caveat: the random model's states depend on context structure (time since a cut, window
size) more than on frames, so the silent/speak mix varies with the window settings (measured: 6 s/3 s windows about half silent; 30 s/15 s mostly silent). Tests use
seeded frames and assert that the paths they need actually occurred.

``silent_special=True`` (CLI ``--silent-special``) registers ``<|silent|>`` as an
additional special token of the tokenizer (in ``all_special_ids``), as a fine-tune usually
does; the weights are the same bytes (``register_silent_special`` rewrites only the
tokenizer files). The default leaves it an added token outside ``all_special_ids``. The
engine must decide the same either way (tests/model/test_session.py).

CLI: ``python -m model.tiny OUT_DIR [--seed S] [--silent-special]``. The offline preset
builds it once (app/presets.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|silent|>")
STRUCTURAL = ("<|endoftext|>", "<|im_start|>", "<|vision_start|>", "<|vision_end|>",
              "<|image_pad|>", "<|video_pad|>")
BPE_VOCAB = 600

# Our own chat template (Qwen style: newline after the role and after <|im_end|>).
# A video content item renders as <|vision_start|><|video_pad|><|vision_end|>, which the
# HF processor expands; text items follow in order.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- else -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Our own pre-tokenizer pattern: contractions, letter runs, single digits, punctuation
# runs, whitespace.
PRETOKENIZE = r"'(?:s|t|re|ve|m|ll|d)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

CORPUS = [
    "You are receiving a live video stream where the final frame is the present moment.",
    "Respond only when a response is needed based on the user's message or the visual context.",
    "Otherwise, output silent to signify silence. Respond in English.",
    "What is on the table? There is a red cup, a laptop and two books on the table.",
    "Tell me when the kettle boils. OK, I will let you know then. The kettle is boiling now.",
    "Remind me every time someone walks past the window. Someone just walked past the window.",
    "How many people are in the room? I can see three people in the room.",
    "What color is the car? The car is blue. It is parked next to a tree.",
    "Is the door open or closed? The door is open. A dog is coming in.",
    "Please describe what you see. A person is cooking pasta in a small kitchen.",
    "user assistant system seconds 0.5 0.2 1 2 3 4 5 6 7 8 9 10 100",
    "Yes. No. Maybe. Hello! Thanks, that helps. Where are my keys? Your keys are on the shelf.",
    "The light turned green. The timer is done. The cat jumped onto the sofa.",
]

SPREAD = 6.0            # logit units per standard deviation of the content signal
SILENT_FRACTION = 0.6   # target share of silent decisions on random frames
END_PER_TOKEN = 0.3     # target chance that a reply ends at each token
CALIBRATION_STEPS = 16
CALIBRATION_WINDOWS = (6.0, 3.0)


def bpe_tokenizer(corpus: list[str], vocab_size: int = BPE_VOCAB):
    """A byte-level BPE trained on ``corpus``, wrapped as a Qwen2-style tokenizer with the
    Qwen special tokens, ``<|silent|>`` and the chat template (model/train reuses it)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                      pad_token="<|endoftext|>", unk_token=None,
                                      model_max_length=262144)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _config(tok):
    from transformers import Qwen3VLConfig
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, max_position_embeddings=262144,
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                          "mrope_section": [4, 2, 2], "mrope_interleaved": True},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=64, num_position_embeddings=256,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)


def _session_states(model, tok, out_dir: Path, frames_seed: int):
    """Decision states and reply-token states (inputs of the LM head) of a real session
    (model/session.py) on random 64x64 frames, with a question every 8 chunks."""
    import numpy as np
    import torch
    from transformers import AutoVideoProcessor
    from app.config import EngineConfig
    from app.events import VideoChunk
    from model.reference import ReferenceBackend
    from model.session import AuraSession
    from model.vlm import AuraModel
    cfg = EngineConfig(model=str(out_dir), device="cpu", video_window_s=CALIBRATION_WINDOWS[0],
                       float_window_s=CALIBRATION_WINDOWS[1], max_new_tokens=5)
    aura = AuraModel(cfg, model, tok, AutoVideoProcessor.from_pretrained(out_dir), "cpu")
    aura.backend = ReferenceBackend(model)
    grabbed: list = []
    hook = model.lm_head.register_forward_hook(
        lambda _m, inp, _o: grabbed.append(inp[0].reshape(-1, inp[0].shape[-1])[-1]))
    rng = np.random.default_rng(frames_seed)
    dec, rep = [], []
    try:
        # turn ends unfolded: each is a forward of its own (the slicing below relies on it)
        session = AuraSession(aura, "calibration", fold_turn_end=False)
        for i in range(CALIBRATION_STEPS):
            frames = tuple(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
            before = len(grabbed)
            list(session.step(VideoChunk(i + 1.0, float(i), frames, i),
                              "What is on the table?" if i % 8 == 3 else None))
            new = grabbed[before:]
            dec.append(new[0])
            rep.extend(new[1:-1])      # states that choose reply tokens 2.. (the last appends the turn end)
        session.close()
    finally:
        hook.remove()
    return torch.stack(dec), torch.stack(rep)


def _content_direction(a, b):
    """For two runs with the same structure and different frames: the direction along which
    they differ most relative to how much their shared structure moves (a generalized
    eigenvector of the between-run versus within-structure covariances)."""
    import torch
    diff = (a - b) / 2
    mean = (a + b) / 2
    mean = mean - mean.mean(0)
    content = diff.T @ diff / len(diff)
    structure = mean.T @ mean / len(mean)
    structure += 1e-3 * torch.trace(structure) / len(structure) * torch.eye(len(structure))
    inv_l = torch.linalg.inv(torch.linalg.cholesky(structure))
    _, vecs = torch.linalg.eigh(inv_l @ content @ inv_l.T)
    d = inv_l.T @ vecs[:, -1]
    return d / d.norm(), float((diff @ (d / d.norm())).std() * 2 ** 0.5)


def _fit_row(groups):
    """The LM-head row whose logits best match the targets, each ``(states, targets)``
    group weighted equally (weighted ridge least squares)."""
    import torch
    dim = groups[0][0].shape[1]
    gram, rhs = 1e-4 * torch.eye(dim), torch.zeros(dim)
    for states, targets in groups:
        gram += states.T @ states / len(states)
        rhs += states.T @ targets / len(states)
    return torch.linalg.solve(gram, rhs)


class _Shaper:
    """Fits the <|silent|> and <|im_end|> rows: each logit is the state's top logit among
    the other tokens plus ``SPREAD`` x (content signal - threshold) where it may win, and 6
    below that top where it must not (silent inside replies, end at decisions)."""

    def __init__(self, model, tok, dec_dir, rep_dir):
        self.head = model.lm_head.weight
        self.silent = tok.convert_tokens_to_ids("<|silent|>")
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        # buried: structural specials, and tokens that decode to nothing printable (lone
        # bytes: control characters, half a UTF-8 sequence), which the app strips, so a
        # reply made of them would be silent on screen and in the voice
        self.structural = [tok.convert_tokens_to_ids(n) for n in STRUCTURAL] + _unprintable_ids(tok)
        self.dec_dir, self.rep_dir = dec_dir, rep_dir

    def fit(self, dec, rep, dec_q: float, rep_q: float) -> None:
        import torch
        with torch.no_grad():
            keep = torch.ones(self.head.shape[0], dtype=torch.bool)
            keep[[self.silent, self.end, *self.structural]] = False
            top_dec = (dec @ self.head[keep].T).max(-1).values
            top_rep = (rep @ self.head[keep].T).max(-1).values
            (d, sd), (r, sr) = self.dec_dir, self.rep_dir
            speak_s = top_dec + SPREAD * ((dec @ d) - dec_q) / sd
            speak_e = top_rep + SPREAD * ((rep @ r) - rep_q) / sr
            self.head[self.silent] = _fit_row([(dec, speak_s), (rep, top_rep - 6)])
            self.head[self.end] = _fit_row([(dec, top_dec - 6), (rep, speak_e)])
            buried = _fit_row([(dec, torch.full_like(top_dec, -30.0)), (rep, torch.full_like(top_rep, -30.0))])
            for i in self.structural:
                self.head[i] = buried


def _unprintable_ids(tok) -> list[int]:
    """Ids of ordinary tokens whose text is empty or holds a control/format character or
    U+FFFD (tab and newline allowed)."""
    import unicodedata
    special = set(tok.all_special_ids) | {tok.convert_tokens_to_ids("<|silent|>")}
    out = []
    for i in range(len(tok)):
        if i in special:
            continue
        text = tok.decode([i])
        if not text or any(c == "\ufffd" or (unicodedata.category(c).startswith("C") and c not in "\t\n")
                           for c in text):
            out.append(i)
    return out


def _silent_threshold(projections, silent_fraction: float, sd: float) -> float:
    """The decision threshold that leaves ``silent_fraction`` of decisions silent; for 0, a
    threshold far above every state seen (silence then never wins)."""
    import torch
    if silent_fraction <= 0:
        return float(projections.max()) + 10 * sd
    return float(torch.quantile(projections, 1 - silent_fraction))


def _shape_head(model, tok, out_dir: Path, seed: int, silent_fraction: float = SILENT_FRACTION) -> None:
    """Calibrate the special rows on real sessions: two runs that always speak 8 tokens
    (same structure, different frames) give the content directions; then the thresholds
    are set, twice, from runs of the shaped model so that about ``SILENT_FRACTION`` of the
    decisions are silent and replies end with chance ``END_PER_TOKEN`` per token."""
    import torch
    head = model.lm_head.weight
    with torch.no_grad():
        head[tok.convert_tokens_to_ids("<|silent|>")] = 0.0
        head[tok.convert_tokens_to_ids("<|im_end|>")] = 0.0
    dec_a, rep_a = _session_states(model, tok, out_dir, seed + 1)
    dec_b, rep_b = _session_states(model, tok, out_dir, seed + 2)
    shaper = _Shaper(model, tok, _content_direction(dec_a, dec_b), _content_direction(rep_a, rep_b))
    dec, rep = torch.cat([dec_a, dec_b]), torch.cat([rep_a, rep_b])
    for round_seed in (seed + 3, seed + 4):
        dec_q = _silent_threshold(dec @ shaper.dec_dir[0], silent_fraction, shaper.dec_dir[1])
        rep_q = float(torch.quantile(rep @ shaper.rep_dir[0], 1 - END_PER_TOKEN))
        shaper.fit(dec, rep, dec_q, rep_q)
        new_dec, new_rep = _session_states(model, tok, out_dir, round_seed)
        dec, rep = torch.cat([dec, new_dec]), torch.cat([rep, new_rep])
        dec_q = _silent_threshold(new_dec @ shaper.dec_dir[0], silent_fraction, shaper.dec_dir[1])
        rep_q = float(torch.quantile(new_rep @ shaper.rep_dir[0], 1 - END_PER_TOKEN))
    shaper.fit(dec, rep, dec_q, rep_q)


def register_silent_special(out_dir: Path) -> None:
    """Re-save the tokenizer of the checkpoint in ``out_dir`` with ``<|silent|>`` registered
    as an additional special token (same id; nothing else changes)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|silent|>"]})
    if tok.convert_tokens_to_ids("<|silent|>") not in tok.all_special_ids:
        raise RuntimeError("this transformers did not register <|silent|> as a special token")
    tok.save_pretrained(out_dir)


def build(out_dir: Path, seed: int = 0, silent_fraction: float = SILENT_FRACTION,
          silent_special: bool = False) -> Path:
    """Write the tiny checkpoint into ``out_dir`` (created if needed) and return it."""
    import torch
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # tiny matrices: threads only add synchronisation cost
    try:
        _build(out_dir, seed, silent_fraction)
    finally:
        torch.set_num_threads(threads)
    if silent_special:
        register_silent_special(out_dir)
    return out_dir


def _build(out_dir: Path, seed: int, silent_fraction: float) -> None:
    import torch
    from transformers import (AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLForConditionalGeneration,
                              Qwen3VLProcessor, Qwen3VLVideoProcessor)
    tok = bpe_tokenizer(CORPUS)
    config = _config(tok)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    size = {"shortest_edge": 32 * 32, "longest_edge": 32 * 32 * 1024}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                              size=size),
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                              size=size, fps=2),
        tokenizer=tok, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out_dir)
    _shape_head(model, AutoTokenizer.from_pretrained(out_dir), out_dir, seed, silent_fraction)
    model.save_pretrained(out_dir)
    (out_dir / "aura_tiny.json").write_text(json.dumps({"seed": seed, "silent_fraction": silent_fraction,
                                                        "note": "random weights"}))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--silent-fraction", type=float, default=SILENT_FRACTION,
                        help="share of silent decisions to calibrate for (0 = always speaks)")
    parser.add_argument("--silent-special", action="store_true",
                        help="register <|silent|> as an additional special token (as fine-tunes do)")
    args = parser.parse_args(argv)
    if not 0 <= args.silent_fraction < 1:
        print("error: --silent-fraction must be in [0, 1)", file=sys.stderr)
        return 2
    if args.out_dir.exists() and not args.out_dir.is_dir():
        print(f"error: {args.out_dir} exists and is not a directory", file=sys.stderr)
        return 2
    build(args.out_dir, args.seed, args.silent_fraction, args.silent_special)
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
