"""Block layouts of the sparse transformers: which key blocks each query block attends to.

Each function builds one head's layout exactly as DeepSpeed's / xformers' ``SparsityConfig.make_layout``
does for ``num_blocks = seq_len // block_size`` (same argument names and defaults), in the C++ core;
random blocks come from ``seed`` instead of Python's global random state. A layout is a ``[num_blocks,
num_blocks]`` bool tensor; expand it into a token-level pattern with
``spattn.patterns.from_block_layout(layout, block_size)``.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _checks
from ._core import _C
from .pattern import Pattern

__all__ = ["fixed", "variable", "bigbird", "longformer", "pattern_to_layout"]


# ---- argument checks these layouts add to _checks ----------------------------------------------------------
def _attention(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"attention must be a str ('bidirectional' or 'unidirectional'), got "
                        f"{type(value).__name__} {value!r}")
    return value  # the core checks the value and names `attention`


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _int_list(value, name: str) -> list[int]:
    """A sequence (list, tuple, 1-D array or tensor) of ints as a list."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__} {value!r}")
    return [_checks.as_int(item, f"{name}[{k}]") for k, item in enumerate(value)]


def _seed(value) -> int:
    return _checks.as_int(value, "seed", 0)  # 0 <= seed < 2**63


def _to_torch(layout) -> torch.Tensor:
    # The core's 0/1 bytes are valid bools: reinterpret instead of copying.
    return torch.from_numpy(np.asarray(layout)).view(torch.bool)


# ---- the layouts -------------------------------------------------------------------------------------------
def fixed(num_blocks: int, num_local_blocks: int = 4, num_global_blocks: int = 1, attention: str = "bidirectional",
          horizontal_global_attention: bool = False, num_different_global_patterns: int = 1,
          head: int = 0) -> torch.Tensor:
    """Sparse Transformer's "fixed" layout (``FixedSparsityConfig``), ``[num_blocks, num_blocks]`` bool.

    Blocks form local windows of ``num_local_blocks`` that attend to themselves (causally when
    ``attention='unidirectional'``). In each window a group of ``num_global_blocks`` blocks is global:
    every block row attends to it (from the group on when unidirectional) and, with
    ``horizontal_global_attention`` (bidirectional only), it attends to every block. The group is the
    ``(1 + head % num_different_global_patterns)``-th from the window's end, so heads may differ.
    """
    return _to_torch(_C.layouts_fixed(
        _checks.as_int(num_blocks, "num_blocks"), _checks.as_int(num_local_blocks, "num_local_blocks"),
        _checks.as_int(num_global_blocks, "num_global_blocks"), _attention(attention),
        _flag(horizontal_global_attention, "horizontal_global_attention"),
        _checks.as_int(num_different_global_patterns, "num_different_global_patterns"), _checks.as_int(head, "head")))


def variable(num_blocks: int, num_random_blocks: int = 0, local_window_blocks=(4,), global_block_indices=(0,),
             global_block_end_indices=None, attention: str = "bidirectional",
             horizontal_global_attention: bool = False, seed: int = 0) -> torch.Tensor:
    """The "variable" layout (``VariableSparsityConfig``), ``[num_blocks, num_blocks]`` bool.

    Each block row attends to ``num_random_blocks`` distinct random blocks (from all blocks), to its
    local window (windows of ``local_window_blocks[0]``, ``local_window_blocks[1]``, ... blocks, the last
    size repeating to the end; causal when unidirectional) and to the global blocks
    ``global_block_indices`` (or the ranges ``[global_block_indices[i], global_block_end_indices[i])``),
    attended from every row (from the global block on when unidirectional); with
    ``horizontal_global_attention`` they also attend to every block. The same ``seed`` gives the same
    layout.
    """
    ends = None if global_block_end_indices is None else _int_list(global_block_end_indices,
                                                                    "global_block_end_indices")
    return _to_torch(_C.layouts_variable(
        _checks.as_int(num_blocks, "num_blocks"), _checks.as_int(num_random_blocks, "num_random_blocks"),
        _int_list(local_window_blocks, "local_window_blocks"), _int_list(global_block_indices, "global_block_indices"),
        ends, _attention(attention), _flag(horizontal_global_attention, "horizontal_global_attention"), _seed(seed)))


