"""Grouped-query attention (enable_gqa), the log-sum-exp output (return_lse, with its gradient) and the
per-sample ``[B, H, nnz]`` bias of scaled_dot_product_attention, against the dense float64 reference
(reference.attention_with_lse): forward and backward, on the plan path (patterns whose rows share their
columns) and the row path (random patterns with empty rows, Nq != Nk), the unfused dropout path, strided
views of a fused projection, opcheck, torch.compile and bad input."""

from __future__ import annotations

import pytest
import torch

import reference
import spattn
from spattn import functional, ops

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=3e-5, atol=3e-5),
             torch.bfloat16: dict(rtol=4e-2, atol=4e-2)}
# The unfused path runs when dropout_p > 0; this one never drops anything (see test_ops.py).
UNFUSED = 1e-13


def row_pattern() -> spattn.Pattern:
    """Random, Nq != Nk, rows 1 and 6 empty: the row-by-row kernels."""
    mask = spattn.patterns.random(13, 19, 0.35, seed=4).to_dense()
    mask[0, 0] = True
    mask[1] = mask[6] = False
    return spattn.Pattern.from_dense(mask)


def plan_pattern(kind: str) -> spattn.Pattern:
    """Rows in groups sharing their columns, which the grouped kernels take: shifted Swin windows, or blocks
    with Nq != Nk and a block row without entries."""
    if kind == "swin":
        return spattn.patterns.swin(8, 8, 4, shift_size=2)
    layout = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    return spattn.patterns.from_block_layout(layout, 6)


PATTERNS = {"row": row_pattern, "swin_plan": lambda: plan_pattern("swin"),
            "blocks_plan": lambda: plan_pattern("blocks")}


def inputs(pattern, batch, heads, kv_heads, head_dim, value_dim, dtype, bias_shape, seed=0):
    """Leaves q [B, H, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] and a bias of ``bias_shape`` (or None)."""
    generator = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()

    n_q, n_k = pattern.shape
    q, k, v = leaf(batch, heads, n_q, head_dim), leaf(batch, kv_heads, n_k, head_dim), leaf(batch, kv_heads, n_k,
                                                                                           value_dim)
    return q, k, v, None if bias_shape is None else leaf(*bias_shape)


def assert_matches_reference(pattern, q, k, v, bias, dtype, dropout_p=0.0, seed=5):
    """out, lse and the gradients of q, k, v (and bias) of a loss using both, against the float64 reference
    on float64 copies of the same values."""
    leaves = [t for t in (q, k, v, bias) if t is not None]
    copies = [t.detach().double().requires_grad_() for t in leaves]
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, dropout_p=dropout_p,
                                                   enable_gqa=True, return_lse=True)
    with_bias = bias is not None
    expected_out, expected_lse = reference.attention_with_lse(*copies[:3], pattern,
                                                              copies[3] if with_bias else None)
    assert out.dtype == dtype and out.shape == expected_out.shape
    assert lse.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert lse.shape == q.shape[:-1]
    torch.testing.assert_close(out.double(), expected_out, **TOLERANCE[dtype])
    finite = torch.isfinite(expected_lse)
    assert torch.equal(torch.isfinite(lse), finite)  # -inf exactly on the rows without entries
    torch.testing.assert_close(lse.double()[finite], expected_lse[finite], **TOLERANCE[dtype])

    generator = torch.Generator().manual_seed(seed)
    out_weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    lse_weights = torch.randn(lse.shape, generator=generator, dtype=torch.float64)

    def loss(out, lse):
        return (out.double() * out_weights).sum() + (lse.double()[finite] * lse_weights[finite]).sum()

    got = torch.autograd.grad(loss(out, lse), leaves)
    want = torch.autograd.grad(loss(expected_out, expected_lse), copies)
    for name, a, b in zip("qkvb", got, want):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a.double(), b, **TOLERANCE[dtype], msg=lambda m: f"grad of {name}: {m}")


