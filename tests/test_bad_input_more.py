"""More of the bad-input catalogue (see test_bad_input_patterns.py and test_bad_input_ops.py): the categories
those leave thin — ranks, integer/bool/complex/mixed dtypes, devices (the "meta" device stands in for a GPU),
non-bool masks, unsorted/duplicate/negative/out-of-range CSR indices reaching the ops, windows and shifts out
of range, sizes that overflow or cannot be allocated. Each call runs in-process, so a crash fails the run.

Then the other side of the contract: non-contiguous and broadcast-strided inputs are not errors, they work
and give the contiguous result."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import spattn
from spattn import Pattern, ops, patterns

P = patterns.random(6, 5, 0.5, seed=1)
NNZ = P.nnz
sdpa = spattn.scaled_dot_product_attention


def q4(dtype=torch.float32):
    return torch.randn(2, 3, 6, 4, dtype=dtype)


def k4(dtype=torch.float32):
    return torch.randn(2, 3, 5, 4, dtype=dtype)


def csr(offsets, columns):
    return torch.tensor(offsets, dtype=torch.int64), torch.tensor(columns, dtype=torch.int64)


UNSORTED = csr([0, 2, 2, 2, 2, 2, 2], [1, 0])
DUPLICATE = csr([0, 2, 2, 2, 2, 2, 2], [1, 1])
NEGATIVE_COLUMN = csr([0, 1, 1, 1, 1, 1, 1], [-1])
COLUMN_TOO_LARGE = csr([0, 1, 1, 1, 1, 1, 1], [5])
NEGATIVE_OFFSET = csr([0, -1, 1, 1, 1, 1, 1], [0])
HUGE_OFFSET = csr([0, 2**62, 1, 1, 1, 1, 1], [0])

# (id, call, exception type, regex the message must match: it names the argument)
CASES = [
    # ---- ranks
    ("sdpa-q-rank-5", lambda: sdpa(torch.randn(1, 2, 3, 6, 4), torch.randn(1, 2, 3, 5, 4),
                                   torch.randn(1, 2, 3, 5, 4), P), ValueError, r"\bq\b"),
    ("sddmm-a-rank-1", lambda: spattn.sddmm(torch.randn(4), k4(), P), ValueError, r"\ba\b"),
    ("spmm-b-rank-1", lambda: spattn.spmm(torch.randn(NNZ), torch.randn(5), P), ValueError, r"\bb\b"),
    ("bias-rank-4", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.randn(2, 3, 1, NNZ)), ValueError, "bias"),
    ("bias-per-sample-wrong-batch", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.randn(3, 3, NNZ)), ValueError,
     "bias"),
    ("bias-rank-0", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.tensor(1.0)), ValueError, "bias"),
    ("op-offsets-2d", lambda: ops.sddmm(q4()[0], k4()[0], P.row_offsets.view(1, -1), P.col_indices), ValueError,
     "row_offsets"),
    # ---- mismatched sizes
    ("sddmm-batch-mismatch", lambda: spattn.sddmm(q4(), k4()[:, :2], P), ValueError, r"\bb\b"),
    ("bias-one-head-for-three", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.randn(1, NNZ)), ValueError, "bias"),
    # ---- dtypes
    ("sdpa-v-integer", lambda: sdpa(q4(), k4(), k4().long(), P), TypeError, r"\bv\b"),
    ("sdpa-q-bool", lambda: sdpa(q4().bool(), k4(), k4(), P), TypeError, r"\bq\b"),
    ("sdpa-q-complex", lambda: sdpa(q4().to(torch.complex64), k4(), k4(), P), TypeError, r"\bq\b"),
    ("sdpa-bias-integer", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.ones(NNZ, dtype=torch.int64)), TypeError,
     "bias"),
    ("sddmm-mixed-dtypes", lambda: spattn.sddmm(q4(), k4(torch.float64), P), TypeError, r"\bb\b"),
    ("sddmm-integer", lambda: spattn.sddmm(q4().int(), k4().int(), P), TypeError, r"\ba\b"),
    ("spmm-integer-values", lambda: spattn.spmm(torch.ones(2, 3, NNZ, dtype=torch.int32), k4(), P), TypeError,
     "values"),
    ("spmm-mixed-dtypes", lambda: spattn.spmm(torch.randn(2, 3, NNZ, dtype=torch.float64), k4(), P), TypeError,
     "values"),
    ("softmax-integer", lambda: spattn.sparse_softmax(torch.ones(NNZ, dtype=torch.int64), P), TypeError, "values"),
    ("softmax-pattern-none", lambda: spattn.sparse_softmax(torch.ones(NNZ), None), TypeError, "pattern"),
    ("scale-nan", lambda: sdpa(q4(), k4(), k4(), P, scale=float("nan")), ValueError, "scale"),
    ("scale-complex", lambda: sdpa(q4(), k4(), k4(), P, scale=1j), TypeError, "scale"),
    ("dropout-negative", lambda: sdpa(q4(), k4(), k4(), P, dropout_p=-0.1), ValueError, "dropout_p"),
    ("dropout-nan", lambda: sdpa(q4(), k4(), k4(), P, dropout_p=float("nan")), ValueError, "dropout_p"),
    ("op-offsets-int32", lambda: ops.attention_forward(q4()[0], k4()[0], k4()[0], None, P.row_offsets.int(),
                                                       P.col_indices, 1.0), ValueError, "row_offsets"),
    ("op-columns-float", lambda: ops.sddmm(q4()[0], k4()[0], P.row_offsets, P.col_indices.float()), ValueError,
     "col_indices"),
    # ---- devices ("meta" stands in for another device: the check must come before any kernel reads it)
    ("sdpa-v-meta", lambda: sdpa(q4(), k4(), k4().to("meta"), P), ValueError, r"\bv\b"),
    ("sdpa-q-meta", lambda: sdpa(q4().to("meta"), k4(), k4(), P), ValueError, r"\b[qk]\b"),
    ("sdpa-bias-meta", lambda: sdpa(q4(), k4(), k4(), P, bias=torch.randn(NNZ, device="meta")), ValueError, "bias"),
    ("sddmm-b-meta", lambda: spattn.sddmm(q4(), k4().to("meta"), P), ValueError, r"\bb\b"),
    ("spmm-values-meta", lambda: spattn.spmm(torch.randn(2, 3, NNZ, device="meta"), k4(), P), ValueError, "values"),
    ("from_csr-devices-differ", lambda: Pattern.from_csr(P.row_offsets, P.col_indices.to("meta"), P.shape),
     ValueError, "col_indices"),
    ("from_coo-rows-meta", lambda: Pattern.from_coo(torch.zeros(1, dtype=torch.int64, device="meta"), [0], (2, 2)),
     ValueError, "rows"),
    ("from_dense-mask-meta", lambda: Pattern.from_dense(torch.ones(2, 2, dtype=torch.bool, device="meta")),
     ValueError, "mask"),
    # ---- non-bool masks
    ("from_dense-uint8", lambda: Pattern.from_dense(torch.ones(2, 2, dtype=torch.uint8)), TypeError, "mask"),
    ("from_dense-numpy-int", lambda: Pattern.from_dense(np.ones((2, 2), dtype=np.int64)), TypeError, "mask"),
    ("global_tokens-uint8", lambda: patterns.global_tokens(torch.ones(3, dtype=torch.uint8)), TypeError, "flags"),
    # ---- CSR indices: unsorted, duplicate, negative, out of range, reaching the ops directly
    ("from_csr-unsorted-second-row", lambda: Pattern.from_csr([0, 1, 3], [0, 2, 1], (2, 3)), ValueError,
     "col_indices.*sorted"),
    ("from_csr-duplicate-second-row", lambda: Pattern.from_csr([0, 1, 3], [0, 2, 2], (2, 3)), ValueError,
     "col_indices.*unique"),
    ("from_coo-negative-column", lambda: Pattern.from_coo([0], [-1], (2, 2)), ValueError, "cols"),
    ("op-attention-unsorted", lambda: ops.attention_forward(q4()[0], k4()[0], k4()[0], None, *UNSORTED, 1.0),
     ValueError, "col_indices"),
    ("op-sddmm-duplicate", lambda: ops.sddmm(q4()[0], k4()[0], *DUPLICATE), ValueError, "col_indices"),
    ("op-spmm-negative-column", lambda: ops.spmm(torch.randn(3, 1), k4()[0], *NEGATIVE_COLUMN), ValueError,
     "col_indices"),
    ("op-sddmm-column-too-large", lambda: ops.sddmm(q4()[0], k4()[0], *COLUMN_TOO_LARGE), ValueError, "col_indices"),
    ("op-softmax-negative-offset", lambda: ops.sparse_softmax(torch.randn(3, 1), *NEGATIVE_OFFSET), ValueError,
     "row_offsets"),
    ("op-softmax-huge-offset", lambda: ops.sparse_softmax(torch.randn(3, 1), *HUGE_OFFSET), ValueError,
     "row_offsets"),
    ("op-transpose-unsorted", lambda: ops.transpose_pattern(*UNSORTED, 5), ValueError, "col_indices"),
    # ---- windows and shifts out of range
    ("local_1d-window-negative", lambda: patterns.local_1d(8, -1), ValueError, "window_size"),
    ("swin-shift-beyond-H", lambda: patterns.swin(8, 8, 4, 9), ValueError, "shift_size"),
    ("swin_3d-window-beyond-T", lambda: patterns.swin_3d(2, 4, 4, (3, 2, 2)), ValueError, "window"),
    ("swin_3d-shift-equals-window", lambda: patterns.swin_3d(2, 4, 4, 2, 2), ValueError, "shift_size"),
    ("swin_3d-shift-negative", lambda: patterns.swin_3d(2, 4, 4, 2, -1), ValueError, "shift_size"),
    ("neighborhood-kernel-beyond-axis", lambda: patterns.neighborhood((4, 4), 5), ValueError, "kernel_size"),
    ("neighborhood-dilation-zero", lambda: patterns.neighborhood((8,), 3, dilation=0), ValueError, "dilation"),
    ("neighborhood-dilation-too-large", lambda: patterns.neighborhood((8,), 3, dilation=4), ValueError,
     "kernel_size"),
    # ---- sizes that overflow int64 or exceed the 2**40-entry limit: refused by arithmetic, before allocating
    ("swin-2**31-squared", lambda: patterns.swin(2**31, 2**31, 1), ValueError, "swin"),
    ("random-2**40-squared", lambda: patterns.random(2**40, 2**40, 0.5), ValueError, "random"),
    ("swin_3d-size-overflows", lambda: patterns.swin_3d(2**22, 2**22, 2**22, 1), ValueError, "swin_3d"),
    ("neighborhood-size-overflows", lambda: patterns.neighborhood((2**32, 2**32), 1), ValueError, "neighborhood"),
    ("causal_1d-nnz-over-limit", lambda: patterns.causal_1d(2**21), ValueError, "causal_1d"),
    ("global_tokens-nnz-over-limit", lambda: patterns.global_tokens(torch.ones(2**21, dtype=torch.bool)),
     ValueError, "global_tokens"),
    ("from_groups-nnz-over-limit", lambda: patterns.from_groups(torch.zeros(2**21, dtype=torch.int64)), ValueError,
     "groups"),
    ("from_coo-rows-over-limit", lambda: Pattern.from_coo([0], [0], (2**62, 2)), ValueError, "shape"),
]


def test_the_catalogue_is_large_and_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 50 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("call, error, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_raises_a_named_error(call, error, message):
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    assert caught.type is error, f"expected {error.__name__}, got {caught.type.__name__}: {caught.value}"
    assert re.search(message, str(caught.value)), f"message does not name the argument: {caught.value}"


# ---- strided inputs work ---------------------------------------------------------------------------------
def attention_and_gradients(q, k, v, bias):
    leaves = [t.requires_grad_() for t in (q, k, v, bias)]
    out = sdpa(q, k, v, P, bias=bias)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return [out, *torch.autograd.grad(out, leaves, grad_out)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_contiguous_and_broadcast_inputs_equal_the_contiguous_result(dtype):
    generator = torch.Generator().manual_seed(0)
    q_base = torch.randn(2, 3, 4, 6, generator=generator, dtype=dtype)  # [B, H, D, N]: q is its transpose
    k_base = torch.randn(1, 3, 5, 4, generator=generator, dtype=dtype)  # expanded over the batch
    v_base = torch.randn(2, 1, 5, 8, generator=generator, dtype=dtype)  # every other column, expanded over heads
    bias_base = torch.randn(NNZ, generator=generator, dtype=dtype)  # expanded over the heads
    strided = (q_base.detach().transpose(-1, -2), k_base.detach().expand(2, 3, 5, 4),
               v_base.detach()[..., ::2].expand(2, 3, 5, 4), bias_base.detach().expand(3, NNZ))
    assert not any(t.is_contiguous() for t in strided)
    contiguous = [t.contiguous() for t in strided]
    expected = attention_and_gradients(*[t.clone() for t in contiguous])
    # Leaves with strides: the gradients are taken with respect to the bases below.
    bases = [q_base.requires_grad_(), k_base.requires_grad_(), v_base.requires_grad_(), bias_base.requires_grad_()]
    views = (bases[0].transpose(-1, -2), bases[1].expand(2, 3, 5, 4), bases[2][..., ::2].expand(2, 3, 5, 4),
             bases[3].expand(3, NNZ))
    out = sdpa(*views[:3], P, bias=views[3])
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad(out, bases, grad_out)
    assert torch.equal(out, expected[0])
    # A broadcast input's gradient is the sum over the broadcast axes of the contiguous gradient.
    torch.testing.assert_close(grads[0], expected[1].transpose(-1, -2))
    torch.testing.assert_close(grads[1], expected[2].sum(0, keepdim=True))
    torch.testing.assert_close(grads[2][..., ::2], expected[3].sum(1, keepdim=True))
    assert torch.equal(grads[2][..., 1::2], torch.zeros_like(grads[2][..., 1::2]))
    torch.testing.assert_close(grads[3], expected[4].sum(0))


def test_strided_inputs_to_the_building_blocks_equal_the_contiguous_result():
    a = torch.randn(3, 4, 6).transpose(-1, -2)  # [3, 6, 4], non-contiguous
    b = torch.randn(1, 5, 4).expand(3, 5, 4)
    values = torch.randn(NNZ, 3).t()  # [3, nnz], non-contiguous
    assert torch.equal(spattn.sddmm(a, b, P), spattn.sddmm(a.contiguous(), b.contiguous(), P))
    assert torch.equal(spattn.sparse_softmax(values, P), spattn.sparse_softmax(values.contiguous(), P))
    assert torch.equal(spattn.spmm(values, b, P), spattn.spmm(values.contiguous(), b.contiguous(), P))
    # A pattern from a transposed (non-contiguous) mask.
    mask = torch.ones(5, 6, dtype=torch.bool).t()
    assert Pattern.from_dense(mask).equal(Pattern.from_dense(mask.contiguous()))
