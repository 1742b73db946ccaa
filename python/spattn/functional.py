"""The functional API: attention and its building blocks over a :class:`~spattn.Pattern`.

Every function checks its arguments (types, ranks, matching sizes, the pattern's shape, dtypes, devices)
and raises TypeError/ValueError naming the argument, then calls the custom ops in :mod:`spattn.ops`: the
building blocks on contiguous inputs with the leading dimensions flattened into one batch axis, the fused
attention on q, k, v as given (the CPU and CUDA kernels read strided views without copying them), with the
pattern's execution plan (and its schedule) where it pays and its transpose when a backward pass may follow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _C, _checks, ops
from .pattern import Pattern

__all__ = ["scaled_dot_product_attention", "sddmm", "sparse_softmax", "spmm"]


# ---- argument checks -------------------------------------------------------------------------------------
def _check_tensor(value, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    return value


def _check_same_dtype_and_device(first: Tensor, first_name: str, **others: Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is None:
            continue
        if tensor.dtype != first.dtype:
            raise TypeError(f"{name} must have the same dtype as {first_name} ({first.dtype}), got {tensor.dtype}")
        if tensor.device != first.device:
            raise ValueError(f"{name} must be on the same device as {first_name} ({first.device}), "
                             f"got {tensor.device}")


def _check_pattern(pattern, n_rows: int, n_cols: int, device: torch.device, rows_from: str,
                   cols_from: str) -> Pattern:
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a spattn.Pattern, got {type(pattern).__name__}")
    if pattern.shape != (n_rows, n_cols):
        raise ValueError(f"pattern: shape {pattern.shape} does not match ({rows_from}, {cols_from}) = "
                         f"({n_rows}, {n_cols})")
    return pattern.to(device)


def _check_rank(tensor: Tensor, name: str, minimum: int) -> None:
    if tensor.ndim < minimum:
        raise ValueError(f"{name} must have at least {minimum} dimensions, got shape {tuple(tensor.shape)}")


def _check_batch(tensor: Tensor, name: str, batch_shape: torch.Size, reference: str, dims: int) -> None:
    if tensor.shape[:tensor.ndim - dims] != batch_shape:
        raise ValueError(f"{name}: leading dimensions {tuple(tensor.shape[:tensor.ndim - dims])} must match "
                         f"{reference}'s {tuple(batch_shape)}")


def _as_batch(tensor: Tensor, trailing: int) -> Tensor:
    """Contiguous, with the leading dimensions flattened into one batch axis."""
    # An explicit batch size: -1 is ambiguous when some dimension is 0.
    batch = math.prod(tensor.shape[:tensor.ndim - trailing])
    return tensor.contiguous().reshape(batch, *tensor.shape[tensor.ndim - trailing:])


# ---- building blocks -------------------------------------------------------------------------------------
_BACKENDS = ("spattn", "cusparse")


def _check_backend(backend: str, *tensors: Tensor) -> bool:
    """Whether to take the cuSPARSE baseline; refuses what it cannot do rather than falling back silently."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "spattn":
        return False
    if not all(t.is_cuda for t in tensors):
        raise ValueError("backend='cusparse' needs CUDA tensors")
    if any(t.dtype != torch.float32 for t in tensors):
        raise ValueError(f"backend='cusparse' takes float32 only, got {tensors[0].dtype}")
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise ValueError("backend='cusparse' has no backward: call it under torch.no_grad() or on tensors that "
                         "do not require grad")
    if not _C.build_info()["cusparse"]:
        raise ValueError("backend='cusparse': this build of spattn has no cuSPARSE")
    return True


