"""CUDA kernels for the torch custom ops of :mod:`spattn.ops`, and the cuSPARSE baseline.

Each kernel allocates its outputs (and scratch) with torch on the inputs' device and launches on
``torch.cuda.current_stream()``, so the ops compose with streams, ``torch.compile`` and CUDA graphs.
Importing this module on a machine without a GPU (or with a build without CUDA) is harmless: the kernels
are registered for the "cuda" dispatch key and only run for CUDA tensors.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch.utils.dlpack import to_dlpack

from . import ops  # noqa: F401  (defines the spattn:: ops this module registers kernels for)
from ._core import _C

__all__ = ["cusparse_sddmm", "cusparse_spmm"]


def _stream(tensor: torch.Tensor) -> int:
    return torch.cuda.current_stream(tensor.device).cuda_stream


def _on_device(tensor: torch.Tensor):
    """Kernels launch on the current device: make it the tensors' device when it is not already."""
    if tensor.device.index is None or tensor.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(tensor.device)


def _c(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous()


def _dl(tensor: torch.Tensor | None):
    """A DLPack capsule for the binding. to_dlpack is a plain C++ call: Tensor.__dlpack__ adds Python-side
    checks costing several microseconds per tensor (a dozen tensors per backward call), refuses tensors
    that require grad, and in some torch versions synchronises streams (illegal under graph capture)."""
    return None if tensor is None else to_dlpack(tensor.contiguous())


def _register(name: str):
    return torch.library.register_kernel(f"spattn::{name}", "cuda")


# ---- unfused ---------------------------------------------------------------------------------------------
@_register("sddmm")
def _sddmm(a, b, row_offsets, col_indices, t_row_offsets=None, t_col_indices=None, permutation=None):
    out = torch.empty((a.shape[0], col_indices.shape[0]), dtype=a.dtype, device=a.device)
    with _on_device(a):
        _C.cuda_sddmm(_dl(a), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out), _stream(a))
    return out


@_register("sddmm_backward")
def _sddmm_backward(grad, a, b, row_offsets, col_indices, t_row_offsets, t_col_indices, permutation):
    grad_a = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    grad_b = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    with _on_device(a):
        _C.cuda_sddmm_backward(_dl(grad), _dl(a), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(t_row_offsets),
                               _dl(t_col_indices), _dl(permutation), _dl(grad_a), _dl(grad_b), _stream(a))
    return grad_a, grad_b


@_register("sparse_softmax")
def _sparse_softmax(values, row_offsets, col_indices):
    out = torch.empty(values.shape, dtype=values.dtype, device=values.device)
    with _on_device(values):
        _C.cuda_sparse_softmax(_dl(values), _dl(row_offsets), _dl(col_indices), _dl(out), _stream(values))
    return out


@_register("sparse_softmax_backward")
def _sparse_softmax_backward(grad, out, row_offsets, col_indices):
    grad_values = torch.empty(out.shape, dtype=out.dtype, device=out.device)
    with _on_device(out):
        _C.cuda_sparse_softmax_backward(_dl(grad), _dl(out), _dl(row_offsets), _dl(col_indices), _dl(grad_values),
                                        _stream(out))
    return grad_values


@_register("spmm")
def _spmm(values, b, row_offsets, col_indices, t_row_offsets=None, t_col_indices=None, permutation=None):
    out = torch.empty((b.shape[0], row_offsets.shape[0] - 1, b.shape[2]), dtype=b.dtype, device=b.device)
    with _on_device(b):
        _C.cuda_spmm(_dl(values), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out), _stream(b))
    return out


@_register("spmm_backward")
def _spmm_backward(grad_out, values, b, row_offsets, col_indices, t_row_offsets, t_col_indices, permutation):
    grad_values = torch.empty(values.shape, dtype=values.dtype, device=values.device)
    grad_b = torch.empty(b.shape, dtype=b.dtype, device=b.device)
    with _on_device(b):
        _C.cuda_spmm_backward(_dl(grad_out), _dl(values), _dl(b), _dl(row_offsets), _dl(col_indices),
                              _dl(t_row_offsets), _dl(t_col_indices), _dl(permutation), _dl(grad_values), _dl(grad_b),
                              _stream(b))
    return grad_values, grad_b


# ---- fused attention -------------------------------------------------------------------------------------
# As on the CPU (see ops.py): q, k, v, out and grad_out are read in place, strided ([batch, N, D] or
# [B, H, N, D] views, e.g. of one [B, N, 3, H, D] projection); only a last axis that is not contiguous costs a
# copy. A 4-D out is written in [B, N, H, Dv] memory order; lse and the gradients are contiguous. bias is
# [bias_heads, nnz] (spattn.functional passes it so).
def _strided(tensor: torch.Tensor | None):
    """A DLPack capsule of the tensor as it lies (the bindings take the strides)."""
    return None if tensor is None else to_dlpack(tensor)


@_register("attention_forward")
def _attention_forward(q, k, v, bias, row_offsets, col_indices, scale, t_row_offsets=None, t_col_indices=None,
                       permutation=None):
    # The transposed pattern (used by the backward only) is not read here.
    q, k, v = ops._rows_contiguous(q, k, v)
    out, lse = ops._attention_outputs(q, v)
    with _on_device(q):
        _C.cuda_attention_forward(_strided(q), _strided(k), _strided(v), _dl(bias), _dl(row_offsets), _dl(col_indices),
                                  float(scale), _strided(out), _strided(lse), _stream(q))
    return out, lse