# ---- forward and backward against the reference ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [8, 4, 2, 1])  # head groups of 1, 2 and 4, and MQA (8)
@pytest.mark.parametrize("dims", [(5, 7), (32, 32)])  # odd head dims with Dv != D; a compile-time dim
@pytest.mark.parametrize("kind", ["row", "swin_plan", "blocks_plan"])
def test_grouped_query_attention_with_lse_and_per_sample_bias(kind, dims, kv_heads, dtype):
    pattern = PATTERNS[kind]()
    q, k, v, bias = inputs(pattern, 2, 8, kv_heads, *dims, dtype, (2, 8, pattern.nnz), seed=kv_heads)
    # The plan patterns do take the grouped kernels, the random one does not.
    assert (functional._grouped_plan(pattern, q, v) is not None) == (kind != "row")
    assert_matches_reference(pattern, q, k, v, bias, dtype)


@pytest.mark.parametrize("bias_kind", ["none", "shared", "per_head", "per_sample"])
@pytest.mark.parametrize("kind", ["row", "swin_plan"])
def test_every_bias_shape_with_grouped_query_attention(kind, bias_kind):
    pattern = PATTERNS[kind]()
    shapes = {"none": None, "shared": (pattern.nnz,), "per_head": (4, pattern.nnz), "per_sample": (3, 4, pattern.nnz)}
    q, k, v, bias = inputs(pattern, 3, 4, 2, 6, 3, torch.float64, shapes[bias_kind])
    assert_matches_reference(pattern, q, k, v, bias, torch.float64)


def test_per_sample_bias_masks_padding():
    """The use a [B, H, nnz] bias exists for: each sample masks its own padded keys with -inf; a query whose
    keys are all padding gets 0 and lse -inf, with finite gradients."""
    pattern = PATTERNS["swin_plan"]()
    q, k, v, _ = inputs(pattern, 2, 4, 2, 8, 8, torch.float64, None)
    rows = reference.entry_rows(pattern)
    padded = torch.stack([pattern.col_indices >= 40, pattern.col_indices >= 56])  # per sample
    bias = torch.zeros(2, 4, pattern.nnz, dtype=torch.float64).masked_fill(padded[:, None], float("-inf"))
    bias.requires_grad_()
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True, return_lse=True)
    all_padding = torch.zeros(2, pattern.shape[0], dtype=torch.bool)
    for sample in range(2):
        kept = torch.zeros(pattern.shape[0], dtype=torch.long).index_add(0, rows, (~padded[sample]).long())
        all_padding[sample] = kept == 0
    assert all_padding.any() and not all_padding.all()
    assert torch.all(torch.isinf(lse) == all_padding[:, None])
    assert torch.all(out[all_padding[:, None].expand(-1, 4, -1)] == 0)
    assert_matches_reference(pattern, q, k, v, bias, torch.float64)


def test_three_dimensional_inputs_with_lse():
    """[B, N, D] inputs: enable_gqa is allowed (heads trivially match), lse is [B, Nq]."""
    pattern = PATTERNS["row"]()
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, n, 4, generator=generator, dtype=torch.float64, requires_grad=True)
               for n in (13, 19, 19))
    bias = torch.randn(pattern.nnz, generator=generator, dtype=torch.float64, requires_grad=True)
    assert_matches_reference(pattern, q, k, v, bias, torch.float64)


@pytest.mark.parametrize("kind", ["row", "swin_plan"])
def test_unfused_dropout_path(kind):
    """dropout_p > 0 takes SDDMM, softmax and SpMM, with k and v repeated for GQA; lse is that of the scores."""
    pattern = PATTERNS[kind]()
    q, k, v, bias = inputs(pattern, 2, 4, 2, 5, 3, torch.float64, (2, 4, pattern.nnz))
    assert_matches_reference(pattern, q, k, v, bias, torch.float64, dropout_p=UNFUSED)


def test_lse_gradient_alone():
    """A loss of lse only (out unused): gradients through lse alone, including to k and the bias."""
    pattern = PATTERNS["swin_plan"]()
    q, k, v, bias = inputs(pattern, 1, 4, 1, 8, 8, torch.float64, (4, pattern.nnz))
    _, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True, return_lse=True)
    got = torch.autograd.grad(lse.sum(), (q, k, bias))
    copies = [t.detach().requires_grad_() for t in (q, k, v, bias)]
    _, expected = reference.attention_with_lse(*copies[:3], pattern, copies[3])
    want = torch.autograd.grad(expected.sum(), (copies[0], copies[1], copies[3]))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float64])