def sddmm(a: Tensor, b: Tensor, pattern: Pattern, backend: str = "spattn") -> Tensor:
    """``(a @ b^T)`` sampled on the pattern.

    a ``[..., Nq, D]``, b ``[..., Nk, D]`` with the same leading dimensions, pattern of shape ``(Nq, Nk)``;
    returns ``[..., nnz]`` in CSR order. ``backend="cusparse"`` runs cusparseSDDMM instead of spattn's kernel
    (the library baseline: CUDA, float32, no backward).
    """
    _check_tensor(a, "a"), _check_tensor(b, "b")
    _check_rank(a, "a", 2), _check_rank(b, "b", 2)
    _check_same_dtype_and_device(a, "a", b=b)
    _check_batch(b, "b", a.shape[:-2], "a", 2)
    if b.shape[-1] != a.shape[-1]:
        raise ValueError(f"b: last dimension {b.shape[-1]} must match a's {a.shape[-1]}")
    pattern = _check_pattern(pattern, a.shape[-2], b.shape[-2], a.device, "a.shape[-2]", "b.shape[-2]")
    if _check_backend(backend, a, b):
        from . import ops_cuda
        out = ops_cuda.cusparse_sddmm(_as_batch(a, 2), _as_batch(b, 2), pattern.row_offsets, pattern.col_indices)
    else:
        out = ops.sddmm(_as_batch(a, 2), _as_batch(b, 2), pattern.row_offsets, pattern.col_indices,
                        *_transposed_for_backward(pattern, a, b))
    return out.reshape(*a.shape[:-2], pattern.nnz)


def sparse_softmax(values: Tensor, pattern: Pattern) -> Tensor:
    """Softmax over each row's entries.

    values ``[..., nnz]`` in CSR order; returns the same shape. Rows without entries (or with every entry
    at -inf) get no probability mass.
    """
    _check_tensor(values, "values")
    _check_rank(values, "values", 1)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a spattn.Pattern, got {type(pattern).__name__}")
    if values.shape[-1] != pattern.nnz:
        raise ValueError(f"values: last dimension {values.shape[-1]} must be the pattern's nnz = {pattern.nnz}")
    pattern = pattern.to(values.device)
    out = ops.sparse_softmax(_as_batch(values, 1), pattern.row_offsets, pattern.col_indices)
    return out.reshape(values.shape)


def spmm(values: Tensor, b: Tensor, pattern: Pattern, backend: str = "spattn") -> Tensor:
    """The sparse matrix (pattern with ``values``) times ``b``.

    values ``[..., nnz]``, b ``[..., Nk, D]`` with the same leading dimensions, pattern of shape
    ``(Nq, Nk)``; returns ``[..., Nq, D]``. Rows without entries give 0. ``backend="cusparse"`` runs
    cusparseSpMM instead of spattn's kernel (the library baseline: CUDA, float32, no backward).
    """
    _check_tensor(values, "values"), _check_tensor(b, "b")
    _check_rank(values, "values", 1), _check_rank(b, "b", 2)
    _check_same_dtype_and_device(b, "b", values=values)
    _check_batch(values, "values", b.shape[:-2], "b", 1)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a spattn.Pattern, got {type(pattern).__name__}")
    if pattern.shape[1] != b.shape[-2]:
        raise ValueError(f"pattern: shape {pattern.shape} has {pattern.shape[1]} columns, but b.shape[-2] = "
                         f"{b.shape[-2]}")
    if values.shape[-1] != pattern.nnz:
        raise ValueError(f"values: last dimension {values.shape[-1]} must be the pattern's nnz = {pattern.nnz}")
    pattern = pattern.to(b.device)
    if _check_backend(backend, values, b):
        from . import ops_cuda
        out = ops_cuda.cusparse_spmm(_as_batch(values, 1), _as_batch(b, 2), pattern.row_offsets,
                                     pattern.col_indices)
    else:
        out = ops.spmm(_as_batch(values, 1), _as_batch(b, 2), pattern.row_offsets, pattern.col_indices,
                       *_transposed_for_backward(pattern, values, b))
    return out.reshape(*b.shape[:-2], pattern.shape[0], b.shape[-1])


