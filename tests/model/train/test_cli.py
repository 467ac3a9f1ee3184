"""``python -m model.train``'s argument checks and ``--init`` (continue from a trained
checkpoint): bad input is one line and exit 2; the copy leaves the training record behind."""
from __future__ import annotations

import pytest

from model.train.__main__ import main
from model.train.checkpoint import copy_weights


@pytest.mark.parametrize("extra, says", [
    (["--init", "{tmp}/nowhere"], "holds no model.safetensors"),
    (["--mix", "dance"], "invalid choice: 'dance'"),
    (["--start-level", "2"], "--start-level in [0, 1]"),
    (["--workers", "-1"], "--workers >= 0"),
    (["--size", "huge"], "invalid choice: 'huge'"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, extra, says):
    argv = [str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in extra]]
    try:
        rc = main(argv)
    except SystemExit as e:          # argparse's own refusals
        rc = e.code
    assert rc == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_init_copies_the_checkpoint_but_not_its_training_record(tmp_path):
    src = tmp_path / "trained"
    src.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "aura_train.json",
                 "train_state.pt", "eval.json", "NOTES.md", "train.log"):
        (src / name).write_text(name)
    copy_weights(src, tmp_path / "next")
    assert sorted(p.name for p in (tmp_path / "next").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    assert (tmp_path / "next" / "model.safetensors").read_text() == "model.safetensors"


def test_init_trains_the_shipped_model_further_and_records_the_chain(tmp_path):
    """Two drill steps from the shipped weights: the new folder has the shipped tokenizer,
    changed weights, and a training record that names the mix and holds the shipped recipe."""
    import json

    from safetensors.torch import load_file

    from app.presets import TRAINED_VLM
    out = tmp_path / "next"
    assert main([str(out), "--init", str(TRAINED_VLM), "--mix", "drill", "--steps", "2", "--batch", "2"]) == 0
    record = json.loads((out / "aura_train.json").read_text())
    assert record["mix"] == "drill" and record["steps"] == 2
    assert record["init"] == json.loads((TRAINED_VLM / "aura_train.json").read_text())
    assert (out / "tokenizer.json").read_bytes() == (TRAINED_VLM / "tokenizer.json").read_bytes()
    before, after = load_file(TRAINED_VLM / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and any(not (before[k] == after[k]).all() for k in before)


def test_workers_make_the_same_batches_and_size_picks_the_shape(tmp_path):
    """Two steps of a fresh "wide" model with batches made by two worker processes end at
    the loss of the same two steps made in the training process."""
    import json
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main([str(out), "--size", "wide", "--steps", "2", "--batch", "2", "--workers", workers]) == 0
    runs = [json.loads((tmp_path / f"w{w}" / "aura_train.json").read_text()) for w in "02"]
    assert runs[0]["size"] == "wide" and runs[0]["final_loss"] == runs[1]["final_loss"]
    config = json.loads((tmp_path / "w2" / "config.json").read_text())
    assert config["text_config"]["head_dim"] == 32 and config["text_config"]["num_hidden_layers"] == 4
