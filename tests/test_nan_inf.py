"""NaN and infinity: a NaN in a key or value poisons only the query rows that attend to it; a -inf bias entry
acts as an entry removed from the pattern; a row whose entries are all masked gives zeros and zero gradients,
never NaN. Forward and backward, fused attention and the unfused building blocks."""

from __future__ import annotations

import pytest
import torch

import reference
import spattn
from spattn import Pattern, patterns

TOLERANCE = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4)}
DTYPES = [torch.float64, torch.float32]


def unfused_attention(q, k, v, pattern, bias=None, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = spattn.sddmm(q, k, pattern) * scale
    if bias is not None:
        scores = scores + bias
    return spattn.spmm(spattn.sparse_softmax(scores, pattern), v, pattern)


PATHS = {"fused": spattn.scaled_dot_product_attention, "unfused": unfused_attention}


def inputs(pattern, dtype, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows, cols = pattern.shape
    make = lambda n: torch.randn(2, 3, n, dim, generator=generator, dtype=torch.float64).to(dtype)  # noqa: E731
    return make(rows), make(cols), make(cols), torch.randn(2, 3, rows, dim, generator=generator).to(dtype)


def run(attention, q, k, v, pattern, bias=None):
    """Output and the gradients of q, k, v (and bias) for a fixed output gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())
    out = attention(*leaves[:3], pattern, bias=leaves[3] if bias is not None else None)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out)]


# ---- NaN in a key or a value -----------------------------------------------------------------------------
PATTERN = patterns.random(12, 10, 0.35, seed=3)
MASK = PATTERN.to_dense()
# A column that some rows attend to and others do not.
POISONED_COLUMN = next(c for c in range(10) if 0 < int(MASK[:, c].sum()) < 12)
POISONED_ROWS = MASK[:, POISONED_COLUMN]
# Columns that no poisoned row attends to: their key and value gradients stay clean.
CLEAN_COLUMNS = ~MASK[POISONED_ROWS].any(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("where", ["key", "value"])
def test_a_nan_poisons_only_the_rows_that_attend_to_it(where, path, dtype):
    assert POISONED_ROWS.any() and (~POISONED_ROWS).any() and CLEAN_COLUMNS.any()
    q, k, v, _ = inputs(PATTERN, dtype)
    clean = run(PATHS[path], q, k, v, PATTERN)
    (k if where == "key" else v)[0, 1, POISONED_COLUMN, 2] = float("nan")
    out, grad_q, grad_k, grad_v = run(PATHS[path], q, k, v, PATTERN)
    # The poisoned problem (batch 0, head 1): rows attending to the NaN are NaN, the others are untouched.
    assert out[0, 1][POISONED_ROWS].isnan().any(-1).all()
    torch.testing.assert_close(out[0, 1][~POISONED_ROWS], clean[0][0, 1][~POISONED_ROWS], **TOLERANCE[dtype])
    torch.testing.assert_close(grad_q[0, 1][~POISONED_ROWS], clean[1][0, 1][~POISONED_ROWS], **TOLERANCE[dtype])
    torch.testing.assert_close(grad_k[0, 1][CLEAN_COLUMNS], clean[2][0, 1][CLEAN_COLUMNS], **TOLERANCE[dtype])
    torch.testing.assert_close(grad_v[0, 1][CLEAN_COLUMNS], clean[3][0, 1][CLEAN_COLUMNS], **TOLERANCE[dtype])
    # Every other problem is exactly as without the NaN.
    others = torch.ones(2, 3, dtype=torch.bool)
    others[0, 1] = False
    for poisoned, unpoisoned in zip((out, grad_q, grad_k, grad_v), clean):
        assert torch.equal(poisoned[others], unpoisoned[others])


# ---- -inf bias entries -----------------------------------------------------------------------------------
def without_entries(pattern: Pattern, removed: torch.Tensor) -> Pattern:
    rows = reference.entry_rows(pattern)[~removed]
    return Pattern.from_coo(rows, pattern.col_indices[~removed], pattern.shape)


# A wide pattern: full rows of 150 keys span three blocks of the fused kernel's online softmax (64 entries
# each), so whole blocks masked at the start, middle or end of a row are covered; the random rows are not.
WIDE = Pattern.from_dense(torch.cat([torch.ones(6, 150, dtype=torch.bool),
                                     patterns.random(6, 150, 0.2, seed=5).to_dense()]))
WIDE_ROWS = reference.entry_rows(WIDE)
WIDE_COLUMNS = WIDE.col_indices


def masked_entries(kind: str) -> torch.Tensor:
    if kind == "scattered":
        return torch.rand(WIDE.nnz, generator=torch.Generator().manual_seed(7)) < 0.3
    block = WIDE_COLUMNS // 64  # 0, 1, 2 along a full row
    return {"first_block": block == 0, "middle_block": block == 1, "last_blocks": block >= 1}[kind] & (WIDE_ROWS < 6) \
        | ((WIDE_ROWS == 1) & (block != 0))  # row 1 differs from row 0: the kernel's row pairs diverge


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("kind", ["scattered", "first_block", "middle_block", "last_blocks"])
def test_minus_inf_bias_entries_act_as_entries_removed_from_the_pattern(kind, path, dtype):
    removed = masked_entries(kind)
    q, k, v, _ = inputs(WIDE, dtype, seed=1)
    bias = torch.randn(WIDE.nnz, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    masked_bias = bias.masked_fill(removed, float("-inf"))
    smaller = without_entries(WIDE, removed)
    out, grad_q, grad_k, grad_v, grad_bias = run(PATHS[path], q, k, v, WIDE, masked_bias)
    expected = run(PATHS[path], q, k, v, smaller, bias[~removed])
    for actual, wanted in zip((out, grad_q, grad_k, grad_v), expected):
        assert torch.isfinite(actual).all()
        torch.testing.assert_close(actual, wanted, **TOLERANCE[dtype])
    assert torch.equal(grad_bias[removed], torch.zeros_like(grad_bias[removed]))
    torch.testing.assert_close(grad_bias[~removed], expected[4], **TOLERANCE[dtype])
    # And against the dense float64 reference.
    torch.testing.assert_close(out.double(), reference.attention(q, k, v, WIDE, bias=masked_bias),
                               **TOLERANCE[dtype])


# ---- rows with every entry masked ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES + [torch.bfloat16])
@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("masked_rows", [[0], [0, 1], [3, 7], list(range(12))])
def test_a_row_whose_entries_are_all_masked_gives_zeros_and_zero_gradients(masked_rows, path, dtype):
    pattern = WIDE
    masked = torch.zeros(pattern.shape[0], dtype=torch.bool)
    masked[masked_rows] = True
    entry_masked = masked[reference.entry_rows(pattern)]
    q, k, v, _ = inputs(pattern, dtype, seed=4)
    bias = torch.zeros(3, pattern.nnz, dtype=dtype).masked_fill(entry_masked, float("-inf"))  # per-head bias
    out, grad_q, grad_k, grad_v, grad_bias = run(PATHS[path], q, k, v, pattern, bias)
    for tensor in (out, grad_q, grad_k, grad_v, grad_bias):
        assert not tensor.isnan().any()
    assert torch.equal(out[:, :, masked], torch.zeros_like(out[:, :, masked]))
    assert torch.equal(grad_q[:, :, masked], torch.zeros_like(grad_q[:, :, masked]))
    assert torch.equal(grad_bias[:, entry_masked], torch.zeros_like(grad_bias[:, entry_masked]))
    if masked.all():  # nothing attends: every gradient is zero
        for tensor in (grad_k, grad_v, grad_bias):
            assert torch.equal(tensor, torch.zeros_like(tensor))
    else:
        tolerance = TOLERANCE.get(dtype, dict(rtol=3e-2, atol=3e-2))
        torch.testing.assert_close(out[:, :, ~masked].double(),
                                   reference.attention(q, k, v, pattern, bias=bias)[:, :, ~masked], **tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_softmax_of_an_all_minus_inf_row_is_zero_with_zero_gradient(dtype):
    pattern = patterns.causal_1d(5)
    values = torch.randn(2, pattern.nnz, dtype=dtype)
    values[:, pattern.row_offsets[2]:pattern.row_offsets[3]] = float("-inf")  # row 2, all of it
    values[0, 0] = float("-inf")  # row 0 (one entry) of the first problem only
    values.requires_grad_()
    out = spattn.sparse_softmax(values, pattern)
    (grad,) = torch.autograd.grad(out, values, torch.randn_like(out))
    assert not out.isnan().any() and not grad.isnan().any()
    assert torch.equal(out[:, 3:6], torch.zeros_like(out[:, 3:6])) and out[0, 0] == 0 and out[1, 0] == 1
    assert torch.equal(grad[:, 3:6], torch.zeros_like(grad[:, 3:6])) and grad[0, 0] == 0
    torch.testing.assert_close(out.double(), reference.sparse_softmax(values, pattern), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_positive_infinity_in_a_query_does_not_leak_into_other_rows(dtype):
    q, k, v, _ = inputs(PATTERN, dtype, seed=6)
    clean = run(spattn.scaled_dot_product_attention, q, k, v, PATTERN)
    q[1, 2, 4, 0] = float("inf")
    out, grad_q, _, _ = run(spattn.scaled_dot_product_attention, q, k, v, PATTERN)
    others = torch.ones(12, dtype=torch.bool)
    others[4] = False
    assert torch.equal(out[1, 2, others], clean[0][1, 2, others])
    assert torch.equal(out[0], clean[0][0]) and torch.equal(grad_q[0], clean[1][0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_row_whose_only_score_is_nan_is_nan_not_an_empty_row(path, dtype):
    # A NaN is no maximum (comparisons with it are false): a kernel that looks for the row maximum must not
    # mistake a row of NaN scores for a fully masked row and return zeros.
    pattern = Pattern.from_dense(torch.tensor([[True, False, False], [True, True, False], [False, False, True]]))
    q, k, v, _ = inputs(pattern, dtype, seed=8)
    k[:, :, 0, :] = float("nan")
    out = run(PATHS[path], q, k, v, pattern)[0]
    assert out[:, :, :2].isnan().all() and torch.isfinite(out[:, :, 2]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_softmax_of_a_nan_row_is_nan(dtype):
    pattern = patterns.causal_1d(3)
    values = torch.zeros(pattern.nnz, dtype=dtype)
    values[0] = float("nan")  # row 0: its one entry
    values[1:3] = torch.tensor([float("nan"), float("-inf")])  # row 1: NaN and masked
    out = spattn.sparse_softmax(values, pattern)
    assert out[:3].isnan().all() and torch.isfinite(out[3:]).all()
