"""The torch custom ops of spattn (namespace ``spattn``): schema, CPU kernel, fake kernel and autograd,
one short block per op.

Every op takes 3-D tensors (``[batch, N, D]``; the attention ops also ``[B, H, N, D]``) and pattern values
``[batch, nnz]`` in CSR order; :mod:`spattn.functional` checks and reshapes user inputs before calling
them. The pattern travels as its ``row_offsets``/``col_indices`` tensors; its number of columns is
``b.shape[-2]`` (``k.shape[-2]``). The backward ops are custom ops too, so ``torch.compile`` sees no graph
break; they take the transposed pattern (``t_row_offsets``, ``t_col_indices``, ``permutation``), which the
forward ops accept as optional inputs. CUDA kernels for the same ops are registered elsewhere with
``op.register_kernel("cuda")``.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ._core import _C

__all__ = ["sddmm", "sddmm_backward", "sparse_softmax", "sparse_softmax_backward", "spmm", "spmm_backward",
           "attention_forward", "attention_forward_grouped", "attention_backward", "transpose_pattern"]


def _contiguous(*tensors):
    return [t.contiguous() if t is not None else None for t in tensors]


def _contiguous_like(*tensors):
    """Empty contiguous tensors shaped like these (what the kernels write)."""
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors)


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- what the fake kernels check -------------------------------------------------------------------------
# The fake kernels check with torch._check (as pytorch/extension-cpp's do) what the kernels require of ranks,
# sizes, dtypes and devices, so that a graph traced by torch.compile with bad inputs fails while tracing, as
# eager mode would, instead of producing wrong shapes downstream. The bindings check the rest (strides, index
# ranges) when the kernels run.
def _check_like(name: str, tensor: Tensor | None, like: Tensor, dtype: torch.dtype | None = None) -> None:
    """``tensor`` (if given) is on ``like``'s device, of ``dtype`` (default: ``like``'s)."""
    if tensor is None:
        return
    dtype = like.dtype if dtype is None else dtype
    torch._check(tensor.dtype == dtype, lambda: f"{name} must be {dtype}, got {tensor.dtype}")
    torch._check(tensor.device == like.device, lambda: f"{name} must be on {like.device}, got {tensor.device}")


def _check_pattern(row_offsets: Tensor, col_indices: Tensor, n_rows, like: Tensor) -> None:
    """The CSR tensors: 1-D int64 on ``like``'s device, ``n_rows + 1`` offsets."""
    for name, tensor in (("row_offsets", row_offsets), ("col_indices", col_indices)):
        torch._check(tensor.dim() == 1, lambda: f"{name} must be 1-D, got {tensor.dim()}-D")
        torch._check(tensor.dtype == torch.int64, lambda: f"{name} must be int64, got {tensor.dtype}")
        torch._check(tensor.device == like.device, lambda: f"{name} must be on {like.device}, got {tensor.device}")
    torch._check(row_offsets.shape[0] == n_rows + 1,
                 lambda: f"row_offsets must have {n_rows} + 1 entries, got {row_offsets.shape[0]}")