@pytest.mark.parametrize("shapes", [((2, 0, 6, 4), (2, 0, 5, 4)), ((0, 4, 6, 4), (0, 2, 5, 4))])
def test_no_heads_or_no_batch(shapes):
    """Empty problems: nothing to compute, right shapes, and a backward through out and lse."""
    pattern = spattn.patterns.random(6, 5, 0.5, seed=1)
    q, k = torch.randn(*shapes[0], requires_grad=True), torch.randn(*shapes[1], requires_grad=True)
    out, lse = spattn.scaled_dot_product_attention(q, k, k, pattern, enable_gqa=True, return_lse=True)
    assert out.shape == q.shape and lse.shape == q.shape[:-1]
    (out.sum() + lse.sum()).backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


def test_gradcheck_with_lse_and_gqa():
    pattern = plan_pattern("blocks")
    q, k, v, bias = inputs(pattern, 1, 4, 2, 3, 2, torch.float64, (1, 4, pattern.nnz))
    finite = torch.isfinite(reference.attention_with_lse(q, k, v, pattern, bias)[1])

    def attention(q, k, v, bias):
        out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True,
                                                       return_lse=True)
        return out, lse[finite]

    assert torch.autograd.gradcheck(attention, (q, k, v, bias))


# ---- strided views: one fused projection with fewer kv heads ---------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["row", "swin_plan"])
def test_strided_views_of_a_fused_projection_with_fewer_kv_heads(kind, dtype):
    """q, k, v as a GQA model makes them: views of one [B, N, H + 2 * Hkv, D] projection (self-attention, so
    Nq = Nk), read in place; the projection's gradient matches the reference's."""
    pattern = PATTERNS["swin_plan"]() if kind == "swin_plan" else spattn.patterns.random(17, 17, 0.3, seed=2)
    n, heads, kv_heads, head_dim = pattern.shape[0], 6, 2, 8
    generator = torch.Generator().manual_seed(7)
    projection = torch.randn(2, n, heads + 2 * kv_heads, head_dim, generator=generator, dtype=torch.float64)
    projection = projection.to(dtype).requires_grad_()
    q, k, v = projection.transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, enable_gqa=True, return_lse=True)
    copy = projection.detach().double().requires_grad_()
    expected_out, expected_lse = reference.attention_with_lse(*copy.transpose(1, 2).split([heads, kv_heads, kv_heads],
                                                                                          dim=1), pattern)
    torch.testing.assert_close(out.double(), expected_out, **TOLERANCE[dtype])
    finite = torch.isfinite(expected_lse)
    torch.testing.assert_close(lse.double()[finite], expected_lse[finite], **TOLERANCE[dtype])
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    (got,) = torch.autograd.grad((out.double() * weights).sum() + lse.double()[finite].sum(), projection)
    (want,) = torch.autograd.grad((expected_out * weights).sum() + expected_lse[finite].sum(), copy)
    torch.testing.assert_close(got.double(), want, **TOLERANCE[dtype])


@pytest.mark.parametrize("kind", ["row", "swin_plan"])
def test_nan_in_one_kv_head_reaches_only_its_query_heads(kind):
    """A NaN in key c of k/v head 1 (query heads 2 and 3 of 4) poisons exactly those heads' rows that attend
    to c, and the gradients of k/v head 1 only: the kernels map query heads to k/v heads as documented."""
    pattern = PATTERNS[kind]()
    q, k, v, _ = inputs(pattern, 1, 4, 2, 8, 8, torch.float32, None)
    column = int(pattern.col_indices[0])
    with torch.no_grad():
        k[0, 1, column, 3] = float("nan")
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, enable_gqa=True, return_lse=True)
    attends = reference.values_to_dense(torch.ones(pattern.nnz), pattern)[:, column] > 0
    expected = torch.zeros(1, 4, pattern.shape[0], dtype=torch.bool)
    expected[0, 2:] = attends
    assert torch.equal(out.isnan().any(-1), expected) and torch.equal(lse.isnan(), expected)
    grad_k, grad_v = torch.autograd.grad(out.sum(), (k, v))
    assert not grad_k[0, 0].isnan().any() and not grad_v[0, 0].isnan().any() and grad_v[0, 1].isnan().any()


def test_gqa_backward_is_deterministic():
    """dK and dV sum over the query heads in a fixed order: bit-identical gradients run after run."""
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3)
    q, k, v, bias = inputs(pattern, 2, 8, 2, 32, 32, torch.float32, (2, 8, pattern.nnz))

    def gradients():
        out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True,
                                                       return_lse=True)
        return torch.autograd.grad(out.square().sum() + lse.sum(), (q, k, v, bias))

    first = gradients()
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, gradients()))


