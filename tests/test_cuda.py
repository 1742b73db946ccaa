"""The CUDA kernels against the dense float64 references in reference.py (computed on the CPU from the same
rounded inputs): every op, float32 / float16 / bfloat16, forward and backward, empty rows, Nq != Nk, head
dims with and without a fast path, bias, strided q/k/v (views of one projection) and out in [B, N, H, Dv]
order; plus opcheck, torch.compile, CUDA graphs and the cuSPARSE baseline. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import reference  # noqa: E402
import spattn  # noqa: E402
from spattn import _C, ops  # noqa: E402,F401
from spattn import ops_cuda  # noqa: E402

if not _C.build_info()["cuda"]:
    pytest.skip("spattn was built without CUDA", allow_module_level=True)

CUDA = torch.device("cuda")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {
    torch.float32: dict(rtol=2e-4, atol=2e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}
spattn_ops = torch.ops.spattn


# ---- helpers ---------------------------------------------------------------------------------------------
def random_pattern(n_rows, n_cols, density=0.4, seed=0, empty_rows=(1,)):
    """A random pattern with some rows empty (they must give zeros, lse -inf, never NaN)."""
    mask = spattn.patterns.random(n_rows, n_cols, density, seed=seed).to_dense()
    mask[0, 0] = True
    for row in empty_rows:
        if row < n_rows:
            mask[row] = False
    return spattn.Pattern.from_dense(mask)


def make_pattern(kind, n_rows, n_cols):
    if kind == "swin":
        side = int(round(n_rows ** 0.5))
        return spattn.patterns.swin(side, side, 4, shift_size=2)
    return random_pattern(n_rows, n_cols)


def pattern_tensors(pattern):
    p = pattern.to(CUDA)
    transposed, permutation = p.transposed()
    return (p.row_offsets, p.col_indices), (transposed.row_offsets, transposed.col_indices, permutation)


def randn(*shape, dtype, seed, scale=1.0):
    """Random values rounded to dtype, returned as (float64 CPU copy, dtype CUDA tensor)."""
    generator = torch.Generator().manual_seed(seed)
    rounded = (scale * torch.randn(*shape, dtype=torch.float64, generator=generator)).to(dtype)
    return rounded.double(), rounded.to(CUDA)


def close(actual, expected, dtype, name):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), **TOLERANCE[dtype],
                               msg=lambda m: f"{name}: {m}")


def reference_lse(q, k, pattern, bias, scale):
    mask = pattern.cpu().to_dense()
    scores = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + reference.values_to_dense(bias, pattern)
    return torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=-1)


def grads(output, inputs, grad):
    return torch.autograd.grad(output, inputs, grad, allow_unused=True)


# ---- fused attention -------------------------------------------------------------------------------------
ATTENTION_CASES = [  # (pattern kind, Nq, Nk, D, Dv): fast paths 32/64/128, then the generic ones
    ("swin", 64, 64, 32, 32),
    ("swin", 64, 64, 64, 64),
    ("random", 37, 53, 128, 128),
    ("random", 37, 53, 32, 32),
    ("random", 20, 20, 1, 1),
    ("random", 23, 31, 17, 17),
    ("random", 23, 31, 40, 24),
    ("random", 70, 90, 64, 64),  # long rows: many steps of the online softmax
    ("random", 12, 9, 200, 200),
    ("random", 12, 9, 300, 96),
]
BIAS_MODES = [None, "shared", "per_head"]


def run_attention_case(kind, n_q, n_k, d, dv, dtype, bias_mode, batch=2, heads=3, seed=0):
    pattern = make_pattern(kind, n_q, n_k)
    n_k = pattern.shape[1]
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    q64, q = randn(batch, heads, n_q, d, dtype=dtype, seed=seed)
    k64, k = randn(batch, heads, n_k, d, dtype=dtype, seed=seed + 1)
    v64, v = randn(batch, heads, n_k, dv, dtype=dtype, seed=seed + 2)
    bias64 = bias = None
    if bias_mode is not None:
        bias64, bias = randn(1 if bias_mode == "shared" else heads, pattern.nnz, dtype=dtype, seed=seed + 3)
    scale = d ** -0.5
    flat = lambda t: t.reshape(batch * heads, *t.shape[2:])  # noqa: E731

    out, lse = spattn_ops.attention_forward(flat(q), flat(k), flat(v), bias, row_offsets, col_indices, scale)
    torch.cuda.synchronize()
    leaves = [x.requires_grad_() for x in (q64, k64, v64)] + ([bias64.requires_grad_()] if bias64 is not None else [])
    expected = reference.attention(q64, k64, v64, pattern, bias64, scale)
    close(out.view(batch, heads, n_q, dv), expected, dtype, "out")
    expected_lse = reference_lse(q64.detach(), k64.detach(), pattern, None if bias64 is None else bias64.detach(),
                                 scale)
    assert torch.equal(torch.isinf(lse.cpu()), torch.isinf(expected_lse.view(batch * heads, n_q)))
    finite = torch.isfinite(expected_lse)
    tolerance = 1e-3 if dtype != torch.float32 else 1e-5
    torch.testing.assert_close(lse.view(batch, heads, n_q).cpu().double()[finite], expected_lse[finite],
                               rtol=tolerance, atol=tolerance)

    grad64, grad = randn(batch, heads, n_q, dv, dtype=dtype, seed=seed + 4)
    grad_q, grad_k, grad_v, grad_bias = spattn_ops.attention_backward(
        flat(grad), flat(q), flat(k), flat(v), bias, out, lse, row_offsets, col_indices, *transposed, scale,
        bias is not None)
    expected_grads = grads(expected, leaves, grad64)
    for name, got, want in zip(("grad_q", "grad_k", "grad_v", "grad_bias"), (grad_q, grad_k, grad_v, grad_bias),
                               expected_grads):
        close(got.view(want.shape), want, dtype, name)
    for tensor in (out, grad_q, grad_k, grad_v) + ((grad_bias,) if grad_bias is not None else ()):
        assert torch.isfinite(tensor).all()
    return pattern, out, lse, (grad_q, grad_k, grad_v, grad_bias)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("bias_mode", BIAS_MODES, ids=str)
def test_attention_matches_reference(case, dtype, bias_mode):
    run_attention_case(*case, dtype=dtype, bias_mode=bias_mode)


def test_attention_empty_rows_give_zeros():
    pattern, out, lse, (grad_q, _, _, grad_bias) = run_attention_case("random", 37, 53, 32, 32, torch.float32,
                                                                       "per_head")
    empty = (pattern.row_lengths() == 0).to(CUDA)
    assert empty.any()
    assert (out[:, empty] == 0).all() and (grad_q[:, empty] == 0).all()
    assert torch.isneginf(lse[:, empty]).all()


def test_attention_pattern_without_entries():
    pattern = spattn.Pattern.from_dense(torch.zeros(5, 7, dtype=torch.bool))
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    _, q = randn(2, 5, 32, dtype=torch.float32, seed=1)
    _, k = randn(2, 7, 32, dtype=torch.float32, seed=2)
    _, v = randn(2, 7, 32, dtype=torch.float32, seed=3)
    bias = torch.zeros(2, 0, device=CUDA)
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.2)
    assert (out == 0).all() and torch.isneginf(lse).all()
    grad_q, grad_k, grad_v, grad_bias = spattn_ops.attention_backward(
        torch.ones_like(out), q, k, v, bias, out, lse, row_offsets, col_indices, *transposed, 0.2, True)
    assert (grad_q == 0).all() and (grad_k == 0).all() and (grad_v == 0).all() and grad_bias.shape == (2, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_fully_masked_row_by_bias(dtype):
    """A bias of -inf on every entry of a row: zeros and lse -inf, not NaN, also in the gradients."""
    pattern = spattn.patterns.swin(8, 8, 4)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    _, q = randn(2, 64, 32, dtype=dtype, seed=1)
    _, k = randn(2, 64, 32, dtype=dtype, seed=2)
    _, v = randn(2, 64, 32, dtype=dtype, seed=3)
    bias = torch.zeros(1, pattern.nnz, dtype=dtype, device=CUDA)
    bias[0, :int(pattern.row_offsets[1])] = float("-inf")  # all of row 0
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.2)
    assert (out[:, 0] == 0).all() and torch.isneginf(lse[:, 0]).all() and torch.isfinite(out).all()
    grads_ = spattn_ops.attention_backward(torch.ones_like(out), q, k, v, bias, out, lse, row_offsets, col_indices,
                                           *transposed, 0.2, True)
    for g in grads_:
        assert torch.isfinite(g).all()


def test_attention_misaligned_inputs_take_the_generic_path():
    """A tensor starting 1 element into its storage cannot use the 16-byte vector loads: same results."""
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    _, q = randn(2, 64, 32, dtype=torch.float16, seed=1)
    _, k = randn(2, 64, 32, dtype=torch.float16, seed=2)
    _, v = randn(2, 64, 32, dtype=torch.float16, seed=3)
    shifted = torch.empty(q.numel() + 1, dtype=q.dtype, device=CUDA)[1:].view(q.shape)
    shifted.copy_(q)
    assert shifted.data_ptr() % 16 != 0
    out, lse = spattn_ops.attention_forward(q, k, v, None, row_offsets, col_indices, 0.3)
    out_shifted, lse_shifted = spattn_ops.attention_forward(shifted, k, v, None, row_offsets, col_indices, 0.3)
    torch.testing.assert_close(out_shifted, out, rtol=2e-3, atol=2e-3)  # summation order differs
    torch.testing.assert_close(lse_shifted, lse, rtol=1e-5, atol=1e-5)


def test_attention_backward_is_deterministic():
    pattern = random_pattern(50, 40, density=0.5)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    _, q = randn(26, 50, 64, dtype=torch.float32, seed=1)  # 9 problems per bias head: several chunks
    _, k = randn(26, 40, 64, dtype=torch.float32, seed=2)
    _, v = randn(26, 40, 64, dtype=torch.float32, seed=3)
    _, bias = randn(3, pattern.nnz, dtype=torch.float32, seed=4)
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.125)
    grad = torch.randn_like(out)
    first = spattn_ops.attention_backward(grad, q, k, v, bias, out, lse, row_offsets, col_indices, *transposed,
                                          0.125, True)
    second = spattn_ops.attention_backward(grad, q, k, v, bias, out, lse, row_offsets, col_indices, *transposed,
                                           0.125, True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_deterministic_mode_gives_bitwise_equal_forward_and_backward(fused):
    # Under torch.use_deterministic_algorithms(True) nothing may raise (no op flagged non-deterministic),
    # and two runs of the functional API, forward and backward with a per-head bias, give the same bits.
    pattern = random_pattern(96, 80, density=0.3)
    inputs = [randn(*shape, dtype=torch.float32, seed=seed)[1]
              for seed, shape in enumerate([(3, 4, 96, 64), (3, 4, 80, 64), (3, 4, 80, 64), (4, pattern.nnz)])]
    grad_out = randn(3, 4, 96, 64, dtype=torch.float32, seed=9)[1]

    def run():
        q, k, v, bias = [t.clone().requires_grad_() for t in inputs]
        if fused:
            out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
        else:
            scores = spattn.sddmm(q, k, pattern) * 0.125 + bias
            out = spattn.spmm(spattn.sparse_softmax(scores, pattern), v, pattern)
        return [out, *torch.autograd.grad(out, (q, k, v, bias), grad_out)]

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, second = run(), run()
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_gradient_summed_over_many_problems(dtype):
    """11 problems on 2 bias heads (problem p reads head p % 2): the bias gradient is summed in chunks of
    problems, the last one partial; compared with a per-problem float64 reference."""
    problems, heads = 11, 2
    pattern = random_pattern(23, 19)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    q64, q = randn(problems, 23, 32, dtype=dtype, seed=1)
    k64, k = randn(problems, 19, 32, dtype=dtype, seed=2)
    v64, v = randn(problems, 19, 32, dtype=dtype, seed=3)
    bias64, bias = randn(heads, pattern.nnz, dtype=dtype, seed=4)
    grad64, grad = randn(problems, 23, 32, dtype=dtype, seed=5)
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.2)
    grad_q, grad_k, grad_v, grad_bias = spattn_ops.attention_backward(grad, q, k, v, bias, out, lse, row_offsets,
                                                                      col_indices, *transposed, 0.2, True)
    leaves = [t.requires_grad_() for t in (q64, k64, v64, bias64)]
    expected = torch.stack([reference.attention(q64[p], k64[p], v64[p], pattern, bias64[p % heads], 0.2)
                            for p in range(problems)])
    close(out, expected, dtype, "out")
    for name, got, want in zip(("grad_q", "grad_k", "grad_v", "grad_bias"), (grad_q, grad_k, grad_v, grad_bias),
                               grads(expected, leaves, grad64)):
        close(got, want, dtype, name)


def test_bias_heads_more_than_batch():
    """bias [H, nnz] with fewer problems than heads: unread heads get a zero gradient."""
    pattern = random_pattern(10, 12)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    _, q = randn(2, 10, 32, dtype=torch.float32, seed=1)
    _, k = randn(2, 12, 32, dtype=torch.float32, seed=2)
    _, v = randn(2, 12, 32, dtype=torch.float32, seed=3)
    _, bias = randn(4, pattern.nnz, dtype=torch.float32, seed=4)
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.2)
    *_, grad_bias = spattn_ops.attention_backward(torch.ones_like(out), q, k, v, bias, out, lse, row_offsets,
                                                  col_indices, *transposed, 0.2, True)
    assert (grad_bias[2:] == 0).all() and (grad_bias[:2] != 0).any()


def test_functional_api_on_cuda():
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    q64, q = randn(2, 4, 64, 32, dtype=torch.float32, seed=1)
    k64, k = randn(2, 4, 64, 32, dtype=torch.float32, seed=2)
    v64, v = randn(2, 4, 64, 32, dtype=torch.float32, seed=3)
    q.requires_grad_()
    out = spattn.scaled_dot_product_attention(q, k, v, pattern)
    q64.requires_grad_()
    expected = reference.attention(q64, k64, v64, pattern)
    close(out, expected, torch.float32, "out")
    grad = torch.randn_like(out)
    out.backward(grad)
    (expected_grad,) = grads(expected, [q64], grad.double().cpu())
    close(q.grad, expected_grad, torch.float32, "q.grad")


# ---- unfused ops -----------------------------------------------------------------------------------------
UNFUSED_CASES = [(37, 53, 1), (37, 53, 32), (30, 20, 45), (64, 64, 64)]  # (Nq, Nk, dim)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNFUSED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_sddmm(case, dtype):
    n_q, n_k, dim = case
    pattern = random_pattern(n_q, n_k)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    a64, a = randn(3, n_q, dim, dtype=dtype, seed=1)
    b64, b = randn(3, n_k, dim, dtype=dtype, seed=2)
    out = spattn_ops.sddmm(a, b, row_offsets, col_indices)
    a64.requires_grad_(), b64.requires_grad_()
    expected = reference.sddmm(a64, b64, pattern)
    close(out, expected, dtype, "sddmm")
    grad64, grad = randn(3, pattern.nnz, dtype=dtype, seed=3)
    grad_a, grad_b = spattn_ops.sddmm_backward(grad, a, b, row_offsets, col_indices, *transposed)
    want_a, want_b = grads(expected, [a64, b64], grad64)
    close(grad_a, want_a, dtype, "grad_a")
    close(grad_b, want_b, dtype, "grad_b")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sparse_softmax(dtype):
    pattern = random_pattern(37, 53)
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    values64, values = randn(3, pattern.nnz, dtype=dtype, seed=1, scale=3.0)
    out = spattn_ops.sparse_softmax(values, row_offsets, col_indices)
    values64.requires_grad_()
    expected = reference.sparse_softmax(values64, pattern)
    close(out, expected, dtype, "softmax")
    grad64, grad = randn(3, pattern.nnz, dtype=dtype, seed=2)
    grad_values = spattn_ops.sparse_softmax_backward(grad, out, row_offsets, col_indices)
    (want,) = grads(expected, [values64], grad64)
    close(grad_values, want, dtype, "grad_values")


def test_sparse_softmax_all_masked_row_is_zero():
    pattern = spattn.patterns.swin(8, 8, 4)
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    values = torch.zeros(1, pattern.nnz, device=CUDA)
    values[0, :int(pattern.row_offsets[1])] = float("-inf")
    out = spattn_ops.sparse_softmax(values, row_offsets, col_indices)
    assert torch.isfinite(out).all() and (out[0, :int(pattern.row_offsets[1])] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", UNFUSED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_spmm(case, dtype):
    n_q, n_k, dim = case
    pattern = random_pattern(n_q, n_k)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    values64, values = randn(3, pattern.nnz, dtype=dtype, seed=1)
    b64, b = randn(3, n_k, dim, dtype=dtype, seed=2)
    out = spattn_ops.spmm(values, b, row_offsets, col_indices)
    values64.requires_grad_(), b64.requires_grad_()
    expected = reference.spmm(values64, b64, pattern)
    close(out, expected, dtype, "spmm")
    grad64, grad = randn(3, n_q, dim, dtype=dtype, seed=3)
    grad_values, grad_b = spattn_ops.spmm_backward(grad, values, b, row_offsets, col_indices, *transposed)
    want_values, want_b = grads(expected, [values64, b64], grad64)
    close(grad_values, want_values, dtype, "grad_values")
    close(grad_b, want_b, dtype, "grad_b")


# ---- argument checks in the bindings ---------------------------------------------------------------------
def test_bindings_reject_bad_sizes_naming_the_argument():
    pattern = random_pattern(10, 12)
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    a = torch.randn(2, 10, 8, device=CUDA)
    b = torch.randn(2, 12, 8, device=CUDA)
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError, match="b"):
        _C.cuda_sddmm(a, b[:, :, :4].contiguous(), row_offsets, col_indices,
                      torch.empty(2, pattern.nnz, device=CUDA), stream)
    with pytest.raises(ValueError, match="out"):
        _C.cuda_sddmm(a, b, row_offsets, col_indices, torch.empty(2, pattern.nnz + 1, device=CUDA), stream)
    with pytest.raises(ValueError, match="CUDA device"):
        _C.cuda_sddmm(a.cpu(), b, row_offsets, col_indices, torch.empty(2, pattern.nnz, device=CUDA), stream)
    with pytest.raises(ValueError, match="row_offsets"):
        _C.cuda_sddmm(a[:, :9].contiguous(), b, row_offsets, col_indices, torch.empty(2, pattern.nnz, device=CUDA),
                      stream)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        _C.cuda_sddmm(a.double(), b.double(), row_offsets, col_indices,
                      torch.empty(2, pattern.nnz, device=CUDA, dtype=torch.float64), stream)
    with pytest.raises(ValueError, match="contiguous"):
        _C.cuda_sddmm(a.transpose(1, 2).contiguous().transpose(1, 2), b, row_offsets, col_indices,
                      torch.empty(2, pattern.nnz, device=CUDA), stream)


# ---- torch integration -----------------------------------------------------------------------------------
def small_attention_inputs(dtype=torch.float32, requires_grad=False):
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    _, q = randn(4, 64, 32, dtype=dtype, seed=1)
    _, k = randn(4, 64, 32, dtype=dtype, seed=2)
    _, v = randn(4, 64, 32, dtype=dtype, seed=3)
    _, bias = randn(2, pattern.nnz, dtype=dtype, seed=4)
    for t in (q, k, v, bias):
        t.requires_grad_(requires_grad)
    return pattern, q, k, v, bias, row_offsets, col_indices, transposed


def test_opcheck():
    pattern, q, k, v, bias, row_offsets, col_indices, transposed = small_attention_inputs(requires_grad=True)
    a, b = q.detach().requires_grad_(), k.detach().requires_grad_()
    values = torch.randn(4, pattern.nnz, device=CUDA, requires_grad=True)
    grad_values = torch.randn(4, pattern.nnz, device=CUDA)
    grad_dense = torch.randn(4, 64, 32, device=CUDA)
    out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.25)
    cases = [
        (spattn_ops.sddmm.default, (a, b, row_offsets, col_indices)),
        (spattn_ops.sddmm_backward.default, (grad_values, a.detach(), b.detach(), row_offsets, col_indices,
                                             *transposed)),
        (spattn_ops.sparse_softmax.default, (values, row_offsets, col_indices)),
        (spattn_ops.sparse_softmax_backward.default, (grad_values, values.detach().softmax(-1), row_offsets,
                                                      col_indices)),
        (spattn_ops.spmm.default, (values, b, row_offsets, col_indices)),
        (spattn_ops.spmm_backward.default, (grad_dense, values.detach(), b.detach(), row_offsets, col_indices,
                                            *transposed)),
        (spattn_ops.attention_forward.default, (q, k, v, bias, row_offsets, col_indices, 0.25)),
        (spattn_ops.attention_forward.default, (q, k, v, None, row_offsets, col_indices, 0.25)),
        (spattn_ops.attention_backward.default, (grad_dense, q.detach(), k.detach(), v.detach(), bias.detach(),
                                                 out.detach(), lse, row_offsets, col_indices, *transposed, 0.25,
                                                 True)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph():
    pattern, q, k, v, bias, row_offsets, col_indices, _ = small_attention_inputs(requires_grad=True)

    def loss(q, k, v, bias):
        out, _ = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.25)
        return (out * out).sum()

    eager = torch.autograd.grad(loss(q, k, v, bias), (q, k, v, bias))
    compiled = torch.compile(loss, fullgraph=True)
    got = torch.autograd.grad(compiled(q, k, v, bias), (q, k, v, bias))
    for a, b in zip(got, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cuda_graph_capture_matches_eager():
    pattern, q, k, v, bias, row_offsets, col_indices, transposed = small_attention_inputs(torch.bfloat16)
    grad = torch.randn(4, 64, 32, device=CUDA, dtype=torch.bfloat16)

    def step():
        out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, 0.25)
        grads_ = spattn_ops.attention_backward(grad, q, k, v, bias, out, lse, row_offsets, col_indices,
                                               *transposed, 0.25, True)
        values = spattn_ops.sddmm(q, k, row_offsets, col_indices)
        probabilities = spattn_ops.sparse_softmax(values, row_offsets, col_indices)
        unfused = spattn_ops.spmm(probabilities, v, row_offsets, col_indices)
        return (out, lse, *grads_, unfused)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    # New inputs in the same buffers, then replay against eager.
    for t in (q, k, v, bias, grad):
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, step()):
        assert torch.equal(got, want)


# ---- cuSPARSE baseline -----------------------------------------------------------------------------------
needs_cusparse = pytest.mark.skipif(not _C.build_info()["cusparse"], reason="built without cuSPARSE")


@needs_cusparse
@pytest.mark.parametrize("kind", ["swin", "random"])
def test_cusparse_matches_custom_kernels(kind):
    pattern = make_pattern(kind, 64, 48)
    n_q, n_k = pattern.shape
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    _, a = randn(3, n_q, 32, dtype=torch.float32, seed=1)
    _, b = randn(3, n_k, 32, dtype=torch.float32, seed=2)
    torch.testing.assert_close(ops_cuda.cusparse_sddmm(a, b, row_offsets, col_indices),
                               spattn_ops.sddmm(a, b, row_offsets, col_indices), rtol=1e-5, atol=1e-5)
    _, values = randn(3, pattern.nnz, dtype=torch.float32, seed=3)
    torch.testing.assert_close(ops_cuda.cusparse_spmm(values, b, row_offsets, col_indices),
                               spattn_ops.spmm(values, b, row_offsets, col_indices), rtol=1e-5, atol=1e-5)


@needs_cusparse
def test_functional_backend_cusparse_matches_spattn():
    pattern = make_pattern("swin", 64, 64)
    a, b = (torch.randn(2, 3, 64, 32, device=CUDA) for _ in range(2))
    with torch.no_grad():
        scores = spattn.sddmm(a, b, pattern, backend="cusparse")
        torch.testing.assert_close(scores, spattn.sddmm(a, b, pattern), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(spattn.spmm(scores, b, pattern, backend="cusparse"), spattn.spmm(scores, b, pattern),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="float32 only"):
        spattn.sddmm(a.half(), b.half(), pattern, backend="cusparse")
    with pytest.raises(ValueError, match="no backward"):
        spattn.sddmm(a.requires_grad_(), b, pattern, backend="cusparse")


@needs_cusparse
def test_cusparse_empty_pattern_gives_zeros():
    pattern = spattn.Pattern.from_dense(torch.zeros(5, 6, dtype=torch.bool))
    (row_offsets, col_indices), _ = pattern_tensors(pattern)
    b = torch.randn(2, 6, 8, device=CUDA)
    out = ops_cuda.cusparse_spmm(torch.empty(2, 0, device=CUDA), b, row_offsets, col_indices)
    assert out.shape == (2, 5, 8) and (out == 0).all()
    assert ops_cuda.cusparse_sddmm(torch.randn(2, 5, 8, device=CUDA), b, row_offsets, col_indices).shape == (2, 0)


# ---- the grouped forward (execution plan) ----------------------------------------------------------------
def wide_groups_pattern():
    """Groups wider than one 64-column tile (30 rows x 150 columns: 3 tiles; 10 rows x 65 columns: a tile of
    one column), irregular rows (singleton groups) and empty rows, in one pattern."""
    mask = torch.zeros(50, 160, dtype=torch.bool)
    mask[:30, :150] = True
    mask[30:40, 10:140:2] = True
    mask[40:] = spattn.patterns.random(10, 160, 0.3, seed=5).to_dense()
    mask[45] = False
    mask[49] = False
    return spattn.Pattern.from_dense(mask)


def long_group_pattern():
    """A group of 70 rows (two 64-row chunks: the tensor-core backward leaves its columns to the column pass)
    beside Swin-like blocks of 6 rows, so owned and not-owned columns mix."""
    mask = torch.zeros(88, 40, dtype=torch.bool)
    mask[:70, :10] = True
    for block in range(3):
        mask[70 + 6 * block:76 + 6 * block, 10 + 10 * block:20 + 10 * block] = True
    return spattn.Pattern.from_dense(mask)


GROUPED_PATTERNS = {
    "swin7": lambda: spattn.patterns.swin(14, 14, 7),
    "swin7_shift": lambda: spattn.patterns.swin(14, 14, 7, shift_size=3),
    "swin4_shift": lambda: spattn.patterns.swin(8, 8, 4, shift_size=2),
    "random_empty_rows": lambda: random_pattern(37, 53),
    "wide_groups": wide_groups_pattern,
    "long_group": long_group_pattern,
}


def grouped_forward(q, k, v, bias, p, scale, schedule=True):
    """The grouped forward op on CUDA pattern p: with the plan's schedule (the register-resident tensor-core
    kernels for float16 / bfloat16) or without it (the SIMT grouped kernel)."""
    steps = p.plan_schedule() if schedule else (None, None)
    return spattn_ops.attention_forward_grouped(q, k, v, bias, p.row_offsets, p.col_indices, *p.plan(), scale,
                                                None, None, None, *steps)


def run_grouped_case(pattern, d, dv, dtype, bias_mode, batch=2, heads=3, seed=0, k_offset=0):
    """The grouped op, with and without the plan's schedule, against the float64 reference and the generic
    CUDA kernel."""
    n_q, n_k = pattern.shape
    p = pattern.to(CUDA)
    csr = (p.row_offsets, p.col_indices)
    q64, q = randn(batch * heads, n_q, d, dtype=dtype, seed=seed)
    k64, k = randn(batch * heads, n_k, d, dtype=dtype, seed=seed + 1)
    v64, v = randn(batch * heads, n_k, dv, dtype=dtype, seed=seed + 2)
    if k_offset:  # not 16-byte aligned: the element-wise loads
        k = torch.empty(k.numel() + k_offset, dtype=dtype, device=CUDA)[k_offset:].view(k.shape).copy_(k)
    bias64 = bias = None
    if bias_mode is not None:
        bias64, bias = randn(1 if bias_mode == "shared" else heads, pattern.nnz, dtype=dtype, seed=seed + 3)
    scale = max(d, 1) ** -0.5
    generic_out, generic_lse = spattn_ops.attention_forward(q, k, v, bias, *csr, scale)
    view = lambda t: t.view(batch, heads, *t.shape[1:])  # noqa: E731
    expected = reference.attention(view(q64), view(k64), view(v64), pattern, bias64, scale)
    for schedule in (False, True):
        out, lse = grouped_forward(q, k, v, bias, p, scale, schedule)
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
        close(view(out), expected, dtype, f"out (schedule {schedule})")
        close(out, generic_out, dtype, f"out vs the generic kernel (schedule {schedule})")
        assert torch.equal(torch.isinf(lse), torch.isinf(generic_lse))
        finite = torch.isfinite(generic_lse)
        torch.testing.assert_close(lse[finite], generic_lse[finite], rtol=1e-5, atol=1e-5)
    return pattern, out, lse


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(GROUPED_PATTERNS))
@pytest.mark.parametrize("bias_mode", BIAS_MODES, ids=str)
def test_grouped_forward_matches_reference_and_generic_kernel(kind, dtype, bias_mode):
    run_grouped_case(GROUPED_PATTERNS[kind](), 32, 32, dtype, bias_mode)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (24, 40), (16, 100), (1, 1), (0, 8), (200, 64)],
                         ids=lambda dims: f"{dims[0]}-{dims[1]}")
def test_grouped_forward_head_dims(dims, dtype):
    # 128: more than 48 KiB of shared memory; 200: past the grouped kernel's limit, the generic kernel runs.
    run_grouped_case(GROUPED_PATTERNS["swin7_shift"](), *dims, dtype, "per_head")
    run_grouped_case(wide_groups_pattern(), *dims, dtype, "shared", batch=1, heads=2)


def run_grouped_backward_case(pattern, d, dv, dtype, bias_mode, batch=2, heads=3, seed=0):
    """The backward with the plan and its schedule (tensor cores for float16 / bfloat16), with the plan alone
    (SIMT) and without the plan, against the float64 reference and each other; deterministic."""
    n_q, n_k = pattern.shape
    p = pattern.to(CUDA)
    csr, plan = (p.row_offsets, p.col_indices), p.plan()
    transposed, permutation = p.transposed()
    transposed = (transposed.row_offsets, transposed.col_indices, permutation)
    q64, q = randn(batch, heads, n_q, d, dtype=dtype, seed=seed)
    k64, k = randn(batch, heads, n_k, d, dtype=dtype, seed=seed + 1)
    v64, v = randn(batch, heads, n_k, dv, dtype=dtype, seed=seed + 2)
    bias64 = bias = None
    if bias_mode is not None:
        bias64, bias = randn(1 if bias_mode == "shared" else heads, pattern.nnz, dtype=dtype, seed=seed + 3)
    scale = max(d, 1) ** -0.5
    flat = lambda t: t.reshape(batch * heads, *t.shape[2:])  # noqa: E731
    out, lse = grouped_forward(flat(q), flat(k), flat(v), bias, p, scale)
    grad64, grad = randn(batch, heads, n_q, dv, dtype=dtype, seed=seed + 4)
    arguments = (flat(grad), flat(q), flat(k), flat(v), bias, out, lse, *csr, *transposed, scale, bias is not None)
    with_plan = spattn_ops.attention_backward(*arguments, *plan, *p.plan_schedule())
    again = spattn_ops.attention_backward(*arguments, *plan, *p.plan_schedule())
    plan_alone = spattn_ops.attention_backward(*arguments, *plan)
    without_plan = spattn_ops.attention_backward(*arguments)
    torch.cuda.synchronize()
    leaves = [x.requires_grad_() for x in (q64, k64, v64)] + ([bias64.requires_grad_()] if bias64 is not None else [])
    expected = grads(reference.attention(q64, k64, v64, pattern, bias64, scale), leaves, grad64)
    for name, got, repeated, simt, rows, want in zip(("grad_q", "grad_k", "grad_v", "grad_bias"), with_plan, again,
                                                     plan_alone, without_plan, expected):
        assert torch.isfinite(got).all(), name
        assert torch.equal(got, repeated), f"{name} is not deterministic"
        close(got.view(want.shape), want, dtype, name)
        close(simt.view(want.shape), want, dtype, f"{name} (the plan without its schedule)")
        close(got, rows, dtype, f"{name} vs the backward without the plan")
    return with_plan


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(GROUPED_PATTERNS))
@pytest.mark.parametrize("bias_mode", BIAS_MODES, ids=str)
def test_grouped_backward_matches_reference_and_row_kernels(kind, dtype, bias_mode):
    run_grouped_backward_case(GROUPED_PATTERNS[kind](), 32, 32, dtype, bias_mode)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dims", [(64, 64), (128, 128), (128, 64), (24, 40), (17, 9), (1, 1), (200, 64)],
                         ids=lambda dims: f"{dims[0]}-{dims[1]}")
def test_grouped_backward_head_dims(dims, dtype):
    # 128: the most shared memory (one block per SM); 17-9: element-wise loads; 200: the row-by-row kernels.
    run_grouped_backward_case(GROUPED_PATTERNS["swin7_shift"](), *dims, dtype, "per_head")
    run_grouped_backward_case(long_group_pattern(), *dims, dtype, "shared", batch=1, heads=2)


def swin_backward_arguments(pattern, batch, bias_heads, dtype, scale=0.25):
    """The attention_backward arguments (without the plan) for random inputs of head dim 32 on `pattern`,
    after the grouped forward; the plan with its schedule (group_offsets, group_rows, steps, unowned_columns);
    and the random inputs (q, k, v, grad, bias)."""
    pattern = pattern.to(CUDA)
    n = pattern.shape[0]
    q, k, v, grad = (torch.randn(batch, n, 32, device=CUDA, dtype=dtype) for _ in range(4))
    bias = torch.randn(bias_heads, pattern.nnz, device=CUDA, dtype=dtype)
    transposed, permutation = pattern.transposed()
    csr, plan = (pattern.row_offsets, pattern.col_indices), (*pattern.plan(), *pattern.plan_schedule())
    out, lse = grouped_forward(q, k, v, bias, pattern, scale)
    arguments = (grad, q, k, v, bias, out, lse, *csr, transposed.row_offsets, transposed.col_indices, permutation,
                 scale, True)
    return arguments, plan, [q, k, v, grad, bias]


def test_grouped_backward_bias_gradient_over_many_problems_and_unused_heads():
    # 9 problems on one bias head: three chunks of problems, the last one partial.
    run_grouped_backward_case(GROUPED_PATTERNS["swin4_shift"](), 32, 32, torch.bfloat16, "shared", batch=9, heads=1)
    # Two problems, three bias heads: no problem reads head 2, its gradient is zero.
    arguments, plan, _ = swin_backward_arguments(spattn.patterns.swin(8, 8, 4, shift_size=2), 2, 3, torch.float16)
    with_plan = spattn_ops.attention_backward(*arguments, *plan)
    without_plan = spattn_ops.attention_backward(*arguments)
    assert (with_plan[3][2] == 0).all()
    for got, want in zip(with_plan, without_plan):
        torch.testing.assert_close(got, want, **TOLERANCE[torch.float16])


def test_grouped_backward_is_graph_capturable():
    arguments, plan, inputs = swin_backward_arguments(spattn.patterns.swin(14, 14, 7, shift_size=3), 8, 4,
                                                      torch.bfloat16)
    replay_matches_eager(lambda: spattn_ops.attention_backward(*arguments, *plan), inputs)


def test_grouped_forward_misaligned_keys():
    for kind in ("swin7", "wide_groups"):
        run_grouped_case(GROUPED_PATTERNS[kind](), 32, 32, torch.float16, "per_head", k_offset=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grouped_forward_empty_rows_and_masked_rows(dtype):
    pattern, out, lse = run_grouped_case(GROUPED_PATTERNS["wide_groups"](), 32, 32, dtype, "per_head")
    empty = (pattern.row_lengths() == 0).to(CUDA)
    assert empty.any() and (out[:, empty] == 0).all() and torch.isneginf(lse[:, empty]).all()
    # A pattern without entries (one group of 5 empty rows).
    nothing = spattn.Pattern.from_dense(torch.zeros(5, 7, dtype=torch.bool)).to(CUDA)
    q, k, v = (torch.randn(2, n, 32, device=CUDA, dtype=dtype) for n in (5, 7, 7))
    out, lse = grouped_forward(q, k, v, torch.zeros(2, 0, device=CUDA, dtype=dtype), nothing, 0.2)
    assert (out == 0).all() and torch.isneginf(lse).all()
    # Every entry of row 0 masked by a -inf bias, in a single-tile and in a multi-tile group.
    for pattern in (spattn.patterns.swin(8, 8, 4), wide_groups_pattern()):
        p = pattern.to(CUDA)
        q = torch.randn(2, p.shape[0], 32, device=CUDA, dtype=dtype)
        k, v = (torch.randn(2, p.shape[1], 32, device=CUDA, dtype=dtype) for _ in range(2))
        bias = torch.zeros(1, p.nnz, device=CUDA, dtype=dtype)
        bias[0, :int(pattern.row_offsets[1])] = float("-inf")
        out, lse = grouped_forward(q, k, v, bias, p, 0.2)
        assert (out[:, 0] == 0).all() and torch.isneginf(lse[:, 0]).all() and torch.isfinite(out).all()
        nonempty = (pattern.row_lengths() > 0).to(CUDA)
        nonempty[0] = False
        assert torch.isfinite(lse[:, nonempty]).all()


def test_grouped_forward_more_items_than_blocks():
    """batch * groups above the grid's cap of 2**20 blocks: the blocks stride over the items."""
    pattern = spattn.patterns.swin(8, 8, 4).to(CUDA)  # 4 groups
    batch = (1 << 18) + 3
    q, k, v = (torch.randn(batch, 64, 1, device=CUDA) for _ in range(3))
    csr = (pattern.row_offsets, pattern.col_indices)
    out, lse = spattn_ops.attention_forward_grouped(q, k, v, None, *csr, *pattern.plan(), 1.0)
    expected_out, expected_lse = spattn_ops.attention_forward(q, k, v, None, *csr, 1.0)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, expected_lse, rtol=1e-5, atol=1e-5)


