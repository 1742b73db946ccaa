"""Dense float64 references for the sparse ops: the pattern becomes a boolean mask, entries outside it are
-inf before the softmax, and queries without entries (or with every entry at -inf) give 0 (never NaN, in
values or gradients)."""

from __future__ import annotations

import torch


def entry_rows(pattern) -> torch.Tensor:
    """The row of every entry, ``[nnz]``."""
    pattern = pattern.cpu()
    return torch.repeat_interleave(torch.arange(pattern.shape[0]), pattern.row_lengths())


def values_to_dense(values: torch.Tensor, pattern, fill: float = 0.0) -> torch.Tensor:
    """``[..., nnz]`` in CSR order -> ``[..., Nq, Nk]`` with ``fill`` outside the pattern."""
    rows, cols = pattern.shape
    dense = values.new_full((*values.shape[:-1], rows * cols), fill)
    index = (entry_rows(pattern) * cols + pattern.cpu().col_indices).to(values.device)
    dense = dense.scatter(-1, index.expand_as(values), values)
    return dense.view(*values.shape[:-1], rows, cols)


def dense_to_values(dense: torch.Tensor, pattern) -> torch.Tensor:
    """``[..., Nq, Nk]`` -> the entries on the pattern, ``[..., nnz]``."""
    pattern = pattern.cpu()
    return dense[..., entry_rows(pattern), pattern.col_indices]


def attention(q, k, v, pattern, bias=None, scale=None) -> torch.Tensor:
    """Dense masked attention in float64. q ``[..., Nq, D]``, k ``[..., Nk, D]``, v ``[..., Nk, Dv]``, bias
    None, ``[nnz]``, ``[H, nnz]`` or ``[B, H, nnz]`` (broadcast against the leading dimensions of q); 4-D k and v
    may have fewer heads than q (grouped-query attention, see attention_with_lse)."""
    return attention_with_lse(q, k, v, pattern, bias, scale)[0]


def expand_heads(x, heads: int) -> torch.Tensor:
    """4-D k or v with fewer heads than q (grouped-query attention): k/v head j serves query heads
    j * g .. (j + 1) * g - 1, g = heads / its heads, so each is repeated g times in place."""
    return x.repeat_interleave(heads // x.shape[1], dim=1)


def attention_with_lse(q, k, v, pattern, bias=None, scale=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, lse)`` of dense masked attention in float64, as :func:`attention`; lse ``[..., Nq]`` is each
    query's log-sum-exp of its biased, scaled scores over the pattern, -inf (with gradient 0) where the query
    has no entries or all of them are at -inf."""
    q, k, v = q.double(), k.double(), v.double()
    if q.ndim == 4:
        k, v = expand_heads(k, q.shape[1]), expand_heads(v, q.shape[1])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    mask = pattern.cpu().to_dense().to(q.device)
    scores = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        scores = scores + values_to_dense(bias.double(), pattern).to(q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    # Rows without entries, or whose entries are all masked to -inf through the bias, have no distribution:
    # they get constant scores (not -inf, whose softmax and its gradient are NaN), then zero weight.
    row_has_weight = scores.amax(-1, keepdim=True) > float("-inf")
    scores = torch.where(row_has_weight, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    probabilities = torch.softmax(scores, dim=-1) * row_has_weight
    lse = torch.where(row_has_weight[..., 0], torch.logsumexp(scores, dim=-1),
                      torch.full((), float("-inf"), dtype=scores.dtype, device=scores.device))
    return probabilities @ v, lse


def sddmm(a, b, pattern) -> torch.Tensor:
    return dense_to_values(a.double() @ b.double().transpose(-1, -2), pattern)


def sparse_softmax(values, pattern) -> torch.Tensor:
    dense = values_to_dense(values.double(), pattern, fill=float("-inf"))
    row_has_weight = dense.amax(-1, keepdim=True) > float("-inf")
    dense = torch.where(row_has_weight, dense, torch.zeros((), dtype=dense.dtype, device=dense.device))
    return dense_to_values(torch.softmax(dense, dim=-1) * row_has_weight, pattern)


def spmm(values, b, pattern) -> torch.Tensor:
    return values_to_dense(values.double(), pattern) @ b.double()
