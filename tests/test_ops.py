"""spattn's ops and functional API against the dense float64 references in reference.py: forward and
backward, fused and unfused paths, gradcheck, opcheck, torch.compile, bfloat16, odd shapes."""

from __future__ import annotations

import pytest
import torch

import reference
import spattn
from spattn import ops

# The unfused path runs when dropout_p > 0; a dropout this small keeps it deterministic (nothing is ever
# dropped, and 1 / (1 - p) rounds to 1 in float32 and is within 1e-12 of it in float64).
UNFUSED = 1e-13
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-5)}


def random_pattern(n_rows, n_cols, density=0.4, seed=0, empty_rows=(1,)):
    """A random pattern with some rows guaranteed empty (rows with no entries must give 0)."""
    mask = spattn.patterns.random(n_rows, n_cols, density, seed=seed).to_dense()
    mask[0, 0] = True  # at least one entry
    for row in empty_rows:
        if row < n_rows:
            mask[row] = False
    return spattn.Pattern.from_dense(mask)


def leaf(*shape, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=generator).to(dtype).requires_grad_()


def gradients(output, inputs, seed=99):
    grad = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(output, inputs, grad.to(output.dtype), allow_unused=True)


def assert_matches_reference(actual_fn, reference_fn, inputs, dtype):
    """Forward and every input gradient of actual_fn against reference_fn on float64 copies."""
    copies = [x.detach().double().requires_grad_() for x in inputs]
    actual = actual_fn(*inputs)
    expected = reference_fn(*copies)
    torch.testing.assert_close(actual.double(), expected, **TOLERANCE[dtype])
    for got, want in zip(gradients(actual, inputs), gradients(expected, copies)):
        torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])


# ---- attention -------------------------------------------------------------------------------------------
SHAPES = [  # (Nq, Nk, D, Dv)
    (9, 7, 1, 1),
    (12, 12, 5, 3),
    (10, 14, 33, 33),
    (6, 8, 128, 16),
    (70, 90, 16, 24),  # rows longer than one block of the online softmax
    (20, 18, 32, 32),  # head dims 32 and 64 have their own compile-time kernels
    (9, 11, 64, 64),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias_kind", [None, "shared", "per_head"])
@pytest.mark.parametrize("dropout_p", [0.0, UNFUSED], ids=["fused", "unfused"])
def test_attention_matches_reference(dtype, shape, bias_kind, dropout_p):
    n_q, n_k, head_dim, value_dim = shape
    batch, heads = 2, 3
    pattern = random_pattern(n_q, n_k, 0.5 if n_k < 50 else 0.9, seed=n_q + n_k, empty_rows=(1, n_q - 1))
    q, k, v = leaf(batch, heads, n_q, head_dim, dtype=dtype, seed=1), leaf(batch, heads, n_k, head_dim, dtype=dtype,
                                                                          seed=2), \
        leaf(batch, heads, n_k, value_dim, dtype=dtype, seed=3)
    bias_shape = {"shared": (pattern.nnz,), "per_head": (heads, pattern.nnz)}.get(bias_kind)
    inputs = [q, k, v] + ([leaf(*bias_shape, dtype=dtype, seed=4)] if bias_shape else [])
    scale = 0.3 if head_dim % 2 else None

    def actual(q, k, v, bias=None):
        return spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, scale=scale, dropout_p=dropout_p)

    def expected(q, k, v, bias=None):
        return reference.attention(q, k, v, pattern, bias, scale)

    assert_matches_reference(actual, expected, inputs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("head_dim", [8, 32, 64])
@pytest.mark.parametrize("dropout_p", [0.0, UNFUSED], ids=["fused", "unfused"])
def test_attention_rows_sharing_columns(dtype, head_dim, dropout_p):
    # Swin's rows come in runs with identical columns: the fused kernel takes them two at a time.
    pattern = spattn.patterns.swin(8, 8, 4, 2)
    q, k, v = (leaf(2, 2, 64, head_dim, dtype=dtype, seed=seed) for seed in (1, 2, 3))
    bias = torch.randn(2, pattern.nnz, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    start, end = pattern.row_offsets[9].item(), pattern.row_offsets[10].item()
    bias[0, start:end] = float("-inf")  # row 9 of head 0 masked out; its partner row 8 is not
    bias = bias.to(dtype).requires_grad_()
    assert_matches_reference(
        lambda q, k, v, b: spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b, dropout_p=dropout_p),
        lambda q, k, v, b: reference.attention(q, k, v, pattern, b), [q, k, v, bias], dtype)


def test_attention_rows_without_entries_give_zero_and_finite_gradients():
    pattern = random_pattern(8, 6, seed=3, empty_rows=(0, 2, 7))
    q, k, v = leaf(1, 2, 8, 4), leaf(1, 2, 6, 4), leaf(1, 2, 6, 4)
    bias = leaf(pattern.nnz)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
    assert torch.all(out[:, :, [0, 2, 7]] == 0)
    out.sum().backward()
    for tensor in (q, k, v, bias):
        assert torch.isfinite(tensor.grad).all()
    assert torch.all(q.grad[:, :, [0, 2, 7]] == 0)


@pytest.mark.parametrize("dropout_p", [0.0, UNFUSED], ids=["fused", "unfused"])
def test_attention_row_masked_through_bias_gives_zero_not_nan(dropout_p):
    pattern = random_pattern(5, 5, 0.8, seed=1, empty_rows=())
    bias = torch.zeros(pattern.nnz, dtype=torch.float64)
    start, end = pattern.row_offsets[2].item(), pattern.row_offsets[3].item()
    bias[start:end] = float("-inf")
    bias.requires_grad_()
    q, k, v = leaf(2, 5, 3), leaf(2, 5, 3), leaf(2, 5, 3)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, dropout_p=dropout_p)
    assert torch.all(out[:, 2] == 0) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_attention_three_dimensional_inputs():
    pattern = random_pattern(11, 9, seed=5)
    q, k, v, bias = leaf(3, 11, 6), leaf(3, 9, 6), leaf(3, 9, 2), leaf(pattern.nnz)
    assert_matches_reference(lambda q, k, v, b: spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b),
                             lambda q, k, v, b: reference.attention(q, k, v, pattern, b), [q, k, v, bias],
                             torch.float64)