def replay_matches_eager(run, inputs):
    """Captures run() in a CUDA graph (after a warm-up on a side stream), refills the inputs and replays:
    the replay equals an eager call on the new inputs, bit for bit."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    for t in inputs:
        t.copy_(torch.randn_like(t))
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(captured, run()):
        if got is not None:
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_grouped_forward_is_deterministic_and_graph_capturable():
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3).to(CUDA)
    args = [torch.randn(8, 196, 32, device=CUDA, dtype=torch.bfloat16) for _ in range(3)]
    bias = torch.randn(4, pattern.nnz, device=CUDA, dtype=torch.bfloat16)
    first = grouped_forward(*args, bias, pattern, 0.25)
    second = grouped_forward(*args, bias, pattern, 0.25)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    replay_matches_eager(lambda: grouped_forward(*args, bias, pattern, 0.25), args + [bias])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_grouped_opcheck_on_cuda(dtype):
    # (torch.compile of the op is tested on the CPU in test_ops.py: the same schema, fake and autograd.)
    # bfloat16: the tensor-core kernels, forward and backward.
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2).to(CUDA)
    q, k, v = (torch.randn(4, 64, 32, device=CUDA, dtype=dtype, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, pattern.nnz, device=CUDA, dtype=dtype, requires_grad=True)
    csr, plan = (pattern.row_offsets, pattern.col_indices), pattern.plan()
    transposed, permutation = pattern.transposed()
    with_schedule = (transposed.row_offsets, transposed.col_indices, permutation, *pattern.plan_schedule())
    for b in (bias, None):
        for extra in ((), with_schedule):
            torch.library.opcheck(spattn_ops.attention_forward_grouped.default, (q, k, v, b, *csr, *plan, 0.25, *extra))


@pytest.mark.parametrize("kind", ["swin7_shift", "random_empty_rows"])
def test_functional_api_takes_the_grouped_path_for_swin(kind, monkeypatch):
    calls = []
    grouped = spattn.ops.attention_forward_grouped
    monkeypatch.setattr(spattn.ops, "attention_forward_grouped", lambda *a: calls.append(1) or grouped(*a))
    pattern = GROUPED_PATTERNS[kind]()
    n_q, n_k = pattern.shape
    q64, q = randn(2, 4, n_q, 32, dtype=torch.float32, seed=1)
    k64, k = randn(2, 4, n_k, 32, dtype=torch.float32, seed=2)
    v64, v = randn(2, 4, n_k, 32, dtype=torch.float32, seed=3)
    bias64, bias = randn(4, pattern.nnz, dtype=torch.float32, seed=4)
    leaves = [t.requires_grad_() for t in (q, k, v, bias)]
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
    assert len(calls) == (1 if kind == "swin7_shift" else 0)
    leaves64 = [t.requires_grad_() for t in (q64, k64, v64, bias64)]
    expected = reference.attention(q64, k64, v64, pattern, bias64)
    close(out, expected, torch.float32, "out")
    grad64, grad = randn(2, 4, n_q, 32, dtype=torch.float32, seed=5)
    for name, got, want in zip(("q", "k", "v", "bias"), grads(out, leaves, grad), grads(expected, leaves64, grad64)):
        close(got, want, torch.float32, f"grad_{name}")


# ---- strided operands: views of one projection, out in [B, N, H, Dv] order (no copies around the op) --------
def projection_views(qkv, rank):
    """q, k, v of a [B, N, 3, H, D] projection: [B, H, N, D] views (rank 4) or, with H = 1, [B, N, D] views."""
    if rank == 4:
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return qkv[:, :, :, 0].permute(2, 0, 1, 3).unbind(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("grouped", [False, True], ids=["rows", "grouped"])
@pytest.mark.parametrize("kind", ["swin7_shift", "random"])
@pytest.mark.parametrize("head_dim, rank", [(32, 4), (17, 4), (64, 3)], ids=["d32-4d", "d17-4d", "d64-3d"])
def test_strided_projection_views_match_the_reference(head_dim, rank, kind, grouped, dtype):
    """q, k, v read in place from the projection (aligned rows: vector loads; head dim 17: element loads),
    forward and backward through autograd (the gradient of the projection), bias per head."""
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3) if kind == "swin7_shift" else random_pattern(40, 40)
    batch, n, heads = 2, pattern.shape[0], 2 if rank == 4 else 1
    qkv64, qkv = randn(batch, n, 3, heads, head_dim, dtype=dtype, seed=11)
    bias64, bias = randn(heads, pattern.nnz, dtype=dtype, seed=12)
    leaves, leaves64 = [qkv.requires_grad_(), bias.requires_grad_()], [qkv64.requires_grad_(), bias64.requires_grad_()]
    q, k, v = projection_views(qkv, rank)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    scale = head_dim ** -0.5
    if grouped:
        p = pattern.to(CUDA)
        out, lse = spattn_ops.attention_forward_grouped(q, k, v, bias, row_offsets, col_indices, *p.plan(), scale,
                                                        *transposed, *p.plan_schedule())
    else:
        out, lse = spattn_ops.attention_forward(q, k, v, bias, row_offsets, col_indices, scale, *transposed)
    if rank == 4:
        assert out.transpose(1, 2).is_contiguous()  # [B, N, H, Dv] order: the usual reshape is a view
    assert lse.is_contiguous() and lse.shape == q.shape[:-1]
    expected = reference.attention(*projection_views(qkv64, rank), pattern, bias64, scale)
    close(out, expected, dtype, "out")
    grad64, grad = randn(*out.shape, dtype=dtype, seed=13)
    for name, got, want in zip(("grad_qkv", "grad_bias"), grads(out, leaves, grad), grads(expected, leaves64, grad64)):
        assert torch.isfinite(got).all(), name
        close(got, want, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_and_contiguous_operands_agree(dtype):
    """The same attention from views of a projection and from contiguous copies: equal up to rounding (the
    contiguous half-precision call may take the tensor-core kernels), forward and backward with the plan."""
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3).to(CUDA)
    _, qkv = randn(4, 196, 3, 4, 32, dtype=dtype, seed=21)
    _, grad = randn(4, 4, 196, 32, dtype=dtype, seed=22)
    q, k, v = projection_views(qkv, 4)
    csr, plan, schedule = (pattern.row_offsets, pattern.col_indices), pattern.plan(), pattern.plan_schedule()
    transposed_pattern, permutation = pattern.transposed()
    transposed = (transposed_pattern.row_offsets, transposed_pattern.col_indices, permutation)
    results = []
    for operands in ((q, k, v), (q.contiguous(), k.contiguous(), v.contiguous())):
        out, lse = spattn_ops.attention_forward_grouped(*operands, None, *csr, *plan, 0.25, *transposed, *schedule)
        gradients = spattn_ops.attention_backward(grad, *operands, None, out, lse, *csr, *transposed, 0.25, False,
                                                  *plan, *schedule)
        results.append((out, lse, *gradients[:3]))
    for name, strided, contiguous in zip(("out", "lse", "grad_q", "grad_k", "grad_v"), *results):
        close(strided, contiguous, dtype, name)


def test_functional_api_reads_projection_views_in_place(monkeypatch):
    """scaled_dot_product_attention hands the views to the op as they are; the op does not copy them (the
    binding receives the projection's own memory)."""
    received = []
    to_dlpack = ops_cuda.to_dlpack
    monkeypatch.setattr(ops_cuda, "to_dlpack", lambda t: received.append(t) or to_dlpack(t))
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3)
    _, qkv = randn(2, 196, 3, 4, 32, dtype=torch.bfloat16, seed=31)
    q, k, v = projection_views(qkv, 4)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern)
    for given, passed in zip((q, k, v), received):  # q, k, v go first
        assert passed.data_ptr() == given.data_ptr() and passed.stride() == given.stride()
    assert received[0].data_ptr() == qkv.data_ptr() and out.transpose(1, 2).is_contiguous()


