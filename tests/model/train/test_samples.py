"""Stream structuring (protocol section 5a) on hand-made per-chunk records."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.config import BENCHMARK_SYSTEM_PROMPT  # noqa: E402
from model.prompt import Layout, Specials  # noqa: E402
from model.train.loss import IGNORE  # noqa: E402
from model.train.samples import Windows, build_samples  # noqa: E402
from model.train.tasks import ACK, ChunkRecord  # noqa: E402

FRAME = np.zeros((64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def layout():
    from model.train.checkpoint import tokenizer
    tok = tokenizer()
    return Layout(tok, Specials.from_tokenizer(tok), BENCHMARK_SYSTEM_PROMPT, 0.5)


def records(n, questions=None, answers=None):
    questions, answers = questions or {}, answers or {}
    return [ChunkRecord((FRAME, FRAME), float(i), float(i + 1), questions.get(i), answers.get(i))
            for i in range(n)]


def chunk_text(question="", pads=4):
    return ("<|im_start|>user\n<0.5 seconds><|vision_start|>" + "<|video_pad|>" * pads
            + "<|vision_end|>" + question + "<|im_end|>\n<|im_start|>assistant\n")


def supervised(sample, tok):
    m = sample.labels != IGNORE
    return tok.decode(sample.labels[m].tolist()), sorted(set(round(w, 4) for w in sample.weights[m].tolist()))


def test_one_sample_per_answer_rendered_as_the_chat_format(layout):
    """Sequence unrolling: K answers give K samples, each ending at its answer's turn; the
    text is the protocol's chunk-wise chat format (question after the chunk's video, one
    assistant turn per chunk) written out by hand here."""
    recs = records(5, {1: "Tell me when it turns red."}, {1: ACK, 4: "The background turned red."})
    samples = build_samples(recs, layout, lambda fr: (2, 2))
    assert len(samples) == 2
    want = ("<|im_start|>system\n" + BENCHMARK_SYSTEM_PROMPT
            + "<|im_end|>\n" + chunk_text() + "<|silent|><|im_end|>\n"
            + chunk_text("Tell me when it turns red.") + ACK + "<|im_end|>\n"
            + (chunk_text() + "<|silent|><|im_end|>\n") * 2
            + chunk_text() + "The background turned red.<|im_end|>\n")
    assert layout.tok.decode(samples[1].ids.tolist()) == want
    assert len(samples[1].chunks) == 5 and samples[1].positions.shape == (3, len(samples[1]))


def test_balanced_supervision_silent_turns_and_the_target_answer(layout):
    """m_t: every silent turn (<|silent|><|im_end|>, weight 1/N_silent) and the sample's
    last answer (weight 1); the earlier acknowledgement is context only."""
    recs = records(5, {1: "Tell me when it turns red."}, {1: ACK, 4: "The background turned red."})
    text, weights = supervised(build_samples(recs, layout, lambda fr: (2, 2))[1], layout.tok)
    assert text == "<|silent|><|im_end|>" * 3 + "The background turned red.<|im_end|>"
    assert weights == [round(1 / 3, 4), 1.0]
    text, weights = supervised(build_samples(recs, layout, lambda fr: (2, 2), loss="ce")[1], layout.tok)
    assert text == "<|silent|><|im_end|>" + ACK + "<|im_end|>" + "<|silent|><|im_end|>" * 2 \
        + "The background turned red.<|im_end|>"
    assert weights == [1.0]


def test_the_tail_sample_supervises_the_silences_after_the_last_answer(layout):
    """``tail``: one more sample, anchored at the last chunk when it is silent, ending with
    its silent turn; without ``tail`` (or ending on an answer) there is none."""
    from model.train.samples import anchors
    recs = records(7, {1: "Tell me when it turns red."}, {1: ACK, 3: "The background turned red."})
    assert anchors(recs) == [1, 3] and anchors(recs, tail=True) == [1, 3, 6]
    samples = build_samples(recs, layout, lambda fr: (2, 2), tail=True)
    assert len(samples) == 3 and len(build_samples(recs, layout, lambda fr: (2, 2))) == 2
    text, weights = supervised(samples[2], layout.tok)
    assert text == "<|silent|><|im_end|>" * 2 + "The background turned red.<|im_end|>" + "<|silent|><|im_end|>" * 3
    assert weights == [round(1 / 5, 4), 1.0]
    assert layout.tok.decode(samples[2].ids.tolist()).endswith(chunk_text() + "<|silent|><|im_end|>\n")
    assert anchors(recs[:4], tail=True) == [1, 3]


def test_a_context_only_chunk_is_seen_but_never_supervised_nor_an_anchor(layout):
    """A held-out note's chunk stays in the context as recorded (video and turn), but no
    sample is anchored at it and no sample supervises its turn, under either loss."""
    from dataclasses import replace

    from model.train.samples import anchors
    recs = records(7, {1: "Tell me when it turns red."}, {1: ACK, 3: "The background turned blue.",
                                                         5: "The background turned red."})
    recs[3] = replace(recs[3], context_only=True)
    assert anchors(recs, tail=True) == [1, 5, 6]
    for loss in ("balanced", "ce"):
        samples = build_samples(recs, layout, lambda fr: (2, 2), loss=loss, tail=True)
        assert len(samples) == 3
        for s in samples[1:]:
            assert "The background turned blue.<|im_end|>" in layout.tok.decode(s.ids.tolist())
            assert "blue" not in supervised(s, layout.tok)[0]
    text, weights = supervised(build_samples(recs, layout, lambda fr: (2, 2))[1], layout.tok)
    assert text == "<|silent|><|im_end|>" * 3 + "The background turned red.<|im_end|>"
    assert weights == [round(1 / 3, 4), 1.0]
    recs[6] = replace(recs[6], context_only=True)
    assert anchors(recs, tail=True) == [1, 5]


def test_labels_are_the_next_token_of_each_supervised_position(layout):
    """labels[j] = ids[j + 1] wherever supervised (what the logits at j predict)."""
    recs = records(3, {0: "What colour is the background?"}, {0: "The background is red."})
    (s,) = build_samples(recs, layout, lambda fr: (1, 2))
    j = (s.labels != IGNORE).nonzero().flatten()
    assert torch.equal(s.labels[j], s.ids[j + 1])


def test_dual_window_matches_the_engine_cut_and_keeps_old_questions_as_text(layout):
    """A 50-chunk stream: at chunk 50 the engine's window was cut at 46 s by N' = 15, so 35
    chunks keep their video; the question of chunk 3 is in the QA window as text with its
    answer; silent rounds outside the window are gone."""
    recs = records(50, {2: "What colour is the background?"}, {2: "The background is red.", 49: "Hi."})
    s = build_samples(recs, layout, lambda fr: (2, 2), Windows())[1]
    assert len(s.chunks) == 35
    text = layout.tok.decode(s.ids.tolist())
    head = text.split("<|vision_start|>")[0]
    assert head.endswith("<|im_start|>user\nWhat colour is the background?<|im_end|>\n<|im_start|>assistant\n"
                         "The background is red.<|im_end|>\n<|im_start|>user\n<0.5 seconds>")
    assert text.count("<|silent|><|im_end|>") == 34
    short = build_samples(recs, layout, lambda fr: (2, 2), Windows(video_s=10, float_s=5))[1]
    assert len(short.chunks) < 16