# ---- attention -------------------------------------------------------------------------------------------
# The grouped kernels serve each group of rows sharing their columns (Swin windows: 49 rows of 49 keys) as
# one small dense problem, its keys and values read once. That pays off when groups have several rows on
# average; other patterns take the row-by-row kernels. Eager mode only: the plan is built on the host the
# first time (then cached on the pattern), which tracing cannot do. On CUDA a thread block serves all rows
# of a group, so one huge group would serialise on one block, and keys must fit shared memory: capped. (The
# CPU kernel splits big groups across threads and sends groups it cannot serve densely row by row.) These limits
# are decided here, not in the CUDA launchers, because they need the plan's group sizes and the pattern's nnz,
# which the launchers hold only in device memory (reading them would synchronise the stream, which CUDA graph
# capture forbids); the Pattern keeps them on the host. The launchers still fall back to the row-by-row kernel
# on their own for what they can see (head dims, shared memory).
_GROUPED_MIN_ROWS_PER_GROUP = 4
_CUDA_GROUPED_MAX_GROUP_ROWS = 1024
_CUDA_GROUPED_MAX_MEAN_ROW_LENGTH = 256
_CUDA_GROUPED_MAX_DIM = 128


def _transposed_for_backward(pattern: Pattern, *tensors: Tensor | None) -> tuple:
    """``(t_row_offsets, t_col_indices, permutation)`` for the fused ops when a backward pass may follow
    (computed once and cached on the pattern; while tracing, only a transpose cached before), else ()."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return ()
    if torch.compiler.is_compiling():
        cached = pattern.cached("transposed")
        if cached is None:
            return ()  # the backward computes it (ops._given_or_computed_transpose)
    else:
        cached = pattern.transposed()
    transposed, permutation = cached
    return transposed.row_offsets, transposed.col_indices, permutation


def _grouped_plan(pattern: Pattern, q: Tensor, v: Tensor) -> tuple[tuple, tuple] | None:
    """The pattern's plan ``(group_offsets, group_rows)`` and its schedule ``(steps, unowned_columns)`` when the
    grouped kernels should run, else None. While tracing, a schedule not built before is ``(None, None)``."""
    n_rows = pattern.shape[0]
    if n_rows == 0:
        return None
    if q.device.type == "cuda" and (max(q.shape[-1], v.shape[-1]) > _CUDA_GROUPED_MAX_DIM or
                                    pattern.nnz > _CUDA_GROUPED_MAX_MEAN_ROW_LENGTH * n_rows):
        return None
    if torch.compiler.is_compiling():
        # Tracing cannot build a plan (host code), but one built before (Pattern.prepare(); Swin layouts and
        # SparseAttention build theirs) is a constant of the graph.
        if pattern.cached("plan") is None or pattern.cached("plan_statistics") is None:
            return None
        schedule = pattern.cached("plan_schedule") or (None, None)
    else:
        schedule = pattern.plan_schedule()
    groups, largest = pattern.plan_statistics()
    if n_rows < _GROUPED_MIN_ROWS_PER_GROUP * groups:
        return None
    if q.device.type == "cuda" and largest > _CUDA_GROUPED_MAX_GROUP_ROWS:
        return None
    return pattern.plan(), schedule


def _check_attention_heads(q: Tensor, k: Tensor, v: Tensor, enable_gqa: bool) -> None:
    """k and v have q's leading dimensions, except that with ``enable_gqa`` 4-D ones may have fewer heads, a
    divisor of q's (as in torch.nn.functional.scaled_dot_product_attention)."""
    if not isinstance(enable_gqa, bool):
        raise TypeError(f"enable_gqa must be a bool, got {type(enable_gqa).__name__}")
    if k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"q, k and v must have the same rank, got {q.ndim}, {k.ndim} and {v.ndim}")
    if q.ndim == 4 and enable_gqa:
        q_heads, kv_heads = q.shape[1], k.shape[1]
        if kv_heads != q_heads and (kv_heads == 0 or q_heads % kv_heads != 0):
            raise ValueError(f"k: its {kv_heads} heads must divide q's {q_heads} (grouped-query attention), got "
                             f"shape {tuple(k.shape)}")
        if k.shape[0] != q.shape[0]:
            raise ValueError(f"k: batch size {k.shape[0]} must match q's {q.shape[0]}")
        _check_batch(v, "v", k.shape[:-2], "k", 2)
        return
    if q.ndim == 4 and k.shape[1] != q.shape[1] and k.shape[0] == q.shape[0]:
        raise ValueError(f"k: {k.shape[1]} heads, q has {q.shape[1]}: pass enable_gqa=True for grouped-query "
                         f"attention (k and v with fewer heads, a divisor of q's)")
    _check_batch(k, "k", q.shape[:-2], "q", 2)
    _check_batch(v, "v", q.shape[:-2], "q", 2)