@_register("attention_forward_grouped")
def _attention_forward_grouped(q, k, v, bias, row_offsets, col_indices, group_offsets, group_rows, scale,
                               t_row_offsets=None, t_col_indices=None, permutation=None, steps=None,
                               unowned_columns=None):
    # With the plan's schedule (steps), float16 / bfloat16 may run the tensor-core kernel over it.
    q, k, v = ops._rows_contiguous(q, k, v)
    out, lse = ops._attention_outputs(q, v)
    with _on_device(q):
        _C.cuda_attention_forward_grouped(_strided(q), _strided(k), _strided(v), _dl(bias), _dl(row_offsets),
                                          _dl(col_indices), _dl(group_offsets), _dl(group_rows), _dl(steps),
                                          float(scale), _strided(out), _strided(lse), _stream(q))
    return out, lse


@_register("attention_backward")
def _attention_backward(grad_out, q, k, v, bias, out, lse, row_offsets, col_indices, t_row_offsets, t_col_indices,
                        permutation, scale, bias_requires_grad, group_offsets=None, group_rows=None, steps=None,
                        unowned_columns=None, grad_lse=None):
    # With the plan (group_offsets, group_rows) and its schedule (steps, unowned_columns), float16 / bfloat16
    # run the tensor-core kernel over its groups. k and v may have fewer heads than q (grouped-query
    # attention): grad_k and grad_v have theirs. grad_lse: the gradient reaching lse, or None.
    grad_out, q, k, v, out = ops._rows_contiguous(grad_out, q, k, v, out)
    grad_q, grad_k, grad_v = ops._contiguous_like(q, k, v)
    grad_bias = None
    if bias is not None and bias_requires_grad:
        grad_bias = torch.empty(bias.shape, dtype=bias.dtype, device=bias.device)
    bias_heads = 0 if grad_bias is None else bias.shape[0]
    batch, rows, cols = math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2]
    head_group = q.shape[1] // k.shape[1] if q.dim() == 4 else 1
    # Scratch owned by torch (the core never allocates): row terms, the partial sums of dBias and, under
    # grouped-query attention, per-query-head dK and dV.
    workspace_size = _C.cuda_attention_backward_workspace_size(batch, rows, col_indices.shape[0], bias_heads, cols,
                                                               q.shape[-1], v.shape[-1], head_group)
    workspace = torch.empty(workspace_size, dtype=torch.float32, device=q.device)
    with _on_device(q):
        _C.cuda_attention_backward(_strided(grad_out), _strided(q), _strided(k), _strided(v), _dl(bias),
                                   _strided(out), _dl(lse), _dl(row_offsets), _dl(col_indices), _dl(t_row_offsets),
                                   _dl(t_col_indices), _dl(permutation), float(scale), _strided(grad_q),
                                   _strided(grad_k), _strided(grad_v), _dl(grad_bias), _dl(workspace),
                                   _dl(group_offsets), _dl(group_rows), _dl(steps), _dl(unowned_columns),
                                   _dl(grad_lse), _stream(q))
    return grad_q, grad_k, grad_v, grad_bias


# ---- cuSPARSE baseline -----------------------------------------------------------------------------------
def cusparse_sddmm(a: torch.Tensor, b: torch.Tensor, row_offsets: torch.Tensor,
                   col_indices: torch.Tensor) -> torch.Tensor:
    """SDDMM through cusparseSDDMM (float32, forward only, the library baseline): ``a [batch, rows, dim]``,
    ``b [batch, cols, dim]`` -> ``[batch, nnz]``, equal to ``torch.ops.spattn.sddmm``."""
    a, b, row_offsets, col_indices = _c(a), _c(b), _c(row_offsets), _c(col_indices)
    out = torch.empty((a.shape[0], col_indices.shape[0]), dtype=a.dtype, device=a.device)
    with _on_device(a):
        size = _C.cusparse_sddmm_workspace_size(_dl(a), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out))
        workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=a.device)
        _C.cusparse_sddmm(_dl(a), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out), _dl(workspace), _stream(a))
    return out


def cusparse_spmm(values: torch.Tensor, b: torch.Tensor, row_offsets: torch.Tensor,
                  col_indices: torch.Tensor) -> torch.Tensor:
    """SpMM through cusparseSpMM (float32, forward only, the library baseline): ``values [batch, nnz]``,
    ``b [batch, cols, dim]`` -> ``[batch, rows, dim]``, equal to ``torch.ops.spattn.spmm``."""
    values, b, row_offsets, col_indices = _c(values), _c(b), _c(row_offsets), _c(col_indices)
    out = torch.empty((b.shape[0], row_offsets.shape[0] - 1, b.shape[2]), dtype=b.dtype, device=b.device)
    with _on_device(b):
        size = _C.cusparse_spmm_workspace_size(_dl(values), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out))
        workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=b.device)
        _C.cusparse_spmm(_dl(values), _dl(b), _dl(row_offsets), _dl(col_indices), _dl(out), _dl(workspace),
                         _stream(b))
    return out