def _check_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None, row_offsets: Tensor,
                     col_indices: Tensor) -> None:
    """q ``[.., Nq, D]``, k ``[.., Nk, D]``, v ``[.., Nk, Dv]`` with the same leading sizes, except that 4-D k
    and v may have fewer heads than q, a divisor of q's (grouped-query attention); bias ``[bias_heads, nnz]``
    with 1, H (q's heads) or B * H (one per problem) rows; and the pattern's Nq rows."""
    torch._check(q.dim() in (3, 4), lambda: f"q must be 3-D or 4-D, got {q.dim()}-D")
    for name, tensor in (("k", k), ("v", v)):
        _check_like(name, tensor, q)
        torch._check(tensor.dim() == q.dim(), lambda: f"{name} must be {q.dim()}-D like q, got {tensor.dim()}-D")
    torch._check(k.shape[0] == q.shape[0], lambda: f"k's dimension 0 ({k.shape[0]}) must match q's ({q.shape[0]})")
    torch._check(v.shape[0] == q.shape[0], lambda: f"v's dimension 0 ({v.shape[0]}) must match q's ({q.shape[0]})")
    heads = q.shape[1] if q.dim() == 4 else 1
    if q.dim() == 4:
        torch._check(k.shape[1] == heads or (k.shape[1] >= 1 and heads % k.shape[1] == 0),
                     lambda: f"k's {k.shape[1]} heads must divide q's {heads} (grouped-query attention)")
        torch._check(v.shape[1] == k.shape[1], lambda: f"v's {v.shape[1]} heads must match k's {k.shape[1]}")
    torch._check(k.shape[-1] == q.shape[-1], lambda: f"k's head dim {k.shape[-1]} must match q's {q.shape[-1]}")
    torch._check(v.shape[-2] == k.shape[-2], lambda: f"v's {v.shape[-2]} keys must match k's {k.shape[-2]}")
    if bias is not None:
        _check_like("bias", bias, q)
        torch._check(bias.dim() == 2, lambda: f"bias must be [bias_heads, nnz], got {bias.dim()}-D")
        problems = q.shape[0] * heads
        torch._check(bias.shape[0] == 1 or bias.shape[0] == heads or bias.shape[0] == problems,
                     lambda: f"bias must have 1, {heads} (q's heads) or {problems} (one per problem) rows, got "
                             f"{bias.shape[0]}")
        torch._check(bias.shape[1] == col_indices.shape[0],
                     lambda: f"bias must have nnz = {col_indices.shape[0]} values per head, got {bias.shape[1]}")
    _check_pattern(row_offsets, col_indices, q.shape[-2], q)


def _check_sddmm(a: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor) -> None:
    """a ``[batch, n_rows, D]``, b ``[batch, n_cols, D]``, the pattern's n_rows rows."""
    for name, tensor in (("a", a), ("b", b)):
        torch._check(tensor.dim() == 3, lambda: f"{name} must be 3-D [batch, N, D], got {tensor.dim()}-D")
    _check_like("b", b, a)
    torch._check(b.shape[0] == a.shape[0], lambda: f"b's batch {b.shape[0]} must match a's {a.shape[0]}")
    torch._check(b.shape[2] == a.shape[2], lambda: f"b's dim {b.shape[2]} must match a's {a.shape[2]}")
    _check_pattern(row_offsets, col_indices, a.shape[1], a)


def _check_spmm(values: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor) -> None:
    """values ``[batch, nnz]``, b ``[batch, n_cols, D]``, the pattern's CSR tensors."""
    torch._check(values.dim() == 2, lambda: f"values must be [batch, nnz], got {values.dim()}-D")
    torch._check(b.dim() == 3, lambda: f"b must be 3-D [batch, N, D], got {b.dim()}-D")
    _check_like("b", b, values)
    torch._check(b.shape[0] == values.shape[0], lambda: f"b's batch {b.shape[0]} must match values' {values.shape[0]}")
    torch._check(values.shape[1] == col_indices.shape[0],
                 lambda: f"values must have nnz = {col_indices.shape[0]} per batch element, got {values.shape[1]}")
    _check_pattern(row_offsets, col_indices, row_offsets.shape[0] - 1, b)


# ---- the transposed pattern for backward passes ----------------------------------------------------------
# Backward passes reduce over the pattern's transpose. The forward ops take it as optional inputs (the
# functional API passes the one cached on the Pattern), which reach their backward also in graphs traced by
# torch.compile; an op called without it has its backward compute it with the transpose_pattern op, O(nnz).
def _given_or_computed_transpose(given, row_offsets: Tensor, col_indices: Tensor, n_cols: int) -> tuple:
    """The transposed pattern a forward op was given (saved for its backward), else computed now."""
    if len(given) == 3 and all(t is not None for t in given):
        return tuple(given)
    return transpose_pattern(row_offsets, col_indices, n_cols)


@torch.library.custom_op("spattn::transpose_pattern", mutates_args=())
def transpose_pattern(row_offsets: Tensor, col_indices: Tensor, n_cols: int) -> tuple[Tensor, Tensor, Tensor]:
    """The transposed pattern ``(t_row_offsets [n_cols + 1], t_col_indices [nnz], permutation [nnz])``."""
    n_rows = row_offsets.shape[0] - 1
    offsets = row_offsets.detach().cpu().contiguous().numpy()
    columns = col_indices.detach().cpu().contiguous().numpy()
    _C.csr_validate(n_rows, n_cols, offsets, columns)
    (_, _, t_offsets, t_columns), permutation = _C.csr_transpose(n_rows, n_cols, offsets, columns)
    return tuple(torch.from_numpy(np.asarray(x)).to(row_offsets.device) for x in (t_offsets, t_columns, permutation))


