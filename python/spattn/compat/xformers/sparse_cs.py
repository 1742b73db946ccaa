"""xformers' ``SparseCS`` mask and ``scaled_dot_product_attention``, with xformers' conventions
(inputs ``[B * heads, N, D]``, q scaled by ``1 / sqrt(D)``) and spattn's kernels underneath.

Unlike xformers, no entries are dropped to round nnz to a multiple of 4 (xformers did, which made the
last rows of its Swin pattern wrong), so results equal dense masked attention exactly.
"""

from __future__ import annotations

import math

import torch

from ...functional import scaled_dot_product_attention as _sparse_attention
from ...pattern import Pattern


class SparseCS:
    """A sparse attention mask in CSR form, built from a dense 2-D bool mask (True = attend)."""

    def __init__(self, matrix, device=None):
        if isinstance(matrix, Pattern):
            pattern = matrix
        else:
            if not isinstance(matrix, torch.Tensor):
                raise TypeError(f"matrix must be a 2-D bool tensor or a spattn Pattern, got {type(matrix).__name__}")
            if matrix.dtype != torch.bool:
                raise TypeError(f"matrix must be a bool mask, got dtype {matrix.dtype}")
            pattern = Pattern.from_dense(matrix)
        self.pattern = pattern if device is None else pattern.to(device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.pattern.shape)

    @property
    def device(self) -> torch.device:
        return self.pattern.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool

    @property
    def row_offsets(self) -> torch.Tensor:
        return self.pattern.row_offsets

    @property
    def column_indices(self) -> torch.Tensor:
        return self.pattern.col_indices

    def to(self, device) -> "SparseCS":
        return SparseCS(self.pattern, device)

    def to_dense(self) -> torch.Tensor:
        return self.pattern.to_dense()

    def transpose(self) -> "SparseCS":
        return SparseCS(self.pattern.T)

    def __repr__(self) -> str:
        return f"SparseCS({self.pattern!r})"


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, att_mask,
                                 dropout: torch.nn.Module | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) on the mask) v for ``q [B * heads, Nq, D]``, ``k [B * heads, Nk, D]``,
    ``v [B * heads, Nk, Dv]``; ``att_mask`` a :class:`SparseCS` or a 2-D bool tensor; ``dropout`` an
    ``nn.Dropout`` applied to the probabilities in training. Returns ``[B * heads, Nq, Dv]``."""
    if isinstance(att_mask, SparseCS):
        pattern = att_mask.pattern
    elif isinstance(att_mask, Pattern):
        pattern = att_mask
    elif isinstance(att_mask, torch.Tensor) and att_mask.dtype == torch.bool:
        pattern = Pattern.from_dense(att_mask)
    else:
        raise TypeError("att_mask must be a SparseCS, a spattn Pattern or a 2-D bool tensor, got "
                        f"{type(att_mask).__name__}")
    if dropout is not None and not isinstance(dropout, torch.nn.Module):
        raise TypeError(f"dropout must be an nn.Dropout module or None, got {type(dropout).__name__}")
    dropout_p = dropout.p if dropout is not None and dropout.training else 0.0
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a tensor, got {type(q).__name__}")
    return _sparse_attention(q, k, v, pattern, scale=1.0 / math.sqrt(q.shape[-1]), dropout_p=dropout_p)
