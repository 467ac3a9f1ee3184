"""The seeded trainer: it learns, reports progress, and resumes exactly (slow: trains a
very small checkpoint for a few dozen steps on the CPU)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model.train.trainer import TrainConfig  # noqa: E402

SMALL = dict(hidden=32, layers=1, heads=2, kv_heads=1, head_dim=16, mlp=64, vdepth=1, vhidden=16)


class Stop(Exception):
    pass


def setup(tmp_path, seed=0):
    from transformers import AutoTokenizer, AutoVideoProcessor, Qwen3VLForConditionalGeneration
    from app.config import BENCHMARK_SYSTEM_PROMPT
    from model.pixels import ChunkPixels
    from model.prompt import Layout, Specials
    from model.train import checkpoint, tasks
    from model.train.samples import build_samples
    out = tmp_path / f"m{seed}"
    if not (out / "config.json").exists():
        checkpoint.init(out, seed=0, size=SMALL)
    tok = AutoTokenizer.from_pretrained(out)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    prep = ChunkPixels(AutoVideoProcessor.from_pretrained(out), checkpoint.MAX_PIXELS, "cpu")
    layout = Layout(tok, Specials.from_tokenizer(tok), BENCHMARK_SYSTEM_PROMPT)
    rng = np.random.default_rng(5)
    samples = []
    for kind in ("qa", "alert"):
        world, asks = tasks.episode(rng, kind, 10.0, max_gap_s=4.0)
        samples += build_samples(tasks.chunk_stream(world, asks), layout, lambda fr: (2, 2))
    return hf, prep, samples


@pytest.mark.slow
def test_training_lowers_the_loss_and_reports_progress(tmp_path):
    """30 steps on a few samples: the balanced loss over all of them (deterministic) falls by over a quarter from its
    start, and progress lines carry the step, the loss and the time left."""
    from model.train.batch import forward
    from model.train.loss import balanced_loss
    from model.train.trainer import train
    hf, prep, samples = setup(tmp_path)

    def full_loss():
        with torch.no_grad():
            return float(balanced_loss(*forward(hf, prep, samples)))
    before = full_loss()
    lines = []
    train(hf, prep, samples, TrainConfig(steps=30, batch=4, warmup=3, log_every=10), lines.append)
    assert full_loss() < 0.75 * before          # measured: 4.50 -> 2.66
    assert len(lines) == 3 and lines[-1].startswith("step 30/30 loss ") and " left " in lines[-1]


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_losses(tmp_path):
    """Stopped after step 3 and run again with the same config, the trainer continues from
    its saved state and ends with the losses of an uninterrupted run (seeded batches,
    saved optimizer and RNG state)."""
    from model.train.trainer import STATE, train
    cfg = TrainConfig(steps=6, batch=2, warmup=2, log_every=1, save_every=1)
    hf, prep, samples = setup(tmp_path)
    whole = train(hf, prep, samples, cfg)

    def stop_at_4(line):
        if line.startswith("step 4/"):
            raise Stop
    hf, prep, samples = setup(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(Stop):
        train(hf, prep, samples, cfg, stop_at_4, state_dir=state)
    assert (state / STATE).is_file()
    hf, prep, samples = setup(tmp_path)
    lines = []
    resumed = train(hf, prep, samples, cfg, lines.append, state_dir=state)
    assert lines[0] == "resumed at step 3/6"
    assert resumed == pytest.approx(whole, rel=1e-4)


def test_config_is_validated_naming_the_field():
    """A bad setting is a ValueError that names it."""
    with pytest.raises(ValueError, match="TrainConfig.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="TrainConfig.device"):
        TrainConfig(device="tpu")