@transpose_pattern.register_fake
def _(row_offsets, col_indices, n_cols):
    _check_pattern(row_offsets, col_indices, row_offsets.shape[0] - 1, row_offsets)
    nnz = col_indices.shape[0]
    return row_offsets.new_empty(n_cols + 1), col_indices.new_empty(nnz), col_indices.new_empty(nnz)


# ---- SDDMM -----------------------------------------------------------------------------------------------
@torch.library.custom_op("spattn::sddmm", mutates_args=(), device_types="cpu")
def sddmm(a: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor, t_row_offsets: Optional[Tensor] = None,
          t_col_indices: Optional[Tensor] = None, permutation: Optional[Tensor] = None) -> Tensor:
    """``[batch, nnz]``; the transposed pattern, if given, serves the backward (see the fused ops)."""
    a, b = _contiguous(a, b)
    out = a.new_empty(a.shape[0], col_indices.shape[0])
    _C.cpu_sddmm(a, b, row_offsets, col_indices, out)
    return out


@sddmm.register_fake
def _(a, b, row_offsets, col_indices, t_row_offsets=None, t_col_indices=None, permutation=None):
    _check_sddmm(a, b, row_offsets, col_indices)
    return a.new_empty(a.shape[0], col_indices.shape[0])


@torch.library.custom_op("spattn::sddmm_backward", mutates_args=(), device_types="cpu")
def sddmm_backward(grad: Tensor, a: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor,
                   t_row_offsets: Tensor, t_col_indices: Tensor, permutation: Tensor) -> tuple[Tensor, Tensor]:
    grad, a, b = _contiguous(grad, a, b)
    grad_a, grad_b = torch.empty_like(a), torch.empty_like(b)
    _C.cpu_sddmm_backward(grad, a, b, row_offsets, col_indices, t_row_offsets, t_col_indices, permutation,
                          grad_a, grad_b)
    return grad_a, grad_b


@sddmm_backward.register_fake
def _(grad, a, b, *pattern):
    _check_sddmm(a, b, pattern[0], pattern[1])
    _check_like("grad", grad, a)
    return _contiguous_like(a, b)


# sddmm and spmm: inputs (x, b, row_offsets, col_indices, transpose...), gradients for x and b from their
# backward op over the transposed pattern.
def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _two_operand_autograd(backward_op):
    def autograd(ctx, grad):
        x, b, row_offsets, col_indices, *transposed = ctx.saved_tensors
        grad_x, grad_b = backward_op(grad, x, b, row_offsets, col_indices,
                                     *_given_or_computed_transpose(transposed, row_offsets, col_indices, b.shape[1]))
        return grad_x, grad_b, None, None, None, None, None
    return autograd


sddmm.register_autograd(_two_operand_autograd(sddmm_backward), setup_context=_save_inputs)


# ---- sparse softmax --------------------------------------------------------------------------------------
@torch.library.custom_op("spattn::sparse_softmax", mutates_args=(), device_types="cpu")
def sparse_softmax(values: Tensor, row_offsets: Tensor, col_indices: Tensor) -> Tensor:
    (values,) = _contiguous(values)
    out = torch.empty_like(values)
    _C.cpu_sparse_softmax(values, row_offsets, col_indices, out)
    return out


@sparse_softmax.register_fake
def _(values, row_offsets, col_indices):
    torch._check(values.dim() == 2, lambda: f"values must be [batch, nnz], got {values.dim()}-D")
    torch._check(values.shape[1] == col_indices.shape[0],
                 lambda: f"values must have nnz = {col_indices.shape[0]} per batch element, got {values.shape[1]}")
    _check_pattern(row_offsets, col_indices, row_offsets.shape[0] - 1, values)
    return _contiguous_like(values)[0]


@torch.library.custom_op("spattn::sparse_softmax_backward", mutates_args=(), device_types="cpu")
def sparse_softmax_backward(grad: Tensor, out: Tensor, row_offsets: Tensor, col_indices: Tensor) -> Tensor:
    grad, out = _contiguous(grad, out)
    grad_values = torch.empty_like(out)
    _C.cpu_sparse_softmax_backward(grad, out, row_offsets, col_indices, grad_values)
    return grad_values