# ---- the ops: opcheck, torch.compile -----------------------------------------------------------------------
def opcheck_samples():
    pattern = PATTERNS["swin_plan"]()
    q, k, v, bias = inputs(pattern, 2, 4, 2, 5, 3, torch.float64, (8, pattern.nnz))
    csr = (pattern.row_offsets, pattern.col_indices)
    transposed, permutation = pattern.transposed()
    t_csr = (transposed.row_offsets, transposed.col_indices, permutation)
    plan = pattern.plan()
    out, lse = ops.attention_forward(q, k, v, bias, *csr, 0.5)
    # The backward op is not differentiable itself: its inputs are detached.
    q_, k_, v_, bias_, out_, lse_ = (t.detach() for t in (q, k, v, bias, out, lse))
    grad_out, grad_lse = torch.randn_like(out_), torch.randn_like(lse_)
    return [
        (ops.attention_forward, (q, k, v, bias, *csr, 0.5, *t_csr)),
        (ops.attention_forward_grouped, (q, k, v, bias, *csr, *plan, 0.5, *t_csr)),
        (ops.attention_backward, (grad_out, q_, k_, v_, bias_, out_, lse_, *csr, *t_csr, 0.5, True)),
        (ops.attention_backward, (grad_out, q_, k_, v_, bias_, out_, lse_, *csr, *t_csr, 0.5, True, *plan, None, None,
                                  grad_lse)),
        (ops.attention_backward, (grad_out, q_, k_, v_, None, out_, lse_, *csr, *t_csr, 0.5, False, None, None, None,
                                  None, grad_lse)),
    ]


@pytest.mark.parametrize("index", range(5))
def test_opcheck_with_gqa_per_sample_bias_and_grad_lse(index):
    op, args = opcheck_samples()[index]
    torch.library.opcheck(op, args)


def test_backward_op_shapes_grad_k_and_grad_v_like_k_and_v():
    *_, (op, args) = opcheck_samples()
    grad_q, grad_k, grad_v, grad_bias = op(*args)
    assert grad_q.shape == args[1].shape and grad_k.shape == args[2].shape and grad_v.shape == args[3].shape
    assert grad_bias is None


