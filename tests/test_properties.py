"""Property-based tests (hypothesis): random patterns, shapes, dtypes, biases and scales, every op forward and
backward against the dense float64 references in tests/reference.py, and the pattern algebra.

Patterns are drawn row by row, each row empty, full, a single entry or random, so that empty rows, full rows,
single entries, nnz = 0 and Nq != Nk all come up; head dims run over 1..160 with the dims that have their own
compiled kernel copies (32, 64) drawn often. The examples configured per test (MAX_EXAMPLES below) total 2000
per run; hypothesis may stop a test early when it has exhausted its strategy. The examples that actually ran
are counted and printed at the end of the module (visible with ``pytest -s``) and checked by the last test.
"""

from __future__ import annotations

import collections

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference
import spattn
from spattn import Pattern

MAX_EXAMPLES = {
    "fused_attention": 500,
    "unfused_equals_fused": 300,
    "sddmm": 200,
    "sparse_softmax": 200,
    "spmm": 200,
    "pattern_algebra": 300,
    "pattern_round_trips": 300,
}
EXAMPLES_RUN: collections.Counter = collections.Counter()


def property_settings(name: str):
    # No deadline: the first example of a test pays for torch's op dispatch warm-up. No example database:
    # CI starts from a clean checkout, and the repository must not collect files.
    return settings(max_examples=MAX_EXAMPLES[name], deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- strategies ------------------------------------------------------------------------------------------
@st.composite
def masks(draw, max_rows=12, max_cols=12, min_rows=0, min_cols=0) -> torch.Tensor:
    """A [Nq, Nk] bool mask whose rows are each empty, full, a single entry or random."""
    rows = draw(st.integers(min_rows, max_rows))
    cols = draw(st.integers(min_cols, max_cols))
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    if cols == 0:
        return mask
    for row in range(rows):
        kind = draw(st.sampled_from(["empty", "full", "single", "random", "random"]))
        if kind == "full":
            mask[row] = True
        elif kind == "single":
            mask[row, draw(st.integers(0, cols - 1))] = True
        elif kind == "random":
            mask[row] = torch.tensor(draw(st.lists(st.booleans(), min_size=cols, max_size=cols)))
    return mask


# Head dims 32 and 64 run their own compiled kernel copies; 160 is the largest the issue asks for.
head_dims = st.one_of(st.sampled_from([1, 32, 64, 160]), st.integers(1, 160))
float_dtypes = st.sampled_from([torch.float64, torch.float32])
TOLERANCE = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4)}


def random_tensor(generator: torch.Generator, shape, dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype) -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **TOLERANCE[dtype])


def gradients(output: torch.Tensor, inputs: list, grad_output: torch.Tensor) -> list:
    return list(torch.autograd.grad(output, inputs, grad_output.to(output.dtype), allow_unused=True))


@st.composite
def attention_problems(draw):
    """(q, k, v, pattern, bias, scale, dtype) with leafs that require grad."""
    mask = draw(masks(min_rows=1, min_cols=1))
    pattern = Pattern.from_dense(mask)
    rows, cols = mask.shape
    dtype = draw(float_dtypes)
    head_dim = draw(head_dims)
    value_dim = draw(st.one_of(st.just(head_dim), head_dims))
    four_d = draw(st.booleans())
    batch, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3)) if four_d else 1
    leading = (batch, heads) if four_d else (batch,)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    q = random_tensor(generator, (*leading, rows, head_dim), dtype).requires_grad_()
    k = random_tensor(generator, (*leading, cols, head_dim), dtype).requires_grad_()
    v = random_tensor(generator, (*leading, cols, value_dim), dtype).requires_grad_()
    bias_kind = draw(st.sampled_from(["none", "shared", "per_head"] if four_d else ["none", "shared"]))
    bias = None
    if bias_kind != "none":
        bias_shape = (pattern.nnz,) if bias_kind == "shared" else (heads, pattern.nnz)
        bias = random_tensor(generator, bias_shape, dtype).requires_grad_()
    scale = draw(st.one_of(st.none(), st.floats(0.05, 2.0)))
    grad_out = random_tensor(generator, (*leading, rows, value_dim), torch.float64)
    return q, k, v, pattern, bias, scale, dtype, grad_out


