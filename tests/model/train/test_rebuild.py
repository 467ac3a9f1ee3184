"""``python -m model.train.rebuild``: a checkpoint's training record replays as a chain of
``python -m model.train`` runs, oldest stage first; bad records are one line, exit 2."""
from __future__ import annotations

import json

import pytest

from model.train.rebuild import main, stages


def _record(**over):
    base = {"recipe": "python -m model.train", "steps": 4, "batch": 2, "lr": 0.002, "seed": 0, "loss": "balanced",
            "start_level": 1.0, "mix": "drill", "size": "wide", "device": "cuda", "init": None, "final_loss": 0.1}
    return {**base, **over}


def test_stages_are_oldest_first_and_old_records_get_the_old_defaults():
    chain = stages(_record(mix="drill3", size=None, init=_record(mix="drill2", size=None, init=_record())))
    assert [s["mix"] for s in chain] == ["drill", "drill2", "drill3"]
    old = {"recipe": "python -m model.train", "steps": 450, "batch": 8, "lr": 0.003, "seed": 0, "loss": "balanced"}
    assert stages(old) == [{"start_level": 0.0, "mix": "colours", "size": None, **old}]


@pytest.mark.parametrize("record, says", [
    (None, "aura_train.json"),
    (_record(init="/somewhere/else"), "has no record"),
    ({"steps": 3}, "lacks batch, lr, seed, loss"),
])
def test_bad_records_are_one_line_and_exit_2(tmp_path, capsys, record, says):
    src = tmp_path / "src"
    src.mkdir()
    if record is not None:
        (src / "aura_train.json").write_text(json.dumps(record))
    assert main([str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_two_stage_record_is_trained_again_stage_by_stage(tmp_path):
    """Both stages train (a wide fresh model, then one more stage from it); the result's
    record repeats the source's settings and chain; a second call finds everything done."""
    pytest.importorskip("cv2")
    src = tmp_path / "src"
    src.mkdir()
    (src / "aura_train.json").write_text(json.dumps(
        _record(steps=4, mix="drill2", size=None, loss="ce", init=_record(steps=2, mix="drill"))))
    out = tmp_path / "again"
    assert main([str(src), str(out), "--scale", "0.5", "--workers", "1"]) == 0
    got = json.loads((out / "aura_train.json").read_text())
    assert (got["steps"], got["mix"], got["loss"], got["size"]) == (2, "drill2", "ce", None)
    first = got["init"]
    assert (first["steps"], first["mix"], first["size"], first["init"]) == (1, "drill", "wide", None)
    assert json.loads((tmp_path / "again-stage-1" / "config.json").read_text())["text_config"]["head_dim"] == 32
    before = (out / "model.safetensors").read_bytes()
    assert main([str(src), str(out)]) == 0 and (out / "model.safetensors").read_bytes() == before
