"""spattn.compat.flex against dense float64 references: mask_mods evaluated into exact patterns (tile by tile,
refusing b/h dependence), flex_attention forward and backward with additive score_mods (learnable tables get
the reference's gradients), non-additive score_mods refused, and agreement with torch's own FlexAttention."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import spattn
from spattn.compat.flex import and_masks, create_block_mask, flex_attention, noop_mask, or_masks
from spattn.compat.flex import block_mask as block_mask_module
from spattn.compat.flex.score_mod import bias_of_score_mod



# ---- mask_mods and score_mods as FlexAttention users write them ------------------------------------------
def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(window):
    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= window
    return mask_mod


def document(document_ids):
    def mask_mod(b, h, q_idx, kv_idx):
        return document_ids[q_idx] == document_ids[kv_idx]
    return mask_mod


def prefix(length):
    def mask_mod(b, h, q_idx, kv_idx):
        return kv_idx < length
    return mask_mod


def skip_rows(every):
    """Queries q with q % every == 0 attend to nothing (empty rows)."""
    def mask_mod(b, h, q_idx, kv_idx):
        return q_idx % every != 0
    return mask_mod


def _mask_cases(n_queries, n_keys):
    document_ids = torch.arange(max(n_queries, n_keys)) // 5
    return {
        "causal": causal,
        "sliding_window": sliding_window(3),
        "document": document(document_ids),
        "prefix_lm": or_masks(causal, prefix(4)),
        "causal_window": and_masks(causal, sliding_window(4)),
        "noop": noop_mask,
        "empty_rows": and_masks(or_masks(causal, prefix(2)), skip_rows(3)),
        "nothing": or_masks(),
    }


def dense_mask(mask_mod, n_queries, n_keys):
    """The mask by torch's own evaluation (vmapped over scalars), ``[Nq, Nk]``."""
    return torch_flex.create_mask(mask_mod, 1, 1, n_queries, n_keys, device="cpu")[0, 0]


