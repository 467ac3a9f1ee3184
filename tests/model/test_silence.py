"""Speak or stay silent exactly as the checkpoint decides (protocol section 4; issue 12
items 1, 2 and 7): whatever way the tokenizer registers ``<|silent|>``, both silence
tokens stay possible on the first token, p(silent) is the sum of both, and an abandoned
reply never leaves an empty assistant turn."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.prompt import Specials
from model.tiny import register_silent_special
from model.vlm import AuraModel
from tests.model.conftest import chunk_at, engine_cfg, random_frames

ROOT = Path(__file__).resolve().parents[2]
STEPS = 10


@pytest.fixture(scope="module")
def special_dir(tiny_dir, tmp_path_factory) -> Path:
    """The seed-0 tiny checkpoint with only its tokenizer changed: ``<|silent|>`` registered
    as an additional special token (what ``python -m model.tiny --silent-special`` does)."""
    out = tmp_path_factory.mktemp("silent-special") / "tiny"
    shutil.copytree(tiny_dir, out)
    register_silent_special(out)
    return out


@pytest.fixture(scope="module")
def special_model(special_dir):
    return AuraModel.load(engine_cfg(special_dir))


def test_silence_tokens_are_never_banned(tiny_model, special_model):
    """Guards issue 12 item 1: every id in ``all_special_ids`` went into the banned set, so
    a fine-tune that registers ``<|silent|>`` as a special token could never be silent."""
    sp = special_model.specials
    assert sp.silent in special_model.tokenizer.all_special_ids        # the case is real
    assert sp.silent not in tiny_model.tokenizer.all_special_ids       # and so is the other
    for model in (tiny_model, special_model):
        s = model.specials
        assert s.silent not in s.structural and s.im_end not in s.structural
        banned = set(model.new_session("b")._banned.tolist())
        assert s.silent not in banned and s.im_end not in banned
    assert Specials.from_tokenizer(special_model.tokenizer) == tiny_model.specials


def _decisions(model):
    session = model.new_session("d")
    rng = np.random.default_rng(11)
    out = []
    for i in range(STEPS):
        events = list(session.step(chunk_at(i, random_frames(rng)), "What is on the table?" if i == 4 else None))
        out.append(events[0])
    return out


def test_both_registrations_decide_the_same(tiny_model, special_model):
    """Guards issue 12 item 1 end to end: with ``<|silent|>`` registered as a special token
    the session spoke at every step (p_silent read 0 against a raw 0.997). Same weights,
    so the decisions and probabilities must be the plain tokenizer's."""
    plain, special = _decisions(tiny_model), _decisions(special_model)
    assert [d.decision for d in special] == [d.decision for d in plain]
    assert {d.decision for d in plain} == {"silent", "speak"}          # both paths occurred
    for a, b in zip(plain, special):
        assert abs(a.p_silent - b.p_silent) <= 1e-6
    assert max(d.p_silent for d in special) > 0.5


@pytest.mark.slow
def test_cli_silent_special_changes_only_the_tokenizer(tiny_dir, tmp_path):
    """``python -m model.tiny OUT --silent-special``: the same weights as the default build,
    ``<|silent|>`` (same id) in the tokenizer's special ids."""
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "model.tiny", str(out), "--silent-special"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    from transformers import AutoTokenizer
    tok, plain = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(tiny_dir)
    silent = tok.convert_tokens_to_ids("<|silent|>")
    assert silent == plain.convert_tokens_to_ids("<|silent|>") and silent in tok.all_special_ids
    assert torch.equal(torch.tensor(tok.encode("What is on the table?")),
                       torch.tensor(plain.encode("What is on the table?")))


class _Capture:
    """The model's backend, keeping the logits of every append (the first append of a
    step is the chunk turn: its logits decide)."""

    def __init__(self, inner):
        self.inner, self.logits = inner, []

    def append(self, *args, **kwargs):
        out = self.inner.append(*args, **kwargs)
        self.logits.append(out.clone())
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_p_silent_is_silent_plus_im_end(tiny_model):
    """Guards issue 12 item 2: both ``<|silent|>`` and ``<|im_end|>`` on the first token mean
    silence, so p(silent) is their sum (it was p(<|silent|>) alone); both parts are logged
    (StepDecision fields, hence every events.jsonl / replay line)."""
    import copy

    from app.events import to_record
    model = copy.copy(tiny_model)
    model.backend = _Capture(tiny_model.backend)
    session = model.new_session("p")
    sp, rng = model.specials, np.random.default_rng(5)
    tol, ends = 1e-7, []                     # same logits, same softmax: fp32 rounding only
    for i in range(4):
        before = len(model.backend.logits)
        step = list(session.step(chunk_at(i, random_frames(rng))))[0]
        raw = model.backend.logits[before].float()
        raw[session._banned] = float("-inf")                 # no bias: the penalty is off
        probs = torch.softmax(raw, -1)
        p_sil, p_end = float(probs[sp.silent]), float(probs[sp.im_end])
        ends.append(p_end)
        assert abs(step.p_silent_token - p_sil) <= tol and abs(step.p_im_end - p_end) <= tol
        assert abs(step.p_silent - (p_sil + p_end)) <= 2 * tol
        rec = to_record(step)
        assert rec["p_silent_token"] == round(p_sil, 4) and rec["p_im_end"] == round(p_end, 4)
    assert max(ends) > 100 * tol                             # the second part mattered


@pytest.mark.parametrize("abandon_at", ["step", "reply_start"])
def test_abandoned_reply_keeps_its_first_token(tiny_model, abandon_at):
    """Guards issue 12 item 7: a reply abandoned before its first token (the generator
    closed after the speak decision, or after ReplyStarted) left
    ``<|im_start|>assistant\\n<|im_end|>\\n``, an empty exchange that also entered the QA
    history. The turn must hold the first token that was already chosen."""
    sp = tiny_model.specials
    full, cut = tiny_model.new_session("full"), tiny_model.new_session("cut")
    rng = np.random.default_rng(4)
    for i in range(20):
        frames, q = random_frames(rng), "What is on the table?" if i == 0 else None
        events = list(full.step(chunk_at(i, frames), q))
        gen = cut.step(chunk_at(i, frames), q)
        first = next(gen)
        assert first.decision == events[0].decision
        if first.decision == "speak":
            break
        list(gen)
    else:
        pytest.fail("the tiny model never spoke")
    if abandon_at == "reply_start":
        assert next(gen).type == "reply_start"
    gen.close()
    ids, ref = cut.context_ids(), full.context_ids()
    header = len(ref) - 1 - ref[::-1].index(sp.im_start)   # the step's assistant header
    reply_at = ref.index(tiny_model.tokenizer.encode("\n")[0], header) + 1
    token = ref[reply_at]
    assert token not in (sp.silent, sp.im_end)
    assert ids[:reply_at] == ref[:reply_at]
    assert ids[reply_at:] == [token, sp.im_end, *tiny_model.tokenizer.encode("\n")]
    assert cut._rounds[-1].answer == (token,) and cut._rounds[-1].done
    list(cut.step(chunk_at(i + 1, random_frames(rng))))      # and the session goes on
    assert cut.context_ids()[:len(ids)] == ids
