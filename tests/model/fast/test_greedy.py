"""Device-side greedy decoding (model/fast/greedy.py) against one append + one host argmax
per token, on the CPU (FastBackend with plain-torch ops, float32 tiny models).

The run keeps the token on the device and launches the step feeding each token before the
host reads it (a speculative step, dropped at ``close()`` when the token is not fed), so
these tests check what can go wrong with that: the same tokens with a bias and banned ids,
the cache holding exactly the fed tokens after close (whether the last step was dropped or
not), two runs and a plain append interleaved on one backend (shared staging buffers), the
limit and the cache capacity, and a whole session that gives the same events, context and
cache as the step-by-step decoder."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.fast.backend import FastBackend  # noqa: E402
from model.fast.tiny import build_qwen3vl, tiny_config  # noqa: E402
from model.prompt import Layout  # noqa: E402
from model.session import AuraSession  # noqa: E402
from model.vlm import context_budget  # noqa: E402
from tests.model.conftest import fp_tol, random_frames  # noqa: E402
from tests.model.test_equivalence import SEED, STEPS, fresh_logits  # noqa: E402
from tests.model.fast.test_backend import _embed, _script  # noqa: E402
from tests.model.test_fold import _drive  # noqa: E402


GPU = pytest.mark.gpu
KINDS = ["cpu", pytest.param("cuda", marks=GPU), pytest.param("cuda-glu-pdl", marks=GPU)]


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    if request.param != "cpu" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return request.param


@pytest.fixture(scope="module")
def model(kind):
    return build_qwen3vl(tiny_config(), dtype=torch.float32, device=kind[:4].rstrip("-"), seed=3)


def _backend(kind, model, **kw):
    """On CUDA: graphs and Triton kernels (optionally the fused gate/up GEMV and PDL)."""
    opts = {"glu": True, "pdl": True, "pdl_trigger_first": True, "m1_block_k": 4096} if kind.endswith("pdl") else None
    fast = FastBackend(model, kernel_options=opts, buckets=(1, 2, 4, 8, 16, 32), **kw)
    assert fast.use_graphs == (kind != "cpu")
    return fast


def _prefilled(fast, model, caches):
    segs, pos = _script(model, seed=4, chunks=2)
    for s in segs:
        for c in caches:
            logits = fast.append(c, *s)
    return logits, pos


def _stepwise(fast, model, cache, first, pos, bias, n):
    """The plain loop: append the token, argmax of logits + bias, n times."""
    toks, tok = [], first
    for j in range(n):
        logits = fast.append(cache, _embed(model, [tok]), torch.full((3, 1), pos + j))
        tok = int(torch.argmax(logits + bias))
        toks.append(tok)
    return toks


def test_greedy_run_gives_the_stepwise_tokens_and_cache(kind, model):
    """Guards the device loop: with a bias (-inf at the two best first tokens, +0.5 on one
    id) the run's tokens equal append + argmax(logits + bias); after close() the cache holds
    exactly the fed tokens (the speculative step dropped) and the next append gives the
    same logits as on the stepwise cache."""
    fast = _backend(kind, model, max_tokens=256, pool_size=2)
    a, b = fast.new_cache(), fast.new_cache()
    logits, pos = _prefilled(fast, model, (a, b))
    bias = torch.zeros(fast.vocab, device=fast.device)
    bias[logits.topk(2).indices] = float("-inf")
    bias[int(logits.topk(5).indices[-1])] += 0.5
    first = int(torch.argmax(logits + bias))
    want = _stepwise(fast, model, b, first, pos, bias, 8)
    base = fast.length(a)
    run = fast.greedy(a, pos, bias)
    got, tok = [], first
    for _ in range(8):
        run.feed(tok)
        tok = run.next()
        got.append(tok)
    assert run.launched == 9          # one step ahead of the host
    assert run.close() == 8 and fast.length(a) == base + 8 == fast.length(b)
    assert got == want
    nxt = (_embed(model, [tok]), torch.full((3, 1), pos + 8))
    la, lb = fast.append(a, *nxt), fast.append(b, *nxt)
    assert (la - lb).abs().max() <= fp_tol(lb)


def test_interleaved_runs_and_appends_reload_their_state(kind, model):
    """Guards the shared staging buffers: a run with a plain append on another cache between
    its steps, then two runs on two caches advanced alternately, give each cache's stepwise
    tokens."""
    fast = _backend(kind, model, max_tokens=256, pool_size=5)
    a, b, ra, rb, other = (fast.new_cache() for _ in range(5))
    logits, pos = _prefilled(fast, model, (a, b, ra, rb))
    zero = torch.zeros(fast.vocab, device=fast.device)
    ban = zero.clone()
    ban[int(logits.argmax())] = float("-inf")
    fa, fb = int(logits.argmax()), int(torch.argmax(logits + ban))
    want_a = _stepwise(fast, model, ra, fa, pos, zero, 5)
    want_b = _stepwise(fast, model, rb, fb, pos, ban, 5)
    run_a, run_b = fast.greedy(a, pos, None), fast.greedy(b, pos, ban)
    got_a, got_b, ta, tb = [], [], fa, fb
    for j in range(5):
        run_a.feed(ta)
        fast.append(other, _embed(model, [7 + j]), torch.full((3, 1), j))
        ta = run_a.next()
        got_a.append(ta)
        if j >= 2:
            run_b.feed(tb)
            tb = run_b.next()
            got_b.append(tb)
    run_a.close()
    run_b.close()
    assert (got_a, got_b) == (want_a, want_b[:3])


def test_limit_capacity_and_misuse(kind, model):
    """Guards the edges: no speculative step beyond ``limit`` fed tokens (nor beyond the
    cache), a clear error past the cache's end, feed/next after close refused."""
    fast = _backend(kind, model, max_tokens=12, pool_size=1)
    c = fast.new_cache()
    fast.append(c, _embed(model, [1, 2, 3, 4, 5, 6, 7, 8, 9]), torch.arange(9).expand(3, 9).clone())
    run = fast.greedy(c, 9, None, limit=2)
    run.feed(11)
    run.next()                      # speculates: a second token may still be fed
    run.feed(run.next())
    run.next()                      # limit reached: nothing more launched
    assert run.launched == 2 and run.close() == 2 and fast.length(c) == 11
    with pytest.raises(RuntimeError):
        run.feed(3)
    run = fast.greedy(c, 11, None)
    run.feed(4)
    assert run.launched == 1
    run.next()                      # the cache is full: no speculative step
    assert run.launched == 1
    with pytest.raises(ValueError, match="max_tokens=12"):
        run.feed(run.next())
    run.close()
    assert fast.length(c) == 12