def test_attention_non_contiguous_and_broadcast_inputs():
    pattern = random_pattern(7, 7, seed=6)
    base = leaf(2, 7, 3, 5)
    q = base.transpose(1, 2)                     # [2, 3, 7, 5], non-contiguous
    k = leaf(1, 1, 7, 5).expand(2, 3, 7, 5)      # stride 0 in the batch and head dimensions
    v = leaf(2, 3, 5, 7).transpose(-1, -2)       # [2, 3, 7, 5]
    bias = leaf(3, 2 * pattern.nnz)[:, ::2]      # strided [H, nnz]
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
    expected = reference.attention(q, k, v, pattern, bias)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    out.sum().backward()
    assert base.grad is not None and base.grad.shape == base.shape


@pytest.mark.parametrize("kind", ["random", "swin"])
def test_attention_bfloat16_close_to_float64(kind):
    if kind == "random":
        pattern = random_pattern(20, 24, seed=7)
        q, k, v, bias = leaf(2, 2, 20, 16), leaf(2, 2, 24, 16), leaf(2, 2, 24, 8), leaf(2, pattern.nnz)
    else:
        pattern = spattn.patterns.swin(8, 8, 4, 2)
        q, k, v, bias = leaf(2, 2, 64, 32), leaf(2, 2, 64, 32), leaf(2, 2, 64, 32), leaf(2, pattern.nnz)
    inputs16 = [t.detach().bfloat16().requires_grad_() for t in (q, k, v, bias)]
    out16 = spattn.scaled_dot_product_attention(*inputs16[:3], pattern, bias=inputs16[3])
    assert out16.dtype == torch.bfloat16
    # The reference on the bfloat16-rounded inputs, so only the kernel's own error is measured.
    rounded = [t.detach().double().requires_grad_() for t in inputs16]
    expected = reference.attention(*rounded[:3], pattern, rounded[3])
    torch.testing.assert_close(out16.double(), expected, rtol=2e-2, atol=2e-2)
    for got, want in zip(gradients(out16, inputs16), gradients(expected, rounded)):
        torch.testing.assert_close(got.double(), want, rtol=5e-2, atol=5e-2)