@sparse_softmax_backward.register_fake
def _(grad, out, row_offsets, col_indices):
    _check_like("grad", grad, out)
    for axis in range(2):
        torch._check(grad.shape[axis] == out.shape[axis], lambda: f"grad must be shaped like out {tuple(out.shape)}")
    return _contiguous_like(out)[0]


def _sparse_softmax_setup_context(ctx, inputs, output):
    _, row_offsets, col_indices = inputs
    ctx.save_for_backward(output, row_offsets, col_indices)


def _sparse_softmax_autograd(ctx, grad):
    out, row_offsets, col_indices = ctx.saved_tensors
    return sparse_softmax_backward(grad, out, row_offsets, col_indices), None, None


sparse_softmax.register_autograd(_sparse_softmax_autograd, setup_context=_sparse_softmax_setup_context)


# ---- SpMM ------------------------------------------------------------------------------------------------
@torch.library.custom_op("spattn::spmm", mutates_args=(), device_types="cpu")
def spmm(values: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor, t_row_offsets: Optional[Tensor] = None,
         t_col_indices: Optional[Tensor] = None, permutation: Optional[Tensor] = None) -> Tensor:
    """``[batch, rows, D]``; the transposed pattern, if given, serves the backward (see the fused ops)."""
    values, b = _contiguous(values, b)
    out = b.new_empty(b.shape[0], row_offsets.shape[0] - 1, b.shape[2])
    _C.cpu_spmm(values, b, row_offsets, col_indices, out)
    return out


@spmm.register_fake
def _(values, b, row_offsets, col_indices, t_row_offsets=None, t_col_indices=None, permutation=None):
    _check_spmm(values, b, row_offsets, col_indices)
    return b.new_empty(b.shape[0], row_offsets.shape[0] - 1, b.shape[2])


@torch.library.custom_op("spattn::spmm_backward", mutates_args=(), device_types="cpu")
def spmm_backward(grad_out: Tensor, values: Tensor, b: Tensor, row_offsets: Tensor, col_indices: Tensor,
                  t_row_offsets: Tensor, t_col_indices: Tensor, permutation: Tensor) -> tuple[Tensor, Tensor]:
    grad_out, values, b = _contiguous(grad_out, values, b)
    grad_values, grad_b = torch.empty_like(values), torch.empty_like(b)
    _C.cpu_spmm_backward(grad_out, values, b, row_offsets, col_indices, t_row_offsets, t_col_indices, permutation,
                         grad_values, grad_b)
    return grad_values, grad_b


@spmm_backward.register_fake
def _(grad_out, values, b, *pattern):
    _check_spmm(values, b, pattern[0], pattern[1])
    _check_like("grad_out", grad_out, b)
    return _contiguous_like(values, b)


spmm.register_autograd(_two_operand_autograd(spmm_backward), setup_context=_save_inputs)


# ---- fused attention -------------------------------------------------------------------------------------
# q, k, v are [batch, N, D] or [B, H, N, D]; 4-D k and v may have fewer heads than q, a divisor of q's
# (grouped-query attention: query head h reads k/v head h // (Hq // Hkv), in place, with no repeat copy). They
# may be strided (views of one fused projection: the CPU and CUDA kernels take the strides, only the last axis
# must be contiguous), and a 4-D out is written in [B, N, H, Dv] memory order, so that the usual
# out.transpose(1, 2).reshape(B, N, H * Dv) is a view: no copies around the kernel. bias is [bias_heads, nnz]
# with 1, H or B * H rows. lse is contiguous [.., Nq] and differentiable: its gradient reaches the backward op
# as grad_lse. Gradients are contiguous, shaped like the inputs (grad_k and grad_v like k and v).
def _rows_contiguous(*tensors):
    """Each tensor with a contiguous last axis (a copy only when it is not)."""
    return [t if t is None or t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous() for t in tensors]