def bigbird(num_blocks: int, num_random_blocks: int = 1, num_sliding_window_blocks: int = 3,
            num_global_blocks: int = 1, attention: str = "bidirectional", seed: int = 0) -> torch.Tensor:
    """BigBird's layout (``BigBirdSparsityConfig``), ``[num_blocks, num_blocks]`` bool.

    Each block row attends to ``num_random_blocks`` distinct random blocks, to the sliding window
    ``|row - col| <= num_sliding_window_blocks // 2``, and the first ``num_global_blocks`` blocks attend
    to and are attended by every block. ``attention='unidirectional'`` keeps the lower triangle of all of
    it (row ``r`` draws its random blocks from ``[0, r]``, so at most one). The same ``seed`` gives the
    same layout.
    """
    return _to_torch(_C.layouts_bigbird(
        _checks.as_int(num_blocks, "num_blocks"), _checks.as_int(num_random_blocks, "num_random_blocks"),
        _checks.as_int(num_sliding_window_blocks, "num_sliding_window_blocks"),
        _checks.as_int(num_global_blocks, "num_global_blocks"), _attention(attention), _seed(seed)))


def longformer(num_blocks: int, num_sliding_window_blocks: int = 3, global_block_indices=(0,),
               global_block_end_indices=None, attention: str = "bidirectional") -> torch.Tensor:
    """Block-sparse Longformer's layout (``BSLongformerSparsityConfig``), ``[num_blocks, num_blocks]`` bool.

    The sliding window ``|row - col| <= num_sliding_window_blocks // 2`` plus global blocks
    (``global_block_indices``, or the ranges ``[global_block_indices[i], global_block_end_indices[i])``)
    that attend to and are attended by every block; ``attention='unidirectional'`` keeps the lower
    triangle.
    """
    ends = None if global_block_end_indices is None else _int_list(global_block_end_indices,
                                                                    "global_block_end_indices")
    return _to_torch(_C.layouts_longformer(
        _checks.as_int(num_blocks, "num_blocks"),
        _checks.as_int(num_sliding_window_blocks, "num_sliding_window_blocks"),
        _int_list(global_block_indices, "global_block_indices"), ends, _attention(attention)))


def pattern_to_layout(pattern_or_mask, block_size: int) -> torch.Tensor:
    """The smallest block layout that covers a pattern: block ``(r, c)`` is set when any entry of the
    ``block_size x block_size`` block at rows ``r*block_size ..`` and columns ``c*block_size ..`` is.

    ``pattern_or_mask`` is a :class:`Pattern` or a bool mask ``[..., n_rows, n_cols]`` (leading dims are
    kept, e.g. heads); both sizes must be multiples of ``block_size``. Returns a bool tensor
    ``[..., n_rows // block_size, n_cols // block_size]`` on the input's device.
    """
    block_size = _checks.as_int(block_size, "block_size", 1)
    if isinstance(pattern_or_mask, Pattern):
        shape = pattern_or_mask.shape
    else:
        mask = _checks.as_tensor(pattern_or_mask, "pattern_or_mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"pattern_or_mask must be a Pattern or a bool tensor, got dtype {mask.dtype}")
        if mask.ndim < 2:
            raise ValueError(f"pattern_or_mask must have at least 2 dims [..., n_rows, n_cols], got shape "
                             f"{tuple(mask.shape)}")
        shape = tuple(mask.shape[-2:])
    if shape[0] % block_size or shape[1] % block_size:
        raise ValueError(f"block_size = {block_size} must divide both sizes of pattern_or_mask, got {shape}")
    block_rows, block_cols = shape[0] // block_size, shape[1] // block_size

    if isinstance(pattern_or_mask, Pattern):
        # O(nnz): mark the block of every entry, never an N x N mask.
        pattern = pattern_or_mask
        layout = torch.zeros(block_rows * block_cols, dtype=torch.bool, device=pattern.device)
        rows = torch.repeat_interleave(torch.arange(shape[0], device=pattern.device), pattern.row_lengths())
        layout[(rows // block_size) * block_cols + pattern.col_indices // block_size] = True
        return layout.view(block_rows, block_cols)
    blocks = mask.reshape(*mask.shape[:-2], block_rows, block_size, block_cols, block_size)
    return blocks.any(dim=-1).any(dim=-2)