def test_attention_pattern_from_dense_and_full_pattern_matches_torch_sdpa():
    pattern = spattn.Pattern.from_dense(torch.ones(10, 12, dtype=torch.bool))
    q, k, v = torch.randn(2, 2, 10, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 4)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v), rtol=2e-5, atol=2e-5)


def test_lse_is_minus_infinity_for_empty_rows_and_differentiable():
    pattern = random_pattern(4, 4, seed=8, empty_rows=(1,))
    q, k, v = leaf(1, 4, 2), leaf(1, 4, 2), leaf(1, 4, 2)
    out, lse = ops.attention_forward(q, k, v, None, pattern.row_offsets, pattern.col_indices, 1.0)
    assert lse.dtype == torch.float64 and lse[0, 1] == float("-inf") and lse.requires_grad
    # The empty row's -inf gets no gradient; the others reach q (tests/test_gqa_lse_bias.py checks the values).
    (grad_q,) = torch.autograd.grad(lse[torch.isfinite(lse)].sum(), q)
    assert torch.all(grad_q[0, 1] == 0) and torch.count_nonzero(grad_q) > 0
    _, lse32 = ops.attention_forward(q.float(), k.float(), v.float(), None, pattern.row_offsets,
                                     pattern.col_indices, 1.0)
    assert lse32.dtype == torch.float32