@pytest.mark.parametrize("kind", ["row", "swin_plan"])
def test_torch_compile_fullgraph_matches_eager(kind):
    torch._dynamo.reset()
    pattern = PATTERNS[kind]()
    pattern.prepare()  # the plan, built on the host before tracing
    q, k, v, bias = inputs(pattern, 2, 4, 2, 8, 8, torch.float32, (2, 4, pattern.nnz))

    def step(q, k, v, bias):
        out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias, enable_gqa=True,
                                                       return_lse=True)
        return out.square().sum() + torch.where(torch.isfinite(lse), lse, 0).sum()

    eager = torch.autograd.grad(step(q, k, v, bias), (q, k, v, bias))
    compiled = torch.autograd.grad(torch.compile(step, fullgraph=True)(q, k, v, bias), (q, k, v, bias))
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ---- bad input -----------------------------------------------------------------------------------------------
def bad_inputs():
    pattern = PATTERNS["swin_plan"]()
    q = torch.randn(2, 4, 64, 8)
    kv = torch.randn(2, 2, 64, 8)
    nnz = pattern.nnz
    sdpa = spattn.scaled_dot_product_attention
    return {
        "kv_heads_not_dividing": (lambda: sdpa(q, torch.randn(2, 3, 64, 8), torch.randn(2, 3, 64, 8), pattern,
                                               enable_gqa=True), ValueError, "k: its 3 heads must divide q's 4"),
        "fewer_heads_without_enable_gqa": (lambda: sdpa(q, kv, kv, pattern), ValueError, "k: .*enable_gqa=True"),
        "v_heads_unlike_k": (lambda: sdpa(q, kv, torch.randn(2, 4, 64, 8), pattern, enable_gqa=True), ValueError,
                             "^v: "),
        "k_batch_with_gqa": (lambda: sdpa(q, torch.randn(1, 2, 64, 8), kv, pattern, enable_gqa=True), ValueError,
                             "^k: batch size"),
        "enable_gqa_not_bool": (lambda: sdpa(q, q, q, pattern, enable_gqa=1), TypeError, "enable_gqa"),
        "return_lse_not_bool": (lambda: sdpa(q, q, q, pattern, return_lse="yes"), TypeError, "return_lse"),
        "bias_wrong_heads": (lambda: sdpa(q, kv, kv, pattern, bias=torch.zeros(2, 2, nnz), enable_gqa=True),
                             ValueError, "^bias must have shape"),
        "bias_wrong_batch": (lambda: sdpa(q, kv, kv, pattern, bias=torch.zeros(3, 4, nnz), enable_gqa=True),
                             ValueError, "^bias must have shape"),
        "bias_per_sample_with_3d_inputs": (lambda: sdpa(q[:, 0], q[:, 0], q[:, 0], pattern,
                                                        bias=torch.zeros(2, 1, nnz)), ValueError, "^bias"),
        "binding_bias_rows": (lambda: spattn._C.cpu_attention_forward(
            q, kv, kv, torch.zeros(3, nnz), pattern.row_offsets, pattern.col_indices, None, None, 1.0,
            torch.empty(2, 4, 64, 8), torch.empty(2, 4, 64)), ValueError, "bias must have 1, 4 .* or 8"),
        "binding_kv_heads": (lambda: spattn._C.cpu_attention_forward(
            q, torch.randn(2, 3, 64, 8), torch.randn(2, 3, 64, 8), None, pattern.row_offsets, pattern.col_indices,
            None, None, 1.0, torch.empty(2, 4, 64, 8), torch.empty(2, 4, 64)), ValueError, "^k: its 3 heads"),
        "binding_grad_lse_shape": (lambda: spattn._C.cpu_attention_backward(
            torch.zeros(2, 4, 64, 8), q, kv, kv, None, torch.zeros(2, 4, 64, 8), torch.zeros(2, 4, 64),
            torch.zeros(2, 4, 63), pattern.row_offsets, pattern.col_indices, *transposed_csr(pattern), None, None,
            1.0, torch.empty(2, 4, 64, 8), torch.empty(2, 2, 64, 8), torch.empty(2, 2, 64, 8), None,
            torch.empty(2 * 8 * nnz)), ValueError, "grad_lse"),
        "binding_grad_k_heads": (lambda: spattn._C.cpu_attention_backward(
            torch.zeros(2, 4, 64, 8), q, kv, kv, None, torch.zeros(2, 4, 64, 8), torch.zeros(2, 4, 64), None,
            pattern.row_offsets, pattern.col_indices, *transposed_csr(pattern), None, None, 1.0,
            torch.empty(2, 4, 64, 8), torch.empty(2, 4, 64, 8), torch.empty(2, 2, 64, 8), None,
            torch.empty(2 * 8 * nnz)), ValueError, "grad_k"),
    }


def transposed_csr(pattern):
    transposed, permutation = pattern.transposed()
    return transposed.row_offsets, transposed.col_indices, permutation


@pytest.mark.parametrize("case", list(bad_inputs()))
def test_bad_input_raises_naming_the_argument(case):
    call, error, match = bad_inputs()[case]
    with pytest.raises(error, match=match):
        call()


def test_fake_kernels_check_kv_heads_and_bias_rows():
    """The fake kernels refuse k/v heads that do not divide q's and bias rows other than 1, H or B * H."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    pattern = spattn.patterns.causal_1d(6)
    with FakeTensorMode() as mode:
        csr = [mode.from_tensor(t) for t in (pattern.row_offsets, pattern.col_indices)]
        q, kv = torch.empty(2, 4, 6, 8), torch.empty(2, 2, 6, 8)
        out, lse = ops.attention_forward(q, kv, kv, torch.empty(8, pattern.nnz), *csr, 1.0)
        assert out.shape == (2, 4, 6, 8) and lse.shape == (2, 4, 6)
        with pytest.raises(RuntimeError, match="k's 3 heads must divide q's 4"):
            ops.attention_forward(q, torch.empty(2, 3, 6, 8), torch.empty(2, 3, 6, 8), None, *csr, 1.0)
        with pytest.raises(RuntimeError, match="bias must have 1, 4 .* or 8"):
            ops.attention_forward(q, kv, kv, torch.empty(3, pattern.nnz), *csr, 1.0)