def test_bindings_check_the_schedule_naming_it():
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2).to(CUDA)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    plan, (steps, unowned) = pattern.plan(), pattern.plan_schedule()
    q = torch.randn(2, 64, 32, device=CUDA)
    out, lse = torch.empty_like(q), torch.empty(2, 64, device=CUDA)
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError, match="steps"):
        _C.cuda_attention_forward_grouped(q, q, q, None, row_offsets, col_indices, *plan, steps.view(-1, 2), 0.2,
                                          out, lse, stream)
    with pytest.raises(ValueError, match="steps"):
        _C.cuda_attention_forward_grouped(q, q, q, None, row_offsets, col_indices, *plan, steps.int(), 0.2, out, lse,
                                          stream)
    spattn_ops.attention_forward_grouped(q, q, q, None, row_offsets, col_indices, *plan, 0.2)  # fine without
    workspace = torch.empty(_C.cuda_attention_backward_workspace_size(2, 64, pattern.nnz, 0), device=CUDA)
    grads_ = [torch.empty_like(q) for _ in range(3)]

    def backward(steps, unowned):
        _C.cuda_attention_backward(q, q, q, q, None, out, lse, row_offsets, col_indices, *transposed, 0.2, *grads_,
                                   None, workspace, *plan, steps, unowned, None, stream)
    with pytest.raises(ValueError, match="unowned_columns"):
        backward(steps, None)
    with pytest.raises(ValueError, match="unowned_columns"):
        backward(steps, torch.zeros(65, dtype=torch.int64, device=CUDA))
    with pytest.raises(ValueError, match="steps"):
        _C.cuda_attention_backward(q, q, q, q, None, out, lse, row_offsets, col_indices, *transposed, 0.2, *grads_,
                                   None, workspace, None, None, steps, unowned, None, stream)
    with pytest.raises(ValueError, match="out must not overlap"):
        _C.cuda_attention_forward_grouped(q, q, q, None, row_offsets, col_indices, *plan, steps, 0.2,
                                          torch.empty(1, 64, 32, device=CUDA).expand(2, 64, 32), lse, stream)
    with pytest.raises(ValueError, match="contiguous in its last dimension"):
        _C.cuda_attention_forward(q.transpose(1, 2).contiguous().transpose(1, 2), q, q, None, row_offsets,
                                  col_indices, 0.2, out, lse, stream)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["swin7_shift", "wide_groups"])