def leaves(q, k, v, bias) -> list:
    return [t for t in (q, k, v, bias) if t is not None]


# ---- attention -------------------------------------------------------------------------------------------
@property_settings("fused_attention")
@given(attention_problems())
def test_fused_attention_matches_the_dense_reference(problem):
    EXAMPLES_RUN["fused_attention"] += 1
    q, k, v, pattern, bias, scale, dtype, grad_out = problem
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, scale=scale)
    expected = reference.attention(q, k, v, pattern, bias=bias, scale=scale)
    assert out.shape == expected.shape and out.dtype == dtype
    assert_close(out, expected, dtype)
    for actual, wanted in zip(gradients(out, leaves(q, k, v, bias), grad_out),
                              gradients(expected, leaves(q, k, v, bias), grad_out)):
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype)


def unfused_attention(q, k, v, pattern, bias, scale):
    """Attention composed of the three building blocks (what dropout_p > 0 runs, without the dropout)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = spattn.sddmm(q, k, pattern) * scale
    if bias is not None:
        scores = scores + bias  # [nnz] or [H, nnz] broadcasts against [B, nnz] / [B, H, nnz]
    return spattn.spmm(spattn.sparse_softmax(scores, pattern), v, pattern)


@property_settings("unfused_equals_fused")
@given(attention_problems())
def test_unfused_building_blocks_equal_fused_attention(problem):
    EXAMPLES_RUN["unfused_equals_fused"] += 1
    q, k, v, pattern, bias, scale, dtype, grad_out = problem
    fused = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, scale=scale)
    unfused = unfused_attention(q, k, v, pattern, bias, scale)
    assert_close(unfused, fused, dtype)
    for actual, wanted in zip(gradients(unfused, leaves(q, k, v, bias), grad_out),
                              gradients(fused, leaves(q, k, v, bias), grad_out)):
        assert_close(actual, wanted, dtype)


# ---- building blocks -------------------------------------------------------------------------------------
@st.composite
def block_problems(draw):
    mask = draw(masks(min_rows=1, min_cols=1))
    dtype = draw(float_dtypes)
    dim = draw(head_dims)
    leading = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    return Pattern.from_dense(mask), dtype, dim, leading, generator


@property_settings("sddmm")
@given(block_problems())
def test_sddmm_matches_the_dense_reference(problem):
    EXAMPLES_RUN["sddmm"] += 1
    pattern, dtype, dim, leading, generator = problem
    a = random_tensor(generator, (*leading, pattern.shape[0], dim), dtype).requires_grad_()
    b = random_tensor(generator, (*leading, pattern.shape[1], dim), dtype).requires_grad_()
    grad = random_tensor(generator, (*leading, pattern.nnz), torch.float64)
    out = spattn.sddmm(a, b, pattern)
    expected = reference.sddmm(a, b, pattern)
    assert_close(out, expected, dtype)
    for actual, wanted in zip(gradients(out, [a, b], grad), gradients(expected, [a, b], grad)):
        assert_close(actual, wanted, dtype)


@property_settings("sparse_softmax")
@given(block_problems(), st.floats(0.1, 10.0))
def test_sparse_softmax_matches_the_dense_reference(problem, spread):
    EXAMPLES_RUN["sparse_softmax"] += 1
    pattern, dtype, _, leading, generator = problem
    values = (spread * random_tensor(generator, (*leading, pattern.nnz), torch.float64)).to(dtype).requires_grad_()
    grad = random_tensor(generator, (*leading, pattern.nnz), torch.float64)
    out = spattn.sparse_softmax(values, pattern)
    expected = reference.sparse_softmax(values, pattern)
    assert_close(out, expected, dtype)
    assert_close(gradients(out, [values], grad)[0], gradients(expected, [values], grad)[0], dtype)


@property_settings("spmm")
@given(block_problems())
def test_spmm_matches_the_dense_reference(problem):
    EXAMPLES_RUN["spmm"] += 1
    pattern, dtype, dim, leading, generator = problem
    values = random_tensor(generator, (*leading, pattern.nnz), dtype).requires_grad_()
    b = random_tensor(generator, (*leading, pattern.shape[1], dim), dtype).requires_grad_()
    grad = random_tensor(generator, (*leading, pattern.shape[0], dim), torch.float64)
    out = spattn.spmm(values, b, pattern)
    expected = reference.spmm(values, b, pattern)
    assert_close(out, expected, dtype)
    for actual, wanted in zip(gradients(out, [values, b], grad), gradients(expected, [values, b], grad)):
        assert_close(actual, wanted, dtype)


# ---- pattern algebra -------------------------------------------------------------------------------------
@st.composite
def mask_pairs(draw):
    first = draw(masks())
    rows, cols = first.shape
    second = draw(masks(max_rows=rows, max_cols=cols, min_rows=rows, min_cols=cols))
    return first, second


@property_settings("pattern_algebra")
@given(mask_pairs())
def test_and_or_transpose_match_the_boolean_masks(pair):
    EXAMPLES_RUN["pattern_algebra"] += 1
    first, second = pair
    p, q = Pattern.from_dense(first), Pattern.from_dense(second)
    assert torch.equal((p & q).to_dense(), first & second)
    assert torch.equal((p | q).to_dense(), first | second)
    assert torch.equal(p.T.to_dense(), first.T)
    assert p.T.T.equal(p)
    assert (p & p).equal(p) and (p | p).equal(p)
    assert (p & q).nnz + (p | q).nnz == p.nnz + q.nnz
    # The transpose's permutation carries values in CSR order to the transpose's CSR order.
    transposed, permutation = p.transposed()
    values = torch.arange(p.nnz, dtype=torch.float64)
    dense = reference.values_to_dense(values, p, fill=-1.0)
    assert torch.equal(reference.values_to_dense(values[permutation], transposed, fill=-1.0), dense.T)


@property_settings("pattern_round_trips")
@given(masks(), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_from_dense_from_csr_from_coo_round_trip(mask, seed, duplicates):
    EXAMPLES_RUN["pattern_round_trips"] += 1
    pattern = Pattern.from_dense(mask)
    assert pattern.shape == tuple(mask.shape) and pattern.nnz == int(mask.sum())
    assert torch.equal(pattern.to_dense(), mask)
    assert Pattern.from_csr(pattern.row_offsets, pattern.col_indices, pattern.shape).equal(pattern)
    # COO in any order, with repeated entries, gives the same pattern.
    rows, cols = mask.nonzero(as_tuple=True)
    order = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))
    repeats = order[:duplicates] if rows.numel() else order[:0]
    order = torch.cat([order, repeats])
    assert Pattern.from_coo(rows[order], cols[order], mask.shape).equal(pattern)
    assert Pattern.from_coo(rows.tolist(), cols.tolist(), tuple(mask.shape)).equal(pattern)


# ---- what ran ----------------------------------------------------------------------------------------------
def test_zz_every_property_ran_examples():
    """Runs last in this module: reports and checks the number of examples each property ran."""
    ran = {name: EXAMPLES_RUN[name] for name in MAX_EXAMPLES}
    print(f"\nhypothesis examples run: {sum(ran.values())} of {sum(MAX_EXAMPLES.values())} configured: {ran}")
    if not any(ran.values()):
        pytest.skip("no property test ran in this session (deselected)")
    for name, count in ran.items():
        assert count == 0 or count >= min(10, MAX_EXAMPLES[name]), f"{name} ran only {count} examples"
