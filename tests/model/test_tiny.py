"""The tiny offline checkpoint (issue 2 item 2)."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from model.tiny import build

ROOT = Path(__file__).resolve().parents[2]
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "processor_config.json", "chat_template.jinja")


def _digest(d: Path) -> dict[str, str]:
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in FILES}


def test_checkpoint_has_every_part(tiny_dir):
    """Config, weights, tokenizer, processor configs and chat template: what the real
    loader reads (the loading itself is every other engine test)."""
    for name in FILES:
        assert (tiny_dir / name).is_file(), name
    assert "<|silent|>" in (tiny_dir / "tokenizer.json").read_text()


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_weights(tiny_dir, tmp_path):
    """Deterministic per seed: tests and the offline preset must see the same model."""
    again = _digest(build(tmp_path / "again", seed=0))
    assert again == _digest(tiny_dir)
    other = _digest(build(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != again["model.safetensors"]
    assert other["tokenizer.json"] == again["tokenizer.json"]


@pytest.mark.slow
def test_cli_builds_the_same_checkpoint(tiny_dir, tmp_path):
    """`python -m model.tiny OUT --seed S` works offline and writes what build() writes."""
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "model.tiny", str(out), "--seed", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _digest(out) == _digest(tiny_dir)
