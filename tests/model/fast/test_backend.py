"""FastBackend on the CPU (plain-torch ops, no graphs) against the transformers text stack.

Tiny random Qwen3-VL in float32; every test drives both paths with the same embeddings,
explicit M-RoPE positions and deepstack features and compares logits and greedy tokens.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.fast.backend import FastBackend  # noqa: E402
from model.fast.reference import HFTextCache  # noqa: E402
from model.fast.tiny import build_qwen3vl, tiny_config  # noqa: E402
from model.fast.vision import hf_video_features  # noqa: E402

GRID = (1, 6, 8)          # 48 patches -> 12 visual tokens (3 x 4 after the 2x2 merge)


@pytest.fixture(scope="module")
def model():
    return build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=1)


def _embed(model, ids):
    emb = model.model.language_model.embed_tokens
    return emb(torch.tensor(ids, device=emb.weight.device)).detach()


def _text(model, ids, pos0):
    n = len(ids)
    return _embed(model, ids), torch.arange(pos0, pos0 + n).expand(3, n).clone(), None, None, pos0 + n


def _chunk(model, gen, pos0):
    """'<text x3><vision 12 tokens><text x4>' with deepstack, positions like get_rope_index."""
    pix = torch.randn(48, 3 * 2 * 16 * 16, generator=gen)
    vis, ds = hf_video_features(model.model, pix, GRID)
    head, tail = [151644, 872, 151652], [151653, 151645, 198, 151644]
    gh, gw = GRID[1] // 2, GRID[2] // 2
    e = torch.cat([_embed(model, head), vis, _embed(model, tail)])
    p_head = torch.arange(pos0, pos0 + 3).expand(3, 3)
    base = pos0 + 3
    r, c = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    p_vis = torch.stack([torch.full((gh * gw,), base), base + r.flatten(), base + c.flatten()])
    nxt = base + max(gh, gw)
    p_tail = torch.arange(nxt, nxt + 4).expand(3, 4)
    mask = torch.tensor([False] * 3 + [True] * gh * gw + [False] * 4)
    return e, torch.cat([p_head, p_vis, p_tail], 1), mask, [d.detach() for d in ds], nxt + 4


def _script(model, seed, chunks=3):
    gen = torch.Generator().manual_seed(seed)
    segs, pos = [], 0
    e, p, m, d, pos = _text(model, [151644, 8948, 198, 40, 1079, 151645, 198], pos)
    segs.append((e, p, m, d))
    for _ in range(chunks):
        e, p, m, d, pos = _chunk(model, gen, pos)
        segs.append((e, p, m, d))
        e, p, m, d, pos = _text(model, [151669, 151645, 198], pos)
        segs.append((e, p, m, d))
    return segs, pos


def _greedy(model, cache_append, logits, pos, steps):
    toks = []
    for _ in range(steps):
        t = int(logits.argmax())
        toks.append(t)
        logits = cache_append(_embed(model, [t]), torch.full((3, 1), pos), None, None)
        pos += 1
    return toks, logits


def test_prefill_with_deepstack_and_decode_match_reference(model):
    """Guards the whole fused math (norms, M-RoPE rows, GQA attention over the cache, deepstack
    after the right layers, the last-row logits): logits within 1e-4, greedy tokens equal."""
    fast = FastBackend(model, max_tokens=256, pool_size=2)
    ref = HFTextCache(model)
    cache = fast.new_cache()
    segs, pos = _script(model, seed=0)
    for e, p, m, d in segs:
        lf = fast.append(cache, e, p, m, d)
        lr = ref.append(e, p, m, d)
        assert lf.dtype == torch.float32 and lf.shape == (model.config.text_config.vocab_size,)
        assert (lf - lr).abs().max().item() <= 1e-4
    tf, lf = _greedy(model, lambda *a: fast.append(cache, *a), lf, pos, 24)
    tr, lr = _greedy(model, ref.append, lr, pos, 24)
    assert tf == tr
    assert (lf - lr).abs().max().item() <= 1e-4
    assert fast.length(cache) == ref.length


def test_long_append_split_in_pieces_keeps_deepstack_rows(model):
    """Guards the piece splitting of appends longer than the largest bucket: the deepstack
    rows of each piece must be the ones of its own visual tokens."""
    fast = FastBackend(model, max_tokens=256, pool_size=1, buckets=(1, 4, 8))
    ref = HFTextCache(model)
    segs, _ = _script(model, seed=3, chunks=2)
    e = torch.cat([s[0] for s in segs])
    p = torch.cat([s[1] for s in segs], 1)
    m = torch.cat([s[2] if s[2] is not None else torch.zeros(s[0].shape[0], dtype=torch.bool)
                   for s in segs])
    d = [torch.cat([s[3][i] for s in segs if s[3]]) for i in range(2)]
    cache = fast.new_cache()
    lf = fast.append(cache, e, p, m, d)
    lr = ref.append(e, p, m, d)
    assert (lf - lr).abs().max().item() <= 1e-4


def test_caches_are_independent_and_truncate_rolls_back(model):
    """Guards slot addressing (two caches in one arena) and truncate: re-appending after a
    truncate must give the logits of the first time."""
    fast = FastBackend(model, max_tokens=256, pool_size=2)
    a, b = fast.new_cache(), fast.new_cache()
    segs_a, _ = _script(model, seed=5, chunks=1)
    segs_b, _ = _script(model, seed=6, chunks=2)
    for s in segs_b:
        fast.append(b, *s)
    for s in segs_a[:-1]:
        fast.append(a, *s)
    n = fast.length(a)
    first = fast.append(a, *segs_a[-1])
    fast.truncate(a, n)
    again = fast.append(a, *segs_a[-1])
    assert torch.equal(first, again)
    ref = HFTextCache(model)
    for s in segs_a:
        lr = ref.append(*s)
    assert (again - lr).abs().max().item() <= 1e-4


def test_pool_release_and_load_kv(model):
    """Guards the cache pool (exhaustion is a clear error, release gives the slot back, a
    released handle is refused) and load_kv (a cache filled from reference keys/values
    continues exactly like the reference)."""
    fast = FastBackend(model, max_tokens=128, pool_size=1)
    c = fast.new_cache()
    with pytest.raises(RuntimeError, match="in use"):
        fast.new_cache()
    fast.release(c)
    with pytest.raises(ValueError):
        fast.length(c)
    c = fast.new_cache()
    ref = HFTextCache(model)
    segs, pos = _script(model, seed=7, chunks=1)
    for s in segs:
        lr = ref.append(*s)
    fast.load_kv(c, *ref.kv())
    assert fast.length(c) == ref.length
    step = (_embed(model, [int(lr.argmax())]), torch.full((3, 1), pos), None, None)
    assert (fast.append(c, *step) - ref.append(*step)).abs().max().item() <= 1e-4
    with pytest.raises(ValueError, match="max_tokens"):
        fast.append(c, torch.zeros(200, 64), torch.zeros(3, 200, dtype=torch.long))


def test_weights_are_shared_not_copied(model):
    """Guards the in-place fusion: the HF q/k/v and gate/up weights become views of the fused
    matrices (one copy of the weights), the HF model's outputs do not change, and building a
    second backend does not fuse again."""
    ids = torch.tensor([[151644, 872, 198, 40]])
    before = model(input_ids=ids).logits
    fast = FastBackend(model, max_tokens=32, pool_size=1)
    attn = model.model.language_model.layers[0].self_attn
    fused = fast.layers[0].w_qkv
    assert attn.q_proj.weight.data_ptr() == fused.data_ptr()
    assert attn.k_proj.weight.data_ptr() == fused[attn.q_proj.weight.shape[0]:].data_ptr()
    assert torch.equal(model(input_ids=ids).logits, before)
    again = FastBackend(model, max_tokens=32, pool_size=1)
    assert again.layers[0].w_qkv.data_ptr() == fused.data_ptr()
    assert again.layers[1].w_gu.data_ptr() == fast.layers[1].w_gu.data_ptr()


def test_small_row_path_matches_reference(model):
    """Guards the fused-GEMV orchestration used for appends of <= 4 rows (decode, turn
    ends): every append here is cut into pieces of at most 4 rows, deepstack included."""
    from model.fast.torch_ops import TorchOps
    fast = FastBackend(model, max_tokens=256, pool_size=1, buckets=(1, 2, 4), ops=TorchOps(small_rows=4))
    ref = HFTextCache(model)
    cache = fast.new_cache()
    segs, pos = _script(model, seed=8, chunks=2)
    for s in segs:
        lf, lr = fast.append(cache, *s), ref.append(*s)
        assert (lf - lr).abs().max().item() <= 1e-4
    tf, _ = _greedy(model, lambda *a: fast.append(cache, *a), lf, pos, 8)
    tr, _ = _greedy(model, ref.append, lr, pos, 8)
    assert tf == tr