def test_grouped_forward_nan_poisons_the_rows_attending_to_it_like_the_generic_kernel(kind, dtype):
    pattern = GROUPED_PATTERNS[kind]().to(CUDA)
    n_q, n_k = pattern.shape
    q = torch.randn(2, n_q, 32, device=CUDA, dtype=dtype)
    k, v = (torch.randn(2, n_k, 32, device=CUDA, dtype=dtype) for _ in range(2))
    k[1, 3, 5] = float("nan")
    csr = (pattern.row_offsets, pattern.col_indices)
    out, lse = spattn_ops.attention_forward_grouped(q, k, v, None, *csr, *pattern.plan(), 0.2)
    expected_out, expected_lse = spattn_ops.attention_forward(q, k, v, None, *csr, 0.2)
    attends = (pattern.to_dense()[:, 3]).to(CUDA)
    assert attends.any() and not attends.all()
    assert torch.equal(out.isnan(), expected_out.isnan()) and torch.equal(lse.isnan(), expected_lse.isnan())
    assert out[1, attends].isnan().all() and torch.isfinite(out[1, ~attends]).all() and torch.isfinite(out[0]).all()


# ---- grouped-query attention (k/v with fewer heads), a bias per problem [B, H, nnz], lse and its gradient ----
def gqa_reference(q, k, v, pattern, bias, scale):
    """Dense float64 attention with k and v heads repeated over their query heads (the definition of grouped-query
    attention), returning (out, lse): lse -inf on rows without a finite score, where it has no gradient."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + reference.values_to_dense(bias, pattern)
    scores = scores.masked_fill(~pattern.cpu().to_dense(), float("-inf"))
    has_weight = scores.amax(-1, keepdim=True) > float("-inf")
    scores = torch.where(has_weight, scores, torch.zeros((), dtype=scores.dtype))  # (no NaN gradient)
    lse = torch.where(has_weight[..., 0], torch.logsumexp(scores, -1), float("-inf"))
    return (torch.softmax(scores, -1) * has_weight) @ v, lse


def gqa_inputs(pattern, batch, heads, head_group, d, dv, dtype, bias_mode, seed):
    """q [B, H, Nq, D], k [B, H / g, Nk, D], v [B, H / g, Nk, Dv] and a bias (shared [1, nnz], per head [H, nnz]
    or per problem [B, H, nnz]) as (float64 CPU copies, CUDA tensors)."""
    n_q, n_k = pattern.shape
    q64, q = randn(batch, heads, n_q, d, dtype=dtype, seed=seed)
    k64, k = randn(batch, heads // head_group, n_k, d, dtype=dtype, seed=seed + 1)
    v64, v = randn(batch, heads // head_group, n_k, dv, dtype=dtype, seed=seed + 2)
    bias_shape = {"shared": (1,), "per_head": (heads,), "per_problem": (batch, heads)}[bias_mode]
    bias64, bias = randn(*bias_shape, pattern.nnz, dtype=dtype, seed=seed + 3)
    return (q64, k64, v64, bias64), (q, k, v, bias)


def check_gqa_gradients(got, expected, dtype, names):
    for name, actual, want in zip(names, got, expected):
        assert torch.isfinite(actual).all(), name
        close(actual.reshape(want.shape), want, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["swin7_shift", "long_group", "random_empty_rows"])
@pytest.mark.parametrize("head_group, bias_mode", [(2, "per_problem"), (4, "shared"), (4, "per_head")])
def test_gqa_kernels_match_the_reference_on_every_path(head_group, bias_mode, kind, dtype):
    """The ops with 4-D k and v of H / g heads, read in place (no repeat): the row kernel, the grouped kernel with
    and without the plan's schedule (tensor cores for float16 / bfloat16), and the backward with the schedule,
    with the plan alone and without the plan (the column pass summing each k/v head's query heads; after the
    tensor-core kernel, its per-query-head partials summed for owned columns), a gradient reaching lse too. g = 4
    with 4 heads is MQA. Deterministic with the schedule."""
    pattern = GROUPED_PATTERNS[kind]()
    batch, heads, d = 2, 4, 32
    (q64, k64, v64, bias64), (q, k, v, bias) = gqa_inputs(pattern, batch, heads, head_group, d, d, dtype, bias_mode,
                                                          seed=40)
    flat_bias = bias.reshape(-1, pattern.nnz)  # [bias_heads, nnz]: batch * heads of them for a bias per problem
    p = pattern.to(CUDA)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    scale = d ** -0.5
    leaves64 = [t.requires_grad_() for t in (q64, k64, v64, bias64)]
    expected_out, expected_lse = gqa_reference(q64, k64, v64, pattern, bias64, scale)
    finite = torch.isfinite(expected_lse)
    lse_tolerance = 1e-3 if dtype != torch.float32 else 1e-5
    forwards = [spattn_ops.attention_forward(q, k, v, flat_bias, row_offsets, col_indices, scale),
                grouped_forward(q, k, v, flat_bias, p, scale, schedule=False),
                grouped_forward(q, k, v, flat_bias, p, scale, schedule=True)]
    for path, (out, lse) in zip(("rows", "grouped", "grouped with schedule"), forwards):
        close(out, expected_out, dtype, f"out ({path})")
        assert torch.equal(lse.isinf().cpu(), expected_lse.isinf()), path
        torch.testing.assert_close(lse.cpu().double()[finite], expected_lse[finite], rtol=lse_tolerance,
                                   atol=lse_tolerance)

    out, lse = forwards[2]
    grad64, grad = randn(*out.shape, dtype=dtype, seed=44)
    grad_lse64, grad_lse = randn(*lse.shape, dtype=torch.float32, seed=45)  # (empty rows must ignore theirs)
    expected = torch.autograd.grad((expected_out, expected_lse), leaves64,
                                   (grad64, grad_lse64.masked_fill(~finite, 0.0)))
    arguments = (grad, q, k, v, flat_bias, out, lse, row_offsets, col_indices, *transposed, scale, True)
    plan, schedule = p.plan(), p.plan_schedule()
    with_schedule = spattn_ops.attention_backward(*arguments, *plan, *schedule, grad_lse=grad_lse)
    again = spattn_ops.attention_backward(*arguments, *plan, *schedule, grad_lse=grad_lse)
    plan_alone = spattn_ops.attention_backward(*arguments, *plan, grad_lse=grad_lse)
    without_plan = spattn_ops.attention_backward(*arguments, grad_lse=grad_lse)
    names = ("grad_q", "grad_k", "grad_v", "grad_bias")
    for path, got in (("schedule", with_schedule), ("plan", plan_alone), ("rows", without_plan)):
        assert got[1].shape == k.shape and got[2].shape == v.shape
        check_gqa_gradients(got, expected, dtype, [f"{name} ({path})" for name in names])
    for name, first, second in zip(names, with_schedule, again):
        assert torch.equal(first, second), f"{name} is not deterministic"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["swin7_shift", "random_empty_rows"])
def test_scaled_dot_product_attention_gqa_bias_per_problem_and_lse(kind, dtype):
    """The public API end to end: enable_gqa with 6 query heads over 2 k/v heads, a [B, H, nnz] bias, return_lse;
    out, lse and the gradients of q, k, v and the bias through a loss that uses lse too."""
    pattern = GROUPED_PATTERNS[kind]()
    (q64, k64, v64, bias64), (q, k, v, bias) = gqa_inputs(pattern, 2, 6, 3, 32, 24, dtype, "per_problem", seed=50)
    leaves = [t.requires_grad_() for t in (q, k, v, bias)]
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True, return_lse=True)
    leaves64 = [t.requires_grad_() for t in (q64, k64, v64, bias64)]
    expected_out, expected_lse = gqa_reference(q64, k64, v64, pattern, bias64, 32 ** -0.5)
    close(out, expected_out, dtype, "out")
    finite = torch.isfinite(expected_lse)
    assert torch.equal(lse.isinf().cpu(), ~finite)
    close(lse.detach()[finite.to(CUDA)], expected_lse[finite], dtype, "lse")
    grad64, grad = randn(*out.shape, dtype=dtype, seed=54)
    grad_lse64, grad_lse = randn(*lse.shape, dtype=lse.dtype, seed=55)
    grad_lse = grad_lse.masked_fill(~finite.to(CUDA), 0.0)  # (inf * 0 would be NaN in the loss below)
    loss = (out * grad).sum() + (lse.masked_fill(~finite.to(CUDA), 0.0) * grad_lse).sum()
    expected = torch.autograd.grad((expected_out, expected_lse), leaves64,
                                   (grad64, grad_lse64.masked_fill(~finite, 0.0)))
    check_gqa_gradients(torch.autograd.grad(loss, leaves), expected, dtype, ("q", "k", "v", "bias"))


def test_gqa_bindings_reject_bad_heads_and_grad_lse_naming_them():
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2).to(CUDA)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    q, k = torch.randn(2, 4, 64, 32, device=CUDA), torch.randn(2, 2, 64, 32, device=CUDA)
    out, lse = torch.empty_like(q), torch.empty(2, 4, 64, device=CUDA)
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError, match="k: its 3 heads must divide"):
        _C.cuda_attention_forward(q, torch.randn(2, 3, 64, 32, device=CUDA), k, None, row_offsets, col_indices, 0.2,
                                  out, lse, stream)
    with pytest.raises(ValueError, match="v"):
        _C.cuda_attention_forward(q, k, torch.randn(2, 1, 64, 32, device=CUDA), None, row_offsets, col_indices, 0.2,
                                  out, lse, stream)
    # The workspace holds the tensor-core kernel's per-query-head dK and dV under grouped-query attention.
    plain = _C.cuda_attention_backward_workspace_size(8, 64, pattern.nnz, 0, 64, 32, 32, 1)
    grouped = _C.cuda_attention_backward_workspace_size(8, 64, pattern.nnz, 0, 64, 32, 32, 2)
    assert grouped == plain + 8 * 64 * 64
    workspace = torch.empty(grouped, device=CUDA)
    grads_ = [torch.empty_like(q), torch.empty_like(k), torch.empty_like(k)]
    spattn_ops.attention_forward(q, k, k, None, row_offsets, col_indices, 0.2)  # fine
    for grad_lse in (torch.zeros(2, 4, 63, device=CUDA), torch.zeros(2, 4, 64, device=CUDA, dtype=torch.float16)):
        with pytest.raises(ValueError, match="grad_lse"):
            _C.cuda_attention_backward(q, q, k, k, None, out, lse, row_offsets, col_indices, *transposed, 0.2,
                                       *grads_, None, workspace, None, None, None, None, grad_lse, stream)
    with pytest.raises(ValueError, match="workspace must have at least"):
        _C.cuda_attention_backward(q, q, k, k, None, out, lse, row_offsets, col_indices, *transposed, 0.2, *grads_,
                                   None, workspace[:plain], None, None, None, None, None, stream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gqa_opcheck(dtype):
    """opcheck of the attention ops with k and v of fewer heads, a bias per problem and grad_lse (bfloat16: the
    tensor-core kernels over the plan's schedule)."""
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    p = pattern.to(CUDA)
    _, (q, k, v, bias) = gqa_inputs(pattern, 2, 4, 2, 32, 32, dtype, "per_problem", seed=60)
    flat_bias = bias.reshape(-1, pattern.nnz)
    (row_offsets, col_indices), transposed = pattern_tensors(pattern)
    plan, schedule = p.plan(), p.plan_schedule()
    out, lse = grouped_forward(q, k, v, flat_bias, p, 0.25)
    grad = torch.randn_like(out)
    for t in (q, k, v, flat_bias):
        t.requires_grad_()
    torch.library.opcheck(spattn_ops.attention_forward.default, (q, k, v, flat_bias, row_offsets, col_indices, 0.25))
    torch.library.opcheck(spattn_ops.attention_forward_grouped.default,
                          (q, k, v, flat_bias, row_offsets, col_indices, *plan, 0.25, *transposed, *schedule))
    backward_arguments = (grad, q.detach(), k.detach(), v.detach(), flat_bias.detach(), out, lse, row_offsets,
                          col_indices, *transposed, 0.25, True, *plan, *schedule)
    torch.library.opcheck(spattn_ops.attention_backward.default, backward_arguments,
                          {"grad_lse": torch.randn_like(lse)})


def test_gqa_torch_compile_fullgraph():
    """The public API with enable_gqa, a bias per problem and return_lse under torch.compile(fullgraph=True), a
    loss through lse (bfloat16: the tensor-core kernels), against eager."""
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    dtype = torch.bfloat16
    _, (q, k, v, bias) = gqa_inputs(pattern, 2, 4, 2, 32, 32, dtype, "per_problem", seed=61)

    def loss(q, k, v, bias):
        out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True, return_lse=True)
        return (out.float() * out.float()).sum() + lse.sum()

    leaves = [t.detach().requires_grad_() for t in (q, k, v, bias)]
    eager = torch.autograd.grad(loss(*leaves), leaves)
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(*leaves), leaves)
    for name, a, b in zip(("q", "k", "v", "bias"), compiled, eager):
        close(a, b, dtype, f"grad_{name} compiled vs eager")