# ---- building blocks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [1, 7, 64])
def test_sddmm_matches_reference(dtype, dim):
    pattern = random_pattern(9, 13, seed=dim)
    a, b = leaf(2, 3, 9, dim, dtype=dtype, seed=1), leaf(2, 3, 13, dim, dtype=dtype, seed=2)
    assert_matches_reference(lambda a, b: spattn.sddmm(a, b, pattern), lambda a, b: reference.sddmm(a, b, pattern),
                             [a, b], dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_softmax_matches_reference(dtype):
    pattern = random_pattern(10, 8, seed=2, empty_rows=(0, 5))
    values = leaf(3, pattern.nnz, dtype=dtype)
    assert_matches_reference(lambda x: spattn.sparse_softmax(x, pattern),
                             lambda x: reference.sparse_softmax(x, pattern), [values], dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dim", [1, 6, 33])
def test_spmm_matches_reference(dtype, dim):
    pattern = random_pattern(11, 7, seed=dim)
    values, b = leaf(4, pattern.nnz, dtype=dtype, seed=1), leaf(4, 7, dim, dtype=dtype, seed=2)
    assert_matches_reference(lambda x, b: spattn.spmm(x, b, pattern), lambda x, b: reference.spmm(x, b, pattern),
                             [values, b], dtype)


def test_building_blocks_without_batch_dimensions():
    pattern = random_pattern(5, 6, seed=4)
    a, b = leaf(5, 3), leaf(6, 3)
    scores = spattn.sddmm(a, b, pattern)
    assert scores.shape == (pattern.nnz,)
    out = spattn.spmm(spattn.sparse_softmax(scores, pattern), b, pattern)
    torch.testing.assert_close(out, reference.attention(a, b, b, pattern, scale=1.0), rtol=1e-10, atol=1e-10)


def test_bfloat16_building_blocks():
    pattern = random_pattern(12, 10, seed=9)
    a, b = torch.randn(2, 12, 8), torch.randn(2, 10, 8)
    scores = spattn.sddmm(a.bfloat16(), b.bfloat16(), pattern)
    torch.testing.assert_close(scores.double(), reference.sddmm(a.bfloat16(), b.bfloat16(), pattern), rtol=2e-2,
                               atol=5e-2)
    out = spattn.spmm(spattn.sparse_softmax(scores, pattern), b.bfloat16(), pattern)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---- autograd, opcheck, compile ----------------------------------------------------------------------------
def small_problem(seed=0):
    pattern = random_pattern(5, 4, 0.6, seed=seed)
    q, k, v = leaf(2, 5, 3, seed=1), leaf(2, 4, 3, seed=2), leaf(2, 4, 2, seed=3)
    return pattern, q, k, v


def test_gradcheck_fused_and_unfused_attention():
    pattern, q, k, v = small_problem()
    bias = leaf(2, pattern.nnz, seed=4)
    q4, k4, v4 = (t.detach().unsqueeze(0).requires_grad_() for t in (q, k, v))
    for dropout_p in (0.0, UNFUSED):
        assert torch.autograd.gradcheck(
            lambda q, k, v, b: spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b, scale=0.7,
                                                                   dropout_p=dropout_p), (q4, k4, v4, bias))


def test_gradcheck_building_blocks():
    pattern, a, b, _ = small_problem(1)
    values = leaf(2, pattern.nnz, seed=5)
    assert torch.autograd.gradcheck(lambda a, b: spattn.sddmm(a, b, pattern), (a, b))
    assert torch.autograd.gradcheck(lambda x: spattn.sparse_softmax(x, pattern), (values,))
    assert torch.autograd.gradcheck(lambda x, b: spattn.spmm(x, b, pattern), (values, b))


def opcheck_samples():
    pattern, q, k, v = small_problem(2)
    transposed, permutation = pattern.transposed()
    csr = (pattern.row_offsets, pattern.col_indices)
    t_csr = (transposed.row_offsets, transposed.col_indices, permutation)
    values, bias = leaf(2, pattern.nnz, seed=6), leaf(1, pattern.nnz, seed=7)
    out, lse = ops.attention_forward(q, k, v, bias, *csr, 0.5)
    # The backward ops are not differentiable themselves (no double backward): their inputs are detached.
    q_, k_, v_, values_, bias_, out_, lse = (t.detach() for t in (q, k, v, values, bias, out, lse))
    grad_out = torch.randn_like(out_)
    return [
        (ops.sddmm, (q, k, *csr)),
        (ops.sddmm_backward, (values_, q_, k_, *csr, *t_csr)),
        (ops.sparse_softmax, (values, *csr)),
        (ops.sparse_softmax_backward, (values_, values_.softmax(-1), *csr)),
        (ops.spmm, (values, k, *csr)),
        (ops.spmm_backward, (torch.randn(2, 5, 3, dtype=torch.float64), values_, k_, *csr, *t_csr)),
        (ops.attention_forward, (q, k, v, bias, *csr, 0.5)),
        (ops.attention_forward, (q, k, v, None, *csr, 0.5)),
        (ops.attention_backward, (grad_out, q_, k_, v_, bias_, out_, lse, *csr, *t_csr, 0.5, True)),
        (ops.attention_backward, (grad_out, q_, k_, v_, None, out_, lse, *csr, *t_csr, 0.5, False)),
        (ops.transpose_pattern, (*csr, 4)),
    ]


@pytest.mark.parametrize("index", range(11))
def test_opcheck(index):
    op, args = opcheck_samples()[index]
    torch.library.opcheck(op, args)


def test_fake_kernels_check_shapes():
    """The fake kernels refuse what the kernels would (torch._check), so a traced graph fails while tracing."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    pattern = spattn.patterns.causal_1d(6)
    with FakeTensorMode() as mode:
        csr = [mode.from_tensor(t) for t in (pattern.row_offsets, pattern.col_indices)]
        a, b = torch.empty(2, 6, 4), torch.empty(2, 6, 4)
        assert ops.sddmm(a, b, *csr).shape == (2, pattern.nnz)
        with pytest.raises(RuntimeError, match="dim 5 must match a's 4"):
            ops.sddmm(a, torch.empty(2, 6, 5), *csr)
        with pytest.raises(RuntimeError, match="row_offsets must have 7 \\+ 1"):
            ops.attention_forward(torch.empty(2, 7, 4), b, b, None, *csr, 1.0)
        with pytest.raises(RuntimeError, match="bias must have nnz"):
            ops.attention_forward(a, b, b, torch.empty(1, pattern.nnz + 1), *csr, 1.0)
        with pytest.raises(RuntimeError, match="v must be 3-D like q"):
            ops.attention_forward(a, b, torch.empty(1, 2, 6, 4), None, *csr, 1.0)


def test_torch_compile_fullgraph_matches_eager_with_learnable_bias():
    torch._dynamo.reset()
    pattern = random_pattern(16, 16, seed=11)
    bias = torch.nn.Parameter(torch.randn(2, pattern.nnz) * 0.1)
    q, k, v = (torch.randn(2, 2, 16, 8, requires_grad=True) for _ in range(3))

    def step(q, k, v, bias):
        return spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias).square().sum()

    def run(function):
        for t in (q, k, v, bias):
            t.grad = None
        loss = function(q, k, v, bias)
        loss.backward()
        return [loss.detach()] + [t.grad.clone() for t in (q, k, v, bias)]

    eager = run(step)
    compiled = run(torch.compile(step, fullgraph=True))
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_double_backward_is_refused():
    pattern, q, k, v = small_problem(3)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern)
    (grad_q,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_q.sum().backward()


# ---- module ----------------------------------------------------------------------------------------------
def test_sparse_attention_module_matches_dense_masked_attention():
    torch.manual_seed(0)
    pattern = spattn.patterns.swin(4, 4, 2)
    module = spattn.SparseAttention(16, num_heads=2, qkv_bias=True, pattern=pattern).double()
    x = torch.randn(3, 16, 16, dtype=torch.float64)
    qkv = module.qkv(x).reshape(3, 16, 3, 2, 8).permute(2, 0, 3, 1, 4)
    expected = reference.attention(qkv[0], qkv[1], qkv[2], pattern).transpose(1, 2).reshape(3, 16, 16)
    torch.testing.assert_close(module(x), module.proj(expected), rtol=1e-10, atol=1e-10)
    assert set(dict(module.named_parameters())) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    module.train()
    module.attn_drop.p = 0.5
    assert module(x, pattern).shape == x.shape


# ---- edge cases ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dropout_p", [0.0, UNFUSED], ids=["fused", "unfused"])
def test_pattern_without_entries(dropout_p):
    pattern = spattn.Pattern.from_dense(torch.zeros(4, 3, dtype=torch.bool))
    q, k, v, bias = leaf(2, 4, 5), leaf(2, 3, 5), leaf(2, 3, 2), leaf(0)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, dropout_p=dropout_p)
    out.sum().backward()
    assert torch.all(out == 0) and all(torch.all(t.grad == 0) for t in (q, k, v))


def test_empty_batch_and_no_queries():
    pattern = random_pattern(4, 3)
    out = spattn.scaled_dot_product_attention(torch.randn(0, 4, 5), torch.randn(0, 3, 5), torch.randn(0, 3, 2), pattern)
    assert out.shape == (0, 4, 2)
    no_rows = spattn.Pattern.from_dense(torch.zeros(0, 3, dtype=torch.bool))
    out = spattn.scaled_dot_product_attention(torch.randn(2, 0, 5), torch.randn(2, 3, 5), torch.randn(2, 3, 2), no_rows)
    assert out.shape == (2, 0, 2)
    assert spattn.sddmm(torch.randn(3, 0, 4), torch.randn(3, 3, 4), no_rows).shape == (3, 0)


def test_large_head_dim_and_different_value_dim():
    pattern = random_pattern(6, 7, 0.5, seed=12)
    q, k, v = leaf(1, 2, 6, 160), leaf(1, 2, 7, 160), leaf(1, 2, 7, 200)
    assert_matches_reference(lambda q, k, v: spattn.scaled_dot_product_attention(q, k, v, pattern),
                             lambda q, k, v: reference.attention(q, k, v, pattern), [q, k, v], torch.float64)


# ---- the execution plan and the grouped forward op -------------------------------------------------------
def check_plan(pattern):
    """Every row in exactly one group, increasing within a group; rows share a group iff their columns match."""
    group_offsets, group_rows = pattern.plan()
    assert group_offsets.dtype == group_rows.dtype == torch.int64
    assert group_offsets[0] == 0 and group_offsets[-1] == pattern.shape[0]
    assert sorted(group_rows.tolist()) == list(range(pattern.shape[0]))
    offsets, columns = pattern.row_offsets.tolist(), pattern.col_indices.tolist()
    row_columns = [tuple(columns[offsets[r]:offsets[r + 1]]) for r in range(pattern.shape[0])]
    lists = []
    for g in range(group_offsets.shape[0] - 1):
        rows = group_rows[group_offsets[g]:group_offsets[g + 1]].tolist()
        assert rows and rows == sorted(rows)
        assert all(row_columns[r] == row_columns[rows[0]] for r in rows)
        lists.append(row_columns[rows[0]])
    assert len(set(lists)) == len(lists)  # different groups, different columns


@pytest.mark.parametrize("kind", ["swin", "swin_shift", "random", "empty"])
def test_plan_groups_rows_with_identical_columns(kind):
    pattern = {"swin": lambda: spattn.patterns.swin(14, 14, 7),
               "swin_shift": lambda: spattn.patterns.swin(14, 14, 7, shift_size=3),
               "random": lambda: random_pattern(30, 5, 0.4, empty_rows=(1, 4, 7)),
               "empty": lambda: spattn.Pattern.from_dense(torch.zeros(3, 4, dtype=torch.bool))}[kind]()
    check_plan(pattern)
    if kind == "swin":
        assert pattern.plan()[0].shape[0] - 1 == 4 and (pattern.plan()[0].diff() == 49).all()
    assert pattern.plan()[0] is pattern.plan()[0]  # cached


def grouped_inputs(pattern, bias_heads=1, dtype=torch.float64):
    n_q, n_k = pattern.shape
    q, k = leaf(2, n_q, 6, dtype=dtype, seed=1), leaf(2, n_k, 6, dtype=dtype, seed=2)
    v = leaf(2, n_k, 4, dtype=dtype, seed=3)
    bias = leaf(bias_heads, pattern.nnz, dtype=dtype, seed=4)
    return q, k, v, bias, (pattern.row_offsets, pattern.col_indices), pattern.plan()


def test_attention_forward_grouped_equals_attention_forward_on_cpu():
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    q, k, v, bias, csr, plan = grouped_inputs(pattern, bias_heads=2)
    out, lse = ops.attention_forward_grouped(q, k, v, bias, *csr, *plan, 0.4)
    expected_out, expected_lse = ops.attention_forward(q, k, v, bias, *csr, 0.4)
    torch.testing.assert_close(out, expected_out, **TOLERANCE[torch.float64])
    torch.testing.assert_close(lse, expected_lse, **TOLERANCE[torch.float64])
    got = gradients(out, (q, k, v, bias))
    for a, b in zip(got, gradients(expected_out, (q, k, v, bias))):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float64])


@pytest.mark.parametrize("with_bias", [True, False])
def test_opcheck_attention_forward_grouped(with_bias):
    q, k, v, bias, csr, plan = grouped_inputs(random_pattern(7, 6, 0.5, seed=3))
    torch.library.opcheck(ops.attention_forward_grouped, (q, k, v, bias if with_bias else None, *csr, *plan, 0.5))


def test_torch_compile_fullgraph_attention_forward_grouped():
    torch._dynamo.reset()
    q, k, v, bias, csr, plan = grouped_inputs(spattn.patterns.swin(8, 8, 4), dtype=torch.float32)

    def loss(q, k, v, bias):
        return ops.attention_forward_grouped(q, k, v, bias, *csr, *plan, 0.3)[0].square().sum()

    eager = torch.autograd.grad(loss(q, k, v, bias), (q, k, v, bias))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(q, k, v, bias), (q, k, v, bias))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
