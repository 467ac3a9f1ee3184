"""Teaching from reviewed recordings: notes become training streams, adapters load merged,
the replay comparison shows annotated moments, and bad input is one line with exit 2.

The recording is the fake session of tests/recording (chunks 0-2 whole seconds, chunk 3
3.0-3.3 s answers the question, chunks 4.. 3.3-4.3, 4.3-5.3, ...; chunk 6 speaks a
proactive remark).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from app.recording import annotations as notes
from app.recording.library import read_events
from tests.recording.conftest import recorded, voices  # noqa: F401  (fixtures)
from tests.recording.session_fixture import ANSWER, PROACTIVE, QUESTION

ROOT = Path(__file__).resolve().parents[2]
SAY, BETTER = "The cup is on the left now.", "A red cup."


@pytest.fixture
def annotated(recorded, tmp_path):  # noqa: F811
    """A private copy of the fake recording with three notes."""
    rec = tmp_path / "recs" / recorded.path.name
    shutil.copytree(recorded.path, rec)
    notes.add(rec, 4.5, "say", SAY)        # chunk 5, silent in the recording
    notes.add(rec, 6.8, "silent")          # chunk 6, the proactive remark
    notes.add(rec, 4.0, "better", BETTER)  # chunk 3, the answer
    return rec


def test_notes_replace_what_the_model_did(annotated):
    """Guards the training data: the frames the model saw, the questions as asked, the
    recorded answers kept, and each note in place of what the model did at its chunk."""
    from app.recording.media import read_chunks
    from app.teach.samples import recording_streams
    [stream], moments = recording_streams(annotated)
    seen = list(read_chunks(annotated, read_events(annotated / "events.jsonl")))
    assert len(stream) == len(seen) == 9
    for rec, chunk in zip(stream, seen):
        assert (rec.start_s, rec.t_s) == (chunk.start_s, chunk.t_s)
        assert all(np.array_equal(a, b) for a, b in zip(rec.frames, chunk.frames))
    assert [r.question for r in stream] == [None, None, None, QUESTION] + [None] * 5
    assert [r.answer for r in stream] == [None, None, None, BETTER, None, SAY, None, None, None]
    before = {m.note.n: m.before for m in moments}
    assert before[3]["reply"] == ANSWER and before[2]["reply"] == PROACTIVE
    assert before[1]["decision"] == "silent"
    assert all(not m.held_out and m.stream == 0 for m in moments)


def test_held_out_chunks_stay_as_context_never_as_targets(annotated, tiny_layout):
    """Guards --hold-out: a held-out note is not applied; its chunk stays in the stream as
    recorded (so the notes after it keep the context they were made in) but marked context
    only, so no sample is anchored at it or supervises it: measured on, never trained on.
    (Cutting it out split the stream, and a note after it was trained in a context the
    replay never shows: 1 of 2 trained notes fixed on the colour model, 2026-12-06.)"""
    from app.teach.samples import build, recording_streams
    from model.train.loss import IGNORE
    from model.train.samples import Windows
    streams, moments = recording_streams(annotated, held_out={1})
    [stream] = streams
    assert len(stream) == 9 and [r.context_only for r in stream] == [False] * 5 + [True] + [False] * 3
    assert [r.answer for r in stream] == [None, None, None, BETTER, None, None, None, None, None]
    held = [m for m in moments if m.held_out]
    assert [m.note.n for m in held] == [1] and held[0].stream == -1
    assert next(m for m in moments if m.note.n == 2).position == 6
    layout, grid_of = tiny_layout
    samples, focus = build(streams, moments, layout, grid_of, Windows())
    assert len(samples) == 2 and focus == [True, True]        # the answer at chunk 3; the end
    # the end sample's silent turns: chunks 0-2, 4, 5 (held out), 6 (the silent note), 7, 8
    end, silent_turn = samples[1], list(layout.answer(None).ids[:2])   # <|silent|><|im_end|>
    starts = [j for j in range(len(end) - 1) if end.ids[j:j + 2].tolist() == silent_turn]
    assert len(starts) == 8
    assert [bool(end.labels[j - 1] != IGNORE) for j in starts] == [True] * 4 + [False] + [True] * 3


def test_samples_flag_the_notes(annotated, tiny_layout):
    """Guards the note oversampling: one sample per answer (sequence unrolling, from
    model/train/samples.py) plus one at the silent end, and exactly those showing a note
    flagged."""
    from app.teach.samples import build, recording_streams
    from model.train.samples import Windows
    layout, grid_of = tiny_layout
    streams, moments = recording_streams(annotated)
    samples, focus = build(streams, moments, layout, grid_of, Windows())
    assert len(samples) == 3 and focus == [True, True, True]   # answers at chunks 3 and 5, the end
    by_n = {m.note.n: m.samples for m in moments}
    assert by_n == {3: 1, 1: 1, 2: 1}   # the silent note at chunk 6: in the end sample's window


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from model.tiny import build
    return build(tmp_path_factory.mktemp("aura-tiny"), seed=0)


@pytest.fixture(scope="module")
def tiny_layout(tiny_dir):
    from transformers import AutoTokenizer, AutoVideoProcessor

    from app.config import EngineConfig
    from model.pixels import ChunkPixels
    from model.prompt import Layout, Specials
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    prep = ChunkPixels(AutoVideoProcessor.from_pretrained(tiny_dir), 8192, "cpu")

    def grid_of(frames):
        _, h, w = prep.grid_for(*frames[0].shape[:2])
        return h // 2, w // 2
    return Layout.for_config(tok, Specials.from_tokenizer(tok), EngineConfig(model=str(tiny_dir))), grid_of


def test_adapter_merged_at_load_equals_peft(tiny_dir, tmp_path):
    """Guards --adapter: the weights merged at load compute what PEFT's own LoRA forward
    computes (so decode runs unchanged code at unchanged speed), and a folder that is not an
    adapter is one ModelLoadError line."""
    import torch
    from peft import PeftModel
    from transformers import Qwen3VLForConditionalGeneration

    from app.config import EngineConfig
    from model.adapter import attach
    from model.vlm import AuraModel, ModelLoadError
    torch.manual_seed(0)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32)
    wrapped = attach(hf, rank=4)
    for name, p in wrapped.named_parameters():
        if "lora_B" in name:          # PEFT starts B at zero; a trained adapter is not
            p.data.normal_(0, 0.2)
    wrapped.save_pretrained(str(tmp_path / "adapter"))
    assert any(n.startswith("base_model") and "language_model" in n and "lora_A" in n
               for n, _ in wrapped.named_parameters())
    assert not any("visual" in n and "lora" in n for n, _ in wrapped.named_parameters())

    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    base = Qwen3VLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        ref = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()(input_ids=ids).logits
    model = AuraModel.load(EngineConfig(model=str(tiny_dir), device="cpu", adapter=str(tmp_path / "adapter")))
    with torch.no_grad():
        merged = model.hf(input_ids=ids).logits
    assert not any("lora" in n for n, _ in model.hf.named_parameters())
    assert (ref - plain).abs().max() > 1e-2                       # the adapter changes the output
    assert torch.allclose(merged, ref, atol=1e-4 * max(1.0, float(ref.abs().max())))
    # finetune --adapter DIR continues that adapter: loaded trainable, with its weights
    again = attach(Qwen3VLForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32), 4,
                   adapter_dir=tmp_path / "adapter")
    saved = {n: p for n, p in wrapped.named_parameters() if "lora" in n}
    loaded = {n: p for n, p in again.named_parameters() if "lora" in n}
    assert saved.keys() == loaded.keys() and all(p.requires_grad for p in loaded.values())
    assert all(torch.equal(saved[n], loaded[n]) for n in saved)
    with pytest.raises(ModelLoadError, match="engine.adapter: .*not a PEFT adapter folder"):
        AuraModel.load(EngineConfig(model=str(tiny_dir), device="cpu", adapter=str(tmp_path)))


def test_comparison_shows_annotated_moments(annotated):
    """Guards the check of a fix: per note, what the recording's model did, what the replay
    does and what was asked."""
    from app.recording.regression import compare, format_markdown
    old = read_events(annotated / "events.jsonl")
    new = [dict(e) for e in old]
    for e in new:
        if e.get("type") == "step" and e.get("chunk_index") == 5:
            e["decision"], e["p_silent"] = "speak", 0.2
    result = compare(old, new, notes.load(annotated))
    rows = {a["note"]: a for a in result["annotations"]}
    assert rows[1]["base"]["decision"] == "silent" and rows[1]["replay"]["decision"] == "speak"
    assert rows[1]["done"] and not rows[2]["done"] and rows[3]["done"]
    text = format_markdown(result)
    assert "## Annotated moments" in text
    assert f'| #1 | 4.5 | 5 | silent | speak | "should have said: {SAY}" | yes |' in text


def _exit_code(argv) -> int:
    sys.path.insert(0, str(ROOT))
    import launch
    try:
        return launch.cmd_finetune(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("case", ["no notes", "no video", "unknown base", "bad hold-out", "no out",
                                  "missing"])
def test_finetune_bad_input_is_one_line(case, annotated, tiny_dir, tmp_path, capsys):
    """Guards launch.py finetune against tracebacks: one stderr line and exit code 2."""
    rec, model = annotated, str(tiny_dir)
    args = [str(rec), "--out", str(tmp_path / "out"), "--model", model]
    if case == "no notes":
        for a in notes.load(rec):
            notes.delete(rec, a.n)
    elif case == "no video":
        (rec / "video.mp4").write_bytes(b"")
    elif case == "unknown base":
        args[-1] = str(tmp_path / "nowhere")
    elif case == "bad hold-out":
        args += ["--hold-out", "1.5"]
    elif case == "no out":
        args = [str(rec)]
    else:
        args[0] = str(tmp_path / "missing")
    assert _exit_code(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "adapter_config.json").exists()
