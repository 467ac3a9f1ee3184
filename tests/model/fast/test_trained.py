"""The fast backend on the shipped trained model (assets/aura-tiny-colours) against the
reference backend, through replay (issue 14 item 4).

Random weights give flat logits, where any rounding flips a greedy token; the trained
model's are peaked, so the two backends must agree on the decisions and the words. Two
held-out world streams (a when-question, sometimes colour questions) are replayed by
``app.replay.Replayer`` from the world's frames on one session per backend, the
FastBackend with its plain-torch ops: at least 99% of the greedy tokens (one decision per
step plus each reply's tokens) must agree, and the reply tokens must be peaked (mean top
probability > 0.9). On a GPU (``gpu`` test) the Triton kernels and CUDA graphs run the
same streams and must agree as well. A model the kernels cannot run (head dim 24) gets
the reference backend on a GPU, which the last test guards.
"""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
STREAMS = (0, 1)


def _load():
    """The shipped model as the offline preset loads it on a CPU (reference backend)."""
    from app.presets import TRAINED_VLM
    from model.train.evaluate import load
    return load(TRAINED_VLM)


def _fast(model):
    from model.fast.backend import FastBackend
    from model.prompt import Layout
    from model.vlm import context_budget
    budget = context_budget(model.cfg, Layout.for_config(model.tokenizer, model.specials, model.cfg))
    other = copy.copy(model)
    other.backend = FastBackend(model.hf, max_tokens=budget, pool_size=2, use_graphs=False)
    return other


def _tokens(model) -> list[tuple]:
    """Per step of each stream: ('silent'|'speak', reply token ids)."""
    from app.replay import Ask, Replayer
    from model.train import evaluate as ev, tasks
    out = []
    for seed in STREAMS:
        world, asks = ev.held_out(seed, False, "alert")
        session = model.new_session(f"s{seed}")
        try:
            got = list(Replayer(session).run(world.frames(tasks.FPS, *ev.SIZE), [Ask(a.t_s, a.text) for a in asks]))
        finally:
            session.close()
        replies = {round(r["t"], 3): r["text"] for r in got if r["type"] == "reply"}
        for r in got:
            if r["type"] == "step":
                text = replies.get(round(r["t"], 3), "") if r["decision"] == "speak" else ""
                out.append((r["decision"], tuple(model.tokenizer.encode(text, add_special_tokens=False))))
    return out


def agreement(a: list[tuple], b: list[tuple]) -> float:
    """The share of greedy tokens (a decision per step, then the reply's tokens) that agree."""
    same = total = 0
    for (da, ta), (db, tb) in zip(a, b, strict=True):
        total += 1 + max(len(ta), len(tb))
        same += int(da == db) + sum(x == y for x, y in zip(ta, tb))
    return same / total


def reply_peak(model) -> float:
    """Mean top probability at the answer tokens of a colour-question stream (teacher-forced
    through the training forward, model/train/batch.py)."""
    from transformers import AutoVideoProcessor
    from model.pixels import ChunkPixels
    from model.prompt import Layout
    from model.train import tasks
    from model.train.batch import forward
    from model.train.checkpoint import MAX_PIXELS
    from model.train.samples import build_samples
    from model.train.world import World
    prep = ChunkPixels(AutoVideoProcessor.from_pretrained(model.cfg.model), MAX_PIXELS, "cpu")
    merge = model.hf.config.vision_config.spatial_merge_size

    def grid_of(frames):
        _, h, w = prep.grid_for(*frames[0].shape[:2])
        return h // merge, w // merge
    world = World.scripted([(0.0, "green"), (4.3, "yellow")], 9.0)
    records = tasks.chunk_stream(world, [tasks.Ask(2.5, tasks.ASK_COLOUR[0]), tasks.Ask(7.5, tasks.ASK_COLOUR[2])])
    layout = Layout.for_config(model.tokenizer, model.specials, model.cfg)
    samples = build_samples(records, layout, grid_of)
    with torch.no_grad():
        logits, labels, weights = forward(model.hf, prep, samples)
    answer = weights == 1.0
    top = torch.softmax(logits.float(), -1).max(-1).values
    return float(top[answer].mean())


@pytest.fixture(scope="module")
def trained():
    return _load()


@pytest.fixture(scope="module")
def reference_tokens(trained):
    return _tokens(trained)


def test_fast_backend_agrees_with_the_reference_on_the_trained_model(trained, reference_tokens):
    """Guards the fast LM path where it matters: with peaked logits, >= 99% of the greedy
    tokens of two replayed streams agree (decisions and replies)."""
    fast_tokens = _tokens(_fast(trained))
    assert any(d == "speak" for d, _ in reference_tokens)       # the streams do make it speak
    assert agreement(reference_tokens, fast_tokens) >= 0.99


def test_the_trained_logits_are_peaked_unlike_random_ones(trained, tiny_model):
    """Why the agreement above means something: the trained model's answer tokens have a
    top probability near 1; the random tiny model's are not."""
    assert reply_peak(trained) > 0.9          # measured 0.99999 (the first, small model: 0.996)
    assert reply_peak(tiny_model) < 0.7       # measured 0.466


@pytest.mark.gpu
def test_on_a_gpu_the_kernels_run_the_trained_model_and_agree(trained, reference_tokens):
    """The offline preset on a CUDA machine: backend "auto" picks the fast backend (Triton
    kernels, CUDA graphs) for the shipped model, and its greedy tokens agree with the CPU
    reference's on >= 99% (float32 on both)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from app.config import EngineConfig
    from app.presets import TRAINED_VLM
    from model.fast.backend import FastBackend
    from model.train.checkpoint import MAX_PIXELS
    from model.vlm import AuraModel
    gpu = AuraModel.load(EngineConfig(model=str(TRAINED_VLM), device="cuda", dtype="float32", max_pixels=MAX_PIXELS))
    assert isinstance(gpu.backend, FastBackend)
    assert agreement(reference_tokens, _tokens(gpu)) >= 0.99


def test_a_model_the_kernels_cannot_run_gets_the_reference_backend(trained, tmp_path):
    """A head dim of 24 is no Triton tile: on a GPU, backend "auto" must serve such a model
    (the "small" shape of model/train/checkpoint.py) with the reference backend and "fast"
    must say why it cannot, instead of a kernel error at the first step."""
    from transformers import Qwen3VLForConditionalGeneration
    from model.fast.backend import unsupported
    from model.reference import ReferenceBackend
    from model.train import checkpoint
    from model.vlm import ModelLoadError, choose_backend
    small = Qwen3VLForConditionalGeneration.from_pretrained(
        checkpoint.init(tmp_path / "small", size=checkpoint.SIZES["small"]), dtype=torch.float32)
    assert unsupported(small) == "head dim 24 is not a power of two >= 16"
    assert unsupported(trained.hf) is None                     # the shipped model: head dim 32
    assert isinstance(choose_backend("auto", small, "cuda:0", 512), ReferenceBackend)
    with pytest.raises(ModelLoadError, match="cannot run this model .head dim 24"):
        choose_backend("fast", small, "cuda:0", 512)