def _check_bias(bias, q: Tensor, nnz: int) -> None:
    """bias None, ``[nnz]``, or for 4-D q ``[H, nnz]`` or ``[B, H, nnz]`` (H: q's heads)."""
    if bias is None:
        return
    if not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    _check_same_dtype_and_device(q, "q", bias=bias)
    allowed = [(nnz,)] + ([(q.shape[1], nnz), (q.shape[0], q.shape[1], nnz)] if q.ndim == 4 else [])
    if tuple(bias.shape) not in allowed:
        raise ValueError(f"bias must have shape {' or '.join(str(list(s)) for s in allowed)} (nnz = {nnz}), got "
                         f"{list(bias.shape)}")


def _pattern_logsumexp(scores: Tensor, pattern: Pattern) -> Tensor:
    """``[problems, Nq]``: each row's log-sum-exp of ``scores`` ``[problems, nnz]`` over its entries; -inf
    for rows without entries or with every entry at -inf, whose gradient is 0 (never NaN)."""
    n_rows = pattern.shape[0]
    rows = torch.repeat_interleave(torch.arange(n_rows, device=scores.device),
                                   pattern.row_lengths().to(scores.device)).expand_as(scores)
    negative_infinity = torch.full((), float("-inf"), dtype=scores.dtype, device=scores.device)
    maximum = negative_infinity.expand(scores.shape[0], n_rows).scatter_reduce(1, rows, scores.detach(), "amax")
    has_weight = maximum > float("-inf")
    maximum = torch.where(has_weight, maximum, torch.zeros_like(maximum))
    sums = scores.new_zeros(scores.shape[0], n_rows).scatter_add(1, rows, torch.exp(scores - maximum.gather(1, rows)))
    has_weight = sums > 0
    return torch.where(has_weight, torch.log(torch.where(has_weight, sums, torch.ones_like(sums))) + maximum,
                       negative_infinity)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, bias: Tensor | None = None,
                                 scale: float | None = None, dropout_p: float = 0.0, enable_gqa: bool = False,
                                 return_lse: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(scale * q k^T + bias) v`` with the softmax over each query's entries in ``pattern``.

    q ``[B, H, Nq, D]`` or ``[B, Nq, D]``; k ``[.., Nk, D]``; v ``[.., Nk, Dv]`` (same leading dimensions);
    pattern of shape ``(Nq, Nk)``; bias None, ``[nnz]`` (shared by all heads), ``[H, nnz]`` or ``[B, H, nnz]``
    (4-D inputs, H = q's heads; per sample, e.g. for padding), in CSR order, added to the scaled scores; scale
    defaults to ``1 / sqrt(D)``. Returns ``[.., Nq, Dv]``; queries without entries give 0.

    ``enable_gqa=True`` (grouped-query / multi-query attention): 4-D k and v may have ``Hkv`` heads, a divisor of
    H; query head h reads k/v head ``h // (H // Hkv)``, inside the kernels, without repeating k and v (the
    gradients of k and v sum over the query heads reading them). Without it, k and v must have q's heads.

    ``return_lse=True`` returns ``(out, lse)`` with lse ``[.., H, Nq]`` (``[B, Nq]`` for 3-D inputs), each
    query's log-sum-exp of its biased, scaled scores over the pattern, float64 for float64 inputs and float32
    otherwise, -inf for queries without entries. Gradients flow through lse as through out (a loss may use
    both); the entries of -inf get gradient 0.

    With ``dropout_p > 0`` the probabilities are dropped out (unfused path: SDDMM, softmax, dropout, SpMM; lse
    is that of the scores before dropout); otherwise one fused kernel runs, which never stores the scores. There
    (CPU and CUDA), q, k and v may be strided views (of one qkv projection, say) and are not copied, and a 4-D
    result lies in ``[B, Nq, H, Dv]`` memory order (``out.transpose(1, 2)`` is contiguous).
    """
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _check_tensor(tensor, name)
        if tensor.ndim not in (3, 4):
            raise ValueError(f"{name} must be [B, H, N, D] or [B, N, D], got shape {tuple(tensor.shape)}")
    _check_same_dtype_and_device(q, "q", k=k, v=v)
    _check_attention_heads(q, k, v, enable_gqa)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: head dim {k.shape[-1]} must match q's {q.shape[-1]}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: number of keys {v.shape[-2]} must match k's {k.shape[-2]}")
    pattern = _check_pattern(pattern, q.shape[-2], k.shape[-2], q.device, "q.shape[-2]", "k.shape[-2]")
    heads = q.shape[1] if q.ndim == 4 else 1
    _check_bias(bias, q, pattern.nnz)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else _checks.as_float(scale, "scale")
    dropout_p = _checks.as_float(dropout_p, "dropout_p")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")

    if dropout_p > 0.0:
        # The unfused ops take one k/v per problem: under grouped-query attention k and v are repeated for the
        # query heads reading them (expand + reshape copies them), unavoidably, as SDDMM and SpMM have no
        # grouped-query form. Their gradients sum back through the expand.
        if q.ndim == 4 and k.shape[1] != heads:
            k, v = (x.unsqueeze(2).expand(x.shape[0], x.shape[1], heads // x.shape[1], *x.shape[2:])
                    .reshape(x.shape[0], heads, *x.shape[2:]) for x in (k, v))
        q3, k3, v3 = _as_batch(q, 2), _as_batch(k, 2), _as_batch(v, 2)
        csr = (pattern.row_offsets, pattern.col_indices)
        scores = ops.sddmm(q3, k3, *csr, *_transposed_for_backward(pattern, q, k)) * scale
        if bias is not None:
            problems = q3.shape[0]
            scores = (scores.view(problems // heads, heads, pattern.nnz) + bias).view(problems, pattern.nnz)
        probabilities = ops.sparse_softmax(scores, pattern.row_offsets, pattern.col_indices)
        probabilities = torch.nn.functional.dropout(probabilities, dropout_p, training=True)
        out = ops.spmm(probabilities, v3, *csr, *_transposed_for_backward(pattern, q, k, v, bias))
        out = out.view(*q.shape[:-1], v.shape[-1])
        if return_lse:
            lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
            return out, _pattern_logsumexp(scores.to(lse_dtype), pattern).view(q.shape[:-1])
        return out
    # The fused ops take q, k, v as they are (even strided: views of a fused projection cost no copy, and k/v
    # with fewer heads are read in place) and return out shaped like q; a 4-D out lies in [B, N, H, Dv] memory
    # order. A bias becomes [1, nnz], [H, nnz] or [B * H, nnz] (one row per problem).
    bias2d = None if bias is None else bias.contiguous().view(math.prod(bias.shape[:-1]), pattern.nnz)
    grouped = _grouped_plan(pattern, q, v)
    transposed = _transposed_for_backward(pattern, q, k, v, bias)
    csr = (pattern.row_offsets, pattern.col_indices)
    if grouped is not None:
        plan, schedule = grouped
        out, lse = ops.attention_forward_grouped(q, k, v, bias2d, *csr, *plan, scale, *(transposed or (None,) * 3),
                                                 *schedule)
    else:
        out, lse = ops.attention_forward(q, k, v, bias2d, *csr, scale, *transposed)
    return (out, lse) if return_lse else out