def dense_flex_reference(q, k, v, mask_mod, score_mod=None, scale=None):
    """FlexAttention in float64 on dense tensors: score_mod applied to the whole scaled score tensor (with
    broadcast int64 indices), -inf outside the mask, queries without keys give 0 and an LSE of -inf.
    Returns ``(out, lse)``."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    batch, heads, n_queries, n_keys = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    b = torch.arange(batch).view(-1, 1, 1, 1)
    h = torch.arange(heads).view(1, -1, 1, 1)
    q_idx = torch.arange(n_queries).view(1, 1, -1, 1)
    kv_idx = torch.arange(n_keys).view(1, 1, 1, -1)
    scores = (q.shape[-1] ** -0.5 if scale is None else scale) * q @ k.transpose(-1, -2)
    if score_mod is not None:
        scores = score_mod(scores, b, h, q_idx, kv_idx).double()
    mask = dense_mask(mask_mod, n_queries, n_keys)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    row_has_keys = mask.any(-1, keepdim=True)
    probabilities = torch.softmax(torch.where(row_has_keys, scores, 0.0), dim=-1) * row_has_keys
    return probabilities @ v, lse


def _inputs(batch, heads, n_queries, n_keys, dim, value_dim, kv_heads=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    kv_heads = heads if kv_heads is None else kv_heads
    q = torch.randn(batch, heads, n_queries, dim, dtype=torch.float64, generator=generator)
    k = torch.randn(batch, kv_heads, n_keys, dim, dtype=torch.float64, generator=generator)
    v = torch.randn(batch, kv_heads, n_keys, value_dim, dtype=torch.float64, generator=generator)
    return [t.requires_grad_() for t in (q, k, v)]


# ---- create_block_mask -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tile_entries", [7, 64, 1 << 24])  # column chunks of one row, row blocks, one tile
@pytest.mark.parametrize("sizes", [(23, 23), (17, 29), (31, 12)])
def test_create_block_mask_gives_the_exact_mask(monkeypatch, sizes, tile_entries):
    monkeypatch.setattr(block_mask_module, "_TILE_ENTRIES", tile_entries)
    for name, mask_mod in _mask_cases(*sizes).items():
        pattern = create_block_mask(mask_mod, None, None, *sizes, device="cpu")
        assert pattern.shape == sizes
        assert torch.equal(pattern.to_dense(), dense_mask(mask_mod, *sizes)), name


def test_create_block_mask_never_builds_the_full_mask(monkeypatch):
    monkeypatch.setattr(block_mask_module, "_TILE_ENTRIES", 1 << 16)
    largest = []

    def spied(b, h, q_idx, kv_idx):
        largest.append(q_idx.numel() * kv_idx.numel())
        return (q_idx - kv_idx).abs() <= 16
    pattern = create_block_mask(spied, 1, 1, 4096, 4096, device="cpu")
    assert max(largest) <= 1 << 16 and len(largest) == 4096 * 4096 // (1 << 16)
    assert pattern.equal(spattn.patterns.local_1d(4096, 33))


def test_create_block_mask_uses_int32_indices_on_the_requested_device():
    seen = {}

    def spied(b, h, q_idx, kv_idx):
        seen.update(dtypes={t.dtype for t in (b, h, q_idx, kv_idx)}, device=q_idx.device)
        return q_idx >= kv_idx
    pattern = create_block_mask(spied, 2, 3, 5, 5, device=torch.device("cpu"))
    assert seen == {"dtypes": {torch.int32}, "device": torch.device("cpu")} and pattern.device.type == "cpu"


def test_mask_mods_depending_on_b_or_h_are_refused_unless_broadcast():
    def by_batch(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) | (b > 0)

    def by_head(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() <= h

    for mask_mod, batch, heads in ((by_batch, 2, None), (by_head, None, 3), (by_head, 2, 2)):
        with pytest.raises(ValueError, match="mask_mod depends on b or h"):
            create_block_mask(mask_mod, batch, heads, 9, 9, device="cpu")
    # B = H = None: evaluated at b = h = 0, as FlexAttention's broadcast block mask.
    assert create_block_mask(by_batch, None, None, 9, 9, device="cpu").equal(spattn.patterns.causal_1d(9))
    assert torch.equal(create_block_mask(by_head, None, None, 9, 9, device="cpu").to_dense(), torch.eye(9) > 0)

    def reads_b_without_effect(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (b >= 0) & (h < 100)
    assert create_block_mask(reads_b_without_effect, 4, 3, 9, 9, device="cpu").equal(spattn.patterns.causal_1d(9))


def test_create_block_mask_refuses_bad_input():
    with pytest.raises(TypeError, match="mask_mod must be a callable"):
        create_block_mask("causal", None, None, 4, 4, device="cpu")
    with pytest.raises(TypeError, match="mask_mod must return a bool tensor"):
        create_block_mask(lambda b, h, q, k: (q - k).float(), None, None, 4, 4, device="cpu")
    with pytest.raises(ValueError, match="mask_mod returned shape"):
        create_block_mask(lambda b, h, q, k: torch.ones(3, dtype=torch.bool), None, None, 4, 4, device="cpu")
    with pytest.raises(ValueError, match="B must be >= 1"):
        create_block_mask(causal, 0, None, 4, 4, device="cpu")
    with pytest.raises(ValueError, match="Q_LEN must be >= 0"):
        create_block_mask(causal, None, None, -1, 4, device="cpu")
    with pytest.raises(TypeError, match="KV_LEN must be an integer"):
        create_block_mask(causal, None, None, 4, 4.0, device="cpu")
    with pytest.raises(TypeError, match="device must be"):
        create_block_mask(causal, None, None, 4, 4, device=3.5)
    with pytest.raises(TypeError, match=r"mask_mods\[1\] must be a callable"):
        and_masks(causal, None)
    with pytest.raises(TypeError, match=r"mask_mods\[0\] must be a callable"):
        or_masks(1)


# ---- flex_attention against the dense reference ----------------------------------------------------------
def _relative_bias_table(heads, n_queries, n_keys, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(heads, n_queries + n_keys - 1, dtype=torch.float64, generator=generator).requires_grad_()


def _score_mod_cases(table, n_keys):
    def relative_per_head(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + n_keys - 1]

    def relative_shared_subtracted(score, b, h, q_idx, kv_idx):
        return score - table[0, q_idx - kv_idx + n_keys - 1]

    def alibi(score, b, h, q_idx, kv_idx):
        return (q_idx - kv_idx) * (h + 1) * 0.125 + score

    def identity(score, b, h, q_idx, kv_idx):
        return score
    return {"relative_per_head": relative_per_head, "relative_shared_subtracted": relative_shared_subtracted,
            "alibi": alibi, "identity": identity, "none": None}


@pytest.mark.parametrize("sizes", [(19, 19), (13, 22), (24, 9)])
@pytest.mark.parametrize("mask_name", ["sliding_window", "document", "prefix_lm", "empty_rows"])
@pytest.mark.parametrize("score_mod_name", ["relative_per_head", "relative_shared_subtracted", "alibi",
                                            "identity", "none"])
def test_flex_attention_matches_the_dense_reference_forward_and_backward(sizes, mask_name, score_mod_name):
    n_queries, n_keys = sizes
    heads = 3
    mask_mod = _mask_cases(n_queries, n_keys)[mask_name]
    table = _relative_bias_table(heads, n_queries, n_keys)
    score_mod = _score_mod_cases(table, n_keys)[score_mod_name]
    q, k, v = _inputs(2, heads, n_queries, n_keys, dim=7, value_dim=5)
    block_mask = create_block_mask(mask_mod, None, None, n_queries, n_keys, device="cpu")
    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=0.3)
    expected, _ = dense_flex_reference(q, k, v, mask_mod, score_mod, scale=0.3)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)

    grad_out = torch.randn_like(out)
    leaves = [q, k, v] + ([table] if score_mod_name.startswith("relative") else [])
    grads = torch.autograd.grad(out, leaves, grad_out)
    expected_grads = torch.autograd.grad(expected, leaves, grad_out)
    for name, grad, expected_grad in zip(["q", "k", "v", "table"], grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9, msg=name)


def test_learnable_table_gradients_pass_gradcheck_and_are_deterministic():
    n = 11
    table = _relative_bias_table(2, n, n)
    q, k, v = _inputs(1, 2, n, n, dim=3, value_dim=3)
    block_mask = create_block_mask(and_masks(causal, sliding_window(4)), None, None, n, n, device="cpu")

    def attention(q, k, v, table):
        return flex_attention(q, k, v, lambda s, b, h, qi, ki: s + table[h, qi - ki + n - 1], block_mask)
    torch.autograd.gradcheck(attention, (q, k, v, table))
    first, second = (torch.autograd.grad(attention(q, k, v, table).square().sum(), table)[0] for _ in range(2))
    assert torch.equal(first, second)


def test_float32_inputs_with_a_float64_table_get_a_float32_bias():
    n = 16
    table = _relative_bias_table(2, n, n)
    q, k, v = (t.detach().float() for t in _inputs(1, 2, n, n, dim=8, value_dim=8))
    block_mask = create_block_mask(causal, None, None, n, n, device="cpu")
    out = flex_attention(q, k, v, lambda s, b, h, qi, ki: s + table[h, qi - ki + n - 1], block_mask)
    expected, _ = dense_flex_reference(q, k, v, causal, lambda s, b, h, qi, ki: s + table[h, qi - ki + n - 1])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert table.grad is not None and table.grad.dtype == torch.float64


def test_the_bias_has_the_shape_of_what_the_score_mod_reads():
    pattern = spattn.patterns.causal_1d(6)
    table = torch.randn(4, 3, 11)

    def shapes(score_mod):
        return tuple(bias_of_score_mod(score_mod, pattern, 4, 3, torch.float32).shape)
    assert shapes(lambda s, b, h, qi, ki: s + table[0, 0, qi - ki + 5]) == (pattern.nnz,)
    assert shapes(lambda s, b, h, qi, ki: s + table[0, h, qi - ki + 5]) == (3, pattern.nnz)
    assert shapes(lambda s, b, h, qi, ki: s + table[b, h, qi - ki + 5]) == (4, 3, pattern.nnz)
    assert shapes(lambda s, b, h, qi, ki: s + table[b, 0, qi - ki + 5]) == (4, 3, pattern.nnz)
    assert shapes(lambda s, b, h, qi, ki: s + 1.5) == (pattern.nnz,)
    assert bias_of_score_mod(lambda s, b, h, qi, ki: s, pattern, 4, 3, torch.float32) is None


def test_a_score_mod_reading_b_gives_a_per_batch_bias():
    n, batch, heads = 10, 3, 2
    table = torch.randn(batch, heads, 2 * n - 1, dtype=torch.float64, requires_grad=True)

    def per_sample(score, b, h, q_idx, kv_idx):
        return score + table[b, h, q_idx - kv_idx + n - 1]
    q, k, v = _inputs(batch, heads, n, n, dim=5, value_dim=5)
    block_mask = create_block_mask(sliding_window(3), None, None, n, n, device="cpu")
    out = flex_attention(q, k, v, per_sample, block_mask)
    expected, _ = dense_flex_reference(q, k, v, sliding_window(3), per_sample)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(out.sum(), [q, k, v, table])
    expected_grads = torch.autograd.grad(expected.sum(), [q, k, v, table])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_query_attention_and_lse_match_the_reference(kv_heads):
    n_queries, n_keys = 14, 17
    mask_mod = _mask_cases(n_queries, n_keys)["empty_rows"]
    table = _relative_bias_table(4, n_queries, n_keys)
    score_mod = _score_mod_cases(table, n_keys)["relative_per_head"]
    q, k, v = _inputs(2, 4, n_queries, n_keys, dim=9, value_dim=6, kv_heads=kv_heads)
    block_mask = create_block_mask(mask_mod, None, None, n_queries, n_keys, device="cpu")
    out, lse = flex_attention(q, k, v, score_mod, block_mask, enable_gqa=True, return_lse=True)
    expected, expected_lse = dense_flex_reference(q, k, v, mask_mod, score_mod)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, expected_lse, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(out.sum(), [q, k, v, table])
    expected_grads = torch.autograd.grad(expected.sum(), [q, k, v, table])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)


def test_no_block_mask_attends_to_every_key():
    q, k, v = _inputs(1, 2, 6, 9, dim=4, value_dim=3)
    expected, _ = dense_flex_reference(q, k, v, noop_mask)
    torch.testing.assert_close(flex_attention(q, k, v), expected, rtol=1e-10, atol=1e-10)


# ---- score_mods spattn does not take ---------------------------------------------------------------------
_NOT_ADDITIVE = {
    "scaled": lambda s, b, h, qi, ki: s * 2,
    "scaled_right": lambda s, b, h, qi, ki: 0.5 * s,
    "divided": lambda s, b, h, qi, ki: s / 2,
    "tanh_softcap": lambda s, b, h, qi, ki: 30 * torch.tanh(s / 30),
    "torch_tanh": lambda s, b, h, qi, ki: torch.tanh(s),
    "masking_where": lambda s, b, h, qi, ki: torch.where(qi >= ki, s, float("-inf")),
    "negated": lambda s, b, h, qi, ki: -s,
    "reversed_difference": lambda s, b, h, qi, ki: (qi - ki).float() - s,
    "doubled": lambda s, b, h, qi, ki: s + s,
    "method": lambda s, b, h, qi, ki: s.exp(),
    "compared": lambda s, b, h, qi, ki: s + (s > 0).float(),
    "scaled_add": lambda s, b, h, qi, ki: torch.add(qi.float(), s, alpha=2),
    "replaced": lambda s, b, h, qi, ki: (qi - ki).float(),
    "scalar": lambda s, b, h, qi, ki: 0.0,
}


@pytest.mark.parametrize("name", sorted(_NOT_ADDITIVE))
def test_score_mods_that_are_not_additive_are_refused(name):
    q, k, v = _inputs(1, 2, 8, 8, dim=4, value_dim=4)
    block_mask = create_block_mask(causal, None, None, 8, 8, device="cpu")
    with pytest.raises(ValueError, match="score_mod"):
        flex_attention(q, k, v, _NOT_ADDITIVE[name], block_mask)


def test_additive_spellings_are_all_accepted():
    n = 8
    q, k, v = _inputs(1, 2, n, n, dim=4, value_dim=4)
    block_mask = create_block_mask(causal, None, None, n, n, device="cpu")

    def term(qi, ki):
        return (qi - ki).double() * 0.25
    spellings = [lambda s, b, h, qi, ki: s + term(qi, ki),
                 lambda s, b, h, qi, ki: term(qi, ki) + s,
                 lambda s, b, h, qi, ki: torch.add(s, term(qi, ki)),
                 lambda s, b, h, qi, ki: torch.add(term(qi, ki), s),
                 lambda s, b, h, qi, ki: s + 0.0 + term(qi, ki),
                 lambda s, b, h, qi, ki: s - (-term(qi, ki)),
                 lambda s, b, h, qi, ki: torch.sub(s, -term(qi, ki))]
    expected, _ = dense_flex_reference(q, k, v, causal, lambda s, b, h, qi, ki: s + term(qi, ki))
    for index, score_mod in enumerate(spellings):
        torch.testing.assert_close(flex_attention(q, k, v, score_mod, block_mask), expected, rtol=1e-10,
                                   atol=1e-10, msg=f"spelling {index}")


# ---- bad input -------------------------------------------------------------------------------------------
def test_flex_attention_refuses_bad_input():
    q, k, v = (t.detach() for t in _inputs(1, 2, 8, 8, dim=4, value_dim=4))
    pattern = spattn.patterns.causal_1d(8)
    with pytest.raises(ValueError, match="query must be 4-D"):
        flex_attention(q[0], k, v, block_mask=pattern)
    with pytest.raises(TypeError, match="key must be a torch.Tensor"):
        flex_attention(q, k.numpy(), v, block_mask=pattern)
    with pytest.raises(ValueError, match="block_mask: shape"):
        flex_attention(q, k, v, block_mask=spattn.patterns.causal_1d(7))
    torch_block_mask = torch_flex.create_block_mask(causal, None, None, 8, 8, device="cpu")
    with pytest.raises(TypeError, match="block_mask must be a spattn.Pattern"):
        flex_attention(q, k, v, block_mask=torch_block_mask)
    with pytest.raises(TypeError, match="score_mod must be None or a callable"):
        flex_attention(q, k, v, score_mod=2.0, block_mask=pattern)
    with pytest.raises(ValueError, match="enable_gqa=True"):
        flex_attention(q, k[:, :1], v[:, :1], block_mask=pattern)
    with pytest.raises(TypeError, match="return_lse must be a bool"):
        flex_attention(q, k, v, block_mask=pattern, return_lse=1)
    with pytest.raises(TypeError, match="return_aux must be None or"):
        flex_attention(q, k, v, block_mask=pattern, return_aux=True)
    with pytest.raises(ValueError, match="return_aux: max_scores"):
        flex_attention(q, k, v, block_mask=pattern, return_aux=torch_flex.AuxRequest(lse=True, max_scores=True))
    with pytest.raises(ValueError, match="return_lse: pass either"):
        flex_attention(q, k, v, block_mask=pattern, return_lse=True, return_aux=torch_flex.AuxRequest(lse=True))
    with pytest.raises(ValueError, match="score_mod: its term"):
        flex_attention(q, k, v, lambda s, b, h, qi, ki: s + torch.zeros(5), pattern)


# ---- agreement with torch's FlexAttention (eager, CPU) ---------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_agrees_with_torchs_flex_attention(kv_heads):
    n_queries, n_keys, heads = 40, 56, 4
    document_ids = torch.arange(64) // 9
    mask_mod = and_masks(document(document_ids), or_masks(causal, prefix(5)), skip_rows(7))
    table = torch.randn(heads, n_queries + n_keys - 1)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + n_keys - 1]
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(2, heads, n_queries, 16, generator=generator)
    k, v = (torch.randn(2, kv_heads, n_keys, 16, generator=generator) for _ in range(2))
    their_mask = torch_flex.create_block_mask(mask_mod, None, None, n_queries, n_keys, device="cpu")
    theirs, their_lse = torch_flex.flex_attention(q, k, v, score_mod, their_mask, enable_gqa=True, return_lse=True)
    our_mask = create_block_mask(mask_mod, None, None, n_queries, n_keys, device="cpu")
    ours, our_lse = flex_attention(q, k, v, score_mod, our_mask, enable_gqa=True, return_lse=True)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(our_lse, their_lse, rtol=2e-5, atol=2e-5)
    assert our_lse[:, :, ::7].isneginf().all() and not ours[:, :, ::7].any()
    ours_again, aux = flex_attention(q, k, v, score_mod, our_mask, enable_gqa=True,
                                     return_aux=torch_flex.AuxRequest(lse=True))
    assert torch.equal(ours_again, ours) and torch.equal(aux.lse, our_lse) and aux.max_scores is None


# ---- torch.compile ---------------------------------------------------------------------------------------
def test_flex_attention_compiles_with_a_learnable_score_mod():
    n = 32
    block_mask = create_block_mask(and_masks(causal, sliding_window(6)), None, None, n, n, device="cpu").prepare()
    table = _relative_bias_table(2, n, n)
    q, k, v = _inputs(1, 2, n, n, dim=8, value_dim=8)

    def relative(score, b, h, q_idx, kv_idx):
        return score + table[h, q_idx - kv_idx + n - 1]
    torch._dynamo.reset()
    out = torch.compile(flex_attention, fullgraph=True)(q, k, v, relative, block_mask)
    expected, _ = dense_flex_reference(q, k, v, and_masks(causal, sliding_window(6)), relative)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(out.sum(), [q, table])
    expected_grads = torch.autograd.grad(expected.sum(), [q, table])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="score_mod"):
        torch.compile(flex_attention)(q, k, v, lambda s, b, h, qi, ki: s * 2, block_mask)