class _NoGreedy:
    """The same backend, seen without ``greedy``: the session decodes step by step."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        if name == "greedy":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_session_decodes_the_same_with_the_device_loop(tiny_model):
    """Guards the session's use of it: over silent steps, spoken, cancelled and closed-early
    replies, a partial chunk and window cuts, a session on the fast backend (greedy on the
    device) and one on the same backend without ``greedy`` give the same events and context
    ids at every decision, the same cache, and logits equal to a fresh forward."""
    budget = context_budget(tiny_model.cfg, Layout.for_config(tiny_model.tokenizer, tiny_model.specials,
                                                               tiny_model.cfg))
    fast = FastBackend(tiny_model.hf, max_tokens=budget, pool_size=4)
    runs = []
    greedy = fast.greedy

    def counted(*args, **kwargs):
        runs.append(greedy(*args, **kwargs))
        return runs[-1]
    fast.greedy = counted
    m_dev, m_step = copy.copy(tiny_model), copy.copy(tiny_model)
    m_dev.backend, m_step.backend = fast, _NoGreedy(fast)
    dev, step = AuraSession(m_dev, "dev"), AuraSession(m_step, "step")
    rng = np.random.default_rng(SEED)
    frames_by_key, ids_d, ids_s = {}, [], []
    for i in range(STEPS):
        frames = random_frames(rng, 1 if i == 15 else 2)
        frames_by_key[i] = frames
        assert _drive(dev, i, frames, ids_d) == _drive(step, i, frames, ids_s), f"step {i}"
        assert dev.context_ids() == step.context_ids()
        dev.maintain(0.002)
        step.maintain(0.002)
    assert ids_d == ids_s
    assert len(runs) >= 3 and sum(r.fed for r in runs) >= 6 and all(r.closed for r in runs)
    assert any(r.launched > r.fed for r in runs)       # a speculative step was dropped
    logits_d, logits_s = dev.next_token_logits(), step.next_token_logits()
    fresh = fresh_logits(tiny_model, dev.plan_segments(dev.window_start_s), frames_by_key)
    assert (logits_d - logits_s).abs().max() <= fp_tol(logits_s) and (logits_d - fresh).abs().max() <= 1e-4
    dev.close()
    step.close()
