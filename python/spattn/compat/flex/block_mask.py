"""FlexAttention's mask_mod functions, evaluated tile by tile into an element-exact :class:`~spattn.Pattern`.

A mask_mod ``(b, h, q_idx, kv_idx) -> bool`` is written for scalars (FlexAttention vmaps it); spattn calls it
once per tile with broadcastable index tensors (``b [B, 1, 1, 1]``, ``h [1, H, 1, 1]``, ``q_idx [1, 1, R, 1]``,
``kv_idx [1, 1, 1, C]``, int32 like FlexAttention's kernels), so one call evaluates ``R x C`` entries with
vectorised torch ops, and keeps only each tile's nonzeros: memory is bounded by a tile plus the result,
never ``Q_LEN x KV_LEN``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ... import _checks
from ...pattern import Pattern

__all__ = ["create_block_mask", "and_masks", "or_masks", "noop_mask"]

# Entries of one tile (per batch element and head the mask_mod reads): half a row of a 65,536-key sequence.
# No more than torch's intra-op grain size (32,768), so the mask_mod's torch ops run in the calling thread:
# larger tiles are split across threads that synchronise at every op, and on a busy machine that made a
# 65,536-token sliding window 3-10x slower than these cache-resident tiles, whose per-call overhead is small.
_TILE_ENTRIES = 1 << 15
_INT32_LIMIT = 2**31 - 1


def noop_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """The mask_mod that keeps every entry (a 0-d True, broadcast by the caller)."""
    return b.new_ones((), dtype=torch.bool)


def _check_mask_mods(mask_mods: tuple) -> None:
    for index, mask_mod in enumerate(mask_mods):
        if not callable(mask_mod):
            raise TypeError(f"mask_mods[{index}] must be a callable mask_mod(b, h, q_idx, kv_idx), got "
                            f"{type(mask_mod).__name__}")


def and_masks(*mask_mods: Callable) -> Callable:
    """The mask_mod keeping the entries every one of ``mask_mods`` keeps (all entries when none is given)."""
    _check_mask_mods(mask_mods)

    def and_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        result = b.new_ones((), dtype=torch.bool)
        for mask_mod in mask_mods:
            result = result & mask_mod(b, h, q_idx, kv_idx)
        return result
    return and_mask


def or_masks(*mask_mods: Callable) -> Callable:
    """The mask_mod keeping the entries any of ``mask_mods`` keeps (none when none is given)."""
    _check_mask_mods(mask_mods)

    def or_mask(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        result = b.new_zeros((), dtype=torch.bool)
        for mask_mod in mask_mods:
            result = result | mask_mod(b, h, q_idx, kv_idx)
        return result
    return or_mask


def _index_tensor(start: int, stop: int, axis: int, device: torch.device) -> Tensor:
    """``arange(start, stop)`` (int32) laid along ``axis`` of a 4-D broadcastable tensor."""
    shape = [1, 1, 1, 1]
    shape[axis] = stop - start
    return torch.arange(start, stop, dtype=torch.int32, device=device).view(shape)


def _evaluate_tile(mask_mod: Callable, b: Tensor, h: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """The ``[R, C]`` bool tile of ``mask_mod``, refused when it differs between batch elements or heads."""
    full_shape = (b.shape[0], h.shape[1], rows.shape[2], cols.shape[3])
    result = mask_mod(b, h, rows, cols)
    if not isinstance(result, Tensor) or result.dtype != torch.bool:
        raise TypeError(f"mask_mod must return a bool tensor, got "
                        f"{result.dtype if isinstance(result, Tensor) else type(result).__name__}")
    # Checked by hand: torch.broadcast_shapes costs more than a small tile's whole evaluation.
    if result.ndim > 4 or any(size not in (1, full) for size, full in zip(reversed(result.shape),
                                                                          reversed(full_shape))):
        raise ValueError(f"mask_mod returned shape {tuple(result.shape)}, which does not broadcast to the "
                         f"(b, h, q_idx, kv_idx) grid {full_shape}: it must be elementwise in its arguments")
    result = result.reshape((1,) * (4 - result.ndim) + tuple(result.shape))
    # Index tensors it does not read stay broadcast (size 1); one it reads may still give equal slices.
    if (result.shape[0] > 1 or result.shape[1] > 1) and not bool((result == result[:1, :1]).all()):
        raise ValueError("mask_mod depends on b or h, but a spattn Pattern is shared by every batch element and "
                         "head: express per-sample differences in a score_mod bias, or pass B=None and H=None to "
                         "evaluate the mask at b = h = 0 (FlexAttention's broadcast block mask)")
    return result[0, 0].expand(full_shape[2:])


def _flat_nonzero(tile: Tensor) -> np.ndarray:
    """Flat indices (int64) of the True entries of a 2-D tile, in row-major order."""
    if tile.device.type == "cpu":
        return np.flatnonzero(tile.numpy())  # several times faster than torch.nonzero on the CPU
    return torch.nonzero(tile.reshape(-1)).view(-1).cpu().numpy()


def create_block_mask(mask_mod: Callable, B: int | None, H: int | None, Q_LEN: int, KV_LEN: int, device=None,
                      BLOCK_SIZE: int | tuple[int, int] = 128, _compile: bool = False) -> Pattern:
    """The element-exact pattern of ``mask_mod`` (FlexAttention's ``create_block_mask``).

    mask_mod ``(b, h, q_idx, kv_idx) -> bool tensor`` (True = the query attends to the key), written with
    vectorisable torch ops (as for FlexAttention): it is called with broadcastable int32 index tensors, a
    tile of rows at a time. B, H: the batch size and number of query heads, or None; a spattn pattern is
    shared by every batch element and head, so a mask_mod whose result varies with ``b`` (``h``) is refused
    unless B (H) is None, where it is evaluated at ``b = 0`` (``h = 0``), like FlexAttention's broadcast
    block mask. Q_LEN, KV_LEN: the numbers of queries and keys. device: where the mask_mod runs and the
    pattern lives (default: the current accelerator, else the CPU, as in torch). Returns a Pattern of shape
    ``(Q_LEN, KV_LEN)``. BLOCK_SIZE and _compile are accepted for drop-in compatibility and change nothing:
    the pattern is exact to the element, not to blocks.
    """
    if not callable(mask_mod):
        raise TypeError(f"mask_mod must be a callable mask_mod(b, h, q_idx, kv_idx), got {type(mask_mod).__name__}")
    batch = 1 if B is None else _checks.as_int(B, "B", 1, _INT32_LIMIT)
    heads = 1 if H is None else _checks.as_int(H, "H", 1, _INT32_LIMIT)
    n_rows = _checks.as_int(Q_LEN, "Q_LEN", 0, _INT32_LIMIT)
    n_cols = _checks.as_int(KV_LEN, "KV_LEN", 0, _INT32_LIMIT)
    if isinstance(BLOCK_SIZE, (tuple, list)):
        _checks.as_pair(BLOCK_SIZE, "BLOCK_SIZE", 1)
    else:
        _checks.as_int(BLOCK_SIZE, "BLOCK_SIZE", 1)
    if device is None:
        device = torch.accelerator.current_accelerator() or "cpu"
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as error:
        raise TypeError(f"device must be a torch.device or a device string, got {device!r}") from error

    b = _index_tensor(0, batch, 0, device)
    h = _index_tensor(0, heads, 1, device)
    # Row blocks of whole rows keep the nonzeros in CSR order; a row longer than a tile is cut into column
    # chunks, one row at a time, which keeps that order too.
    cols_per_tile = max(1, min(n_cols, _TILE_ENTRIES))
    rows_per_tile = max(1, _TILE_ENTRIES // max(1, n_cols))
    column_chunks = [(c, _index_tensor(c, min(n_cols, c + cols_per_tile), 3, device))
                     for c in range(0, n_cols, cols_per_tile)]
    all_rows = _index_tensor(0, n_rows, 2, device)  # sliced per tile: cheaper than an arange per tile
    row_lengths = np.zeros(n_rows, dtype=np.int64)
    col_parts = []
    with torch.no_grad():
        for row_start in range(0, n_rows, rows_per_tile):
            row_stop = min(n_rows, row_start + rows_per_tile)
            rows = all_rows[:, :, row_start:row_stop]
            for col_start, cols in column_chunks:
                width = cols.shape[3]
                flat = _flat_nonzero(_evaluate_tile(mask_mod, b, h, rows, cols))
                col_parts.append(flat % width + col_start)
                row_lengths[row_start:row_stop] += np.bincount(flat // width, minlength=row_stop - row_start)
    row_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(row_lengths, out=row_offsets[1:])
    col_indices = np.concatenate(col_parts) if col_parts else np.zeros(0, dtype=np.int64)
    pattern = Pattern.from_csr(torch.from_numpy(row_offsets), torch.from_numpy(col_indices), (n_rows, n_cols))
    return pattern.to(device)