def _attention_outputs(q: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` as the kernels write them (see above), on every device."""
    lse = q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))
    if q.dim() == 4:
        batch, heads, rows, _ = q.shape
        return q.new_empty(batch, rows, heads, v.shape[-1]).transpose(1, 2), lse
    return q.new_empty(*q.shape[:-1], v.shape[-1]), lse


# The forward ops optionally take the pattern's transpose (t_row_offsets, t_col_indices, permutation): they do
# not use it, but their backward does, and as inputs of the forward op they reach the backward even in a graph
# traced by torch.compile. Without them the backward computes the transpose (see
# _given_or_computed_transpose).
@torch.library.custom_op("spattn::attention_forward", mutates_args=(), device_types="cpu")
def attention_forward(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], row_offsets: Tensor,
                      col_indices: Tensor, scale: float, t_row_offsets: Optional[Tensor] = None,
                      t_col_indices: Optional[Tensor] = None,
                      permutation: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``out [.., Nq, Dv]`` and ``lse [.., Nq]`` (float64 for float64 inputs, else float32)."""
    return _cpu_attention_forward(q, k, v, bias, row_offsets, col_indices, None, None, scale)


def _cpu_attention_forward(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale):
    q, k, v = _rows_contiguous(q, k, v)
    (bias,) = _contiguous(bias)
    out, lse = _attention_outputs(q, v)
    _C.cpu_attention_forward(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale, out, lse)
    return out, lse


@attention_forward.register_fake
def _(q, k, v, bias, row_offsets, col_indices, scale, t_row_offsets=None, t_col_indices=None, permutation=None):
    _check_attention(q, k, v, bias, row_offsets, col_indices)
    return _attention_outputs(q, v)


@torch.library.custom_op(
    "spattn::attention_backward", mutates_args=(), device_types="cpu",
    schema="(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor out, Tensor lse, "
           "Tensor row_offsets, Tensor col_indices, Tensor t_row_offsets, Tensor t_col_indices, "
           "Tensor permutation, float scale, bool bias_requires_grad, Tensor? group_offsets=None, "
           "Tensor? group_rows=None, Tensor? steps=None, Tensor? unowned_columns=None, Tensor? grad_lse=None) "
           "-> (Tensor, Tensor, Tensor, Tensor?)")
def attention_backward(grad_out, q, k, v, bias, out, lse, row_offsets, col_indices, t_row_offsets, t_col_indices,
                       permutation, scale, bias_requires_grad, group_offsets=None, group_rows=None, steps=None,
                       unowned_columns=None, grad_lse=None):
    """``(grad_q, grad_k, grad_v, grad_bias)``; ``grad_bias`` ``[bias_heads, nnz]`` only when
    ``bias_requires_grad`` (and a bias is given), else None. ``grad_lse`` (``[.., Nq]`` like lse, or None) is
    the gradient reaching lse itself. Under grouped-query attention grad_k and grad_v (shaped like k and v) sum
    over the query heads of each k/v head, inside the kernel. With the pattern's plan (``group_offsets``,
    ``group_rows``) the CPU kernel runs groups of rows sharing their columns as dense problems; the plan's
    schedule (``steps``, ``unowned_columns``: Pattern.plan_schedule()) serves the CUDA tensor-core kernel and
    is ignored on the CPU."""
    grad_out, q, k, v, out = _rows_contiguous(grad_out, q, k, v, out)
    bias, lse, grad_lse = _contiguous(bias, lse, grad_lse)
    grad_q, grad_k, grad_v = _contiguous_like(q, k, v)
    grad_bias = _contiguous_like(bias)[0] if bias is not None and bias_requires_grad else None
    # Scratch owned by torch, as the core never allocates: per-entry probabilities and score gradients.
    batch = math.prod(q.shape[:-2])
    workspace = lse.new_empty(_C.cpu_attention_backward_workspace_size(batch, col_indices.shape[0]))
    _C.cpu_attention_backward(grad_out, q, k, v, bias, out, lse, grad_lse, row_offsets, col_indices, t_row_offsets,
                              t_col_indices, permutation, group_offsets, group_rows, scale, grad_q, grad_k, grad_v,
                              grad_bias, workspace)
    return grad_q, grad_k, grad_v, grad_bias


@attention_backward.register_fake
def _(grad_out, q, k, v, bias, out, lse, row_offsets, col_indices, t_row_offsets, t_col_indices, permutation,
      scale, bias_requires_grad, group_offsets=None, group_rows=None, steps=None, unowned_columns=None,
      grad_lse=None):
    _check_attention(q, k, v, bias, row_offsets, col_indices)
    _check_like("grad_out", grad_out, q)
    _check_like("out", out, q)
    _check_like("lse", lse, q, dtype=_lse_dtype(q.dtype))
    _check_like("grad_lse", grad_lse, q, dtype=_lse_dtype(q.dtype))
    if grad_lse is not None:
        torch._check(grad_lse.shape == lse.shape,
                     lambda: f"grad_lse must be shaped like lse {tuple(lse.shape)}, got {tuple(grad_lse.shape)}")
    grad_bias = _contiguous_like(bias)[0] if bias is not None and bias_requires_grad else None
    return (*_contiguous_like(q, k, v), grad_bias)


def _attention_setup_context(ctx, inputs, output, plan=(None, None, None, None)):
    """``plan``: (group_offsets, group_rows, steps, unowned_columns), each None without a plan (schedule)."""
    q, k, v, bias, row_offsets, col_indices, scale, *transposed = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, bias, out, lse, row_offsets, col_indices, *plan, *transposed)
    ctx.scale = scale
    ctx.bias_requires_grad = bias is not None and ctx.needs_input_grad[3]


# lse is differentiable: its gradient (None, or zeros, when nothing used it) goes to the backward op.
def _attention_autograd(ctx, grad_out, grad_lse):
    q, k, v, bias, out, lse, row_offsets, col_indices, *plan, t_row_offsets, t_col_indices, permutation = \
        ctx.saved_tensors
    transposed = _given_or_computed_transpose((t_row_offsets, t_col_indices, permutation), row_offsets, col_indices,
                                              k.shape[-2])
    if grad_out is None:  # only lse was used
        grad_out = torch.zeros_like(out)
    grad_q, grad_k, grad_v, grad_bias = attention_backward(
        grad_out, q, k, v, bias, out, lse, row_offsets, col_indices, *transposed, ctx.scale, ctx.bias_requires_grad,
        *plan, grad_lse)
    return grad_q, grad_k, grad_v, grad_bias, None, None, None, None, None, None


attention_forward.register_autograd(_attention_autograd, setup_context=_attention_setup_context)


# ---- fused attention over the execution plan -------------------------------------------------------------
# attention_forward with the pattern's plan (Pattern.plan(): group_offsets, group_rows): the kernels serve
# each group of rows sharing their columns as one small dense problem (CPU: register-blocked products over
# keys and values gathered once; CUDA: keys and values in shared memory). Same results up to rounding; the
# backward gets the plan too. The plan's schedule (Pattern.plan_schedule(): steps, unowned_columns), optional,
# serves the CUDA tensor-core kernels; the CPU ignores it. Like the transpose, it reaches the backward as an
# input of the forward op.
@torch.library.custom_op("spattn::attention_forward_grouped", mutates_args=(), device_types="cpu")
def attention_forward_grouped(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], row_offsets: Tensor,
                              col_indices: Tensor, group_offsets: Tensor, group_rows: Tensor, scale: float,
                              t_row_offsets: Optional[Tensor] = None, t_col_indices: Optional[Tensor] = None,
                              permutation: Optional[Tensor] = None, steps: Optional[Tensor] = None,
                              unowned_columns: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """``out [.., Nq, Dv]`` and ``lse [.., Nq]``, as :func:`attention_forward`."""
    return _cpu_attention_forward(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale)


@attention_forward_grouped.register_fake
def _(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale, t_row_offsets=None,
      t_col_indices=None, permutation=None, steps=None, unowned_columns=None):
    _check_attention(q, k, v, bias, row_offsets, col_indices)
    return _attention_outputs(q, v)


def _attention_grouped_setup_context(ctx, inputs, output):
    (q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale, t_row_offsets, t_col_indices,
     permutation, steps, unowned_columns) = inputs
    _attention_setup_context(ctx, (q, k, v, bias, row_offsets, col_indices, scale, t_row_offsets, t_col_indices,
                                   permutation), output, (group_offsets, group_rows, steps, unowned_columns))


def _attention_grouped_autograd(ctx, grad_out, grad_lse):
    grad_q, grad_k, grad_v, grad_bias, *_ = _attention_autograd(ctx, grad_out, grad_lse)
    return (grad_q, grad_k, grad_v, grad_bias) + (None,) * 10


attention_forward_grouped.register_autograd(_attention_grouped_autograd,
                                            setup_context=_attention_grouped_setup_context)
