"""``xformers.components.attention.attention_patterns`` on spattn: the same function names, arguments and
dense results, computed by spattn's pattern generators and block layouts.

Differences from xformers, all on input xformers does not handle well:

- where xformers asserts (an even ``window_size``, a grid not divisible by the window, ...), these raise
  ``ValueError``/``TypeError`` naming the argument;
- distances are compared exactly (xformers' float32 ``torch.cdist`` can flip pairs that lie exactly at
  ``distance`` on large grids);
- ``random_pattern`` and ``quick_bigbird_layout`` draw from spattn's seeded generator, seeded from torch's
  global generator unless ``seed`` is given, so ``torch.manual_seed`` makes them reproducible;
- ``layout_to_pattern`` returns a bool mask (xformers returns ``torch.kron``'s float).
"""

from __future__ import annotations

import math

import torch

from ... import _checks, layouts, patterns

__all__ = ["swin_attention_pattern", "local_1d_pattern", "causal_1d_pattern", "local_2d_pattern",
           "axial_2d_pattern", "dilated_2d_pattern", "global_token_pattern", "random_pattern", "layout_to_pattern",
           "pattern_to_layout", "quick_fixed_layout", "quick_variable_layout", "quick_bigbird_layout",
           "quick_bslongformer_layout"]


def _seed_from_torch(seed) -> int:
    """``seed``, or a seed drawn from torch's global generator (as xformers draws from global state)."""
    if seed is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return _checks.as_int(seed, "seed", 0)


# ---- token-level patterns: [n, n] bool -----------------------------------------------------------------------
def swin_attention_pattern(H: int, W: int, window_size: int, shift_size: int = 0) -> torch.Tensor:
    """Swin's (shifted) window attention on an ``H x W`` grid, ``[H*W, H*W]`` bool.

    Token ``i * W + j`` attends to the tokens of its window after a cyclic shift by ``shift_size``, with
    wrapped-around tokens kept apart (Swin's region mask). Like xformers, ``H`` and ``W`` must be
    multiples of ``window_size`` and ``0 <= shift_size < window_size``.
    """
    H, W = _checks.as_int(H, "H", 1), _checks.as_int(W, "W", 1)
    window_size = _checks.as_int(window_size, "window_size", 1)
    shift_size = _checks.as_int(shift_size, "shift_size")
    if H % window_size or W % window_size:
        raise ValueError(f"window_size = {window_size} must divide H = {H} and W = {W}")
    if not 0 <= shift_size < window_size:
        raise ValueError(f"shift_size must be in [0, window_size = {window_size}), got {shift_size}")
    return patterns.swin(H, W, window_size, shift_size).to_dense()


def local_1d_pattern(attn_size: int, window_size: int) -> torch.Tensor:
    """1-D local attention, ``[attn_size, attn_size]`` bool: ``|i - j| <= window_size // 2``.
    ``window_size`` counts the token and both wings, so it must be odd."""
    attn_size = _checks.as_int(attn_size, "attn_size", 0)
    window_size = _checks.as_int(window_size, "window_size", 1)
    if window_size % 2 != 1:
        raise ValueError(f"window_size must be odd (the token itself + 2 wings), got {window_size}")
    return patterns.local_1d(attn_size, window_size).to_dense()


def causal_1d_pattern(attn_size: int) -> torch.Tensor:
    """Causal attention, ``[attn_size, attn_size]`` bool: ``j <= i``."""
    return patterns.causal_1d(_checks.as_int(attn_size, "attn_size", 0)).to_dense()


def local_2d_pattern(H: int, W: int, distance: float, p: float = 2.0) -> torch.Tensor:
    """2-D local attention on an ``H x W`` grid, ``[H*W, H*W]`` bool: the p-norm distance between the
    grid positions of the two tokens is ``< distance`` (``torch.cdist``'s ``p``: 0 counts differing
    coordinates, ``inf`` takes the largest)."""
    return patterns.local_2d(_checks.as_int(H, "H", 0), _checks.as_int(W, "W", 0), distance, p).to_dense()


def axial_2d_pattern(H: int, W: int) -> torch.Tensor:
    """Axial attention on an ``H x W`` grid, ``[H*W, H*W]`` bool: same grid row or same grid column."""
    return patterns.axial_2d(_checks.as_int(H, "H", 0), _checks.as_int(W, "W", 0)).to_dense()


def dilated_2d_pattern(H: int, W: int, k: int = 2) -> torch.Tensor:
    """Dilated attention on an ``H x W`` grid, ``[H*W, H*W]`` bool: both coordinate differences are
    multiples of ``k``."""
    return patterns.dilated_2d(_checks.as_int(H, "H", 0), _checks.as_int(W, "W", 0),
                               _checks.as_int(k, "k", 1)).to_dense()


def global_token_pattern(attention_query_mask: torch.Tensor) -> torch.Tensor:
    """Global tokens, ``[n, n]`` bool from a 1-D bool ``attention_query_mask`` ``[n]``: entry ``(i, j)``
    is set when token ``i`` or token ``j`` is global. On the mask's device."""
    if not isinstance(attention_query_mask, torch.Tensor):
        raise TypeError(f"attention_query_mask must be a torch.Tensor, got {type(attention_query_mask).__name__}")
    _checks.as_bool_array(attention_query_mask, "attention_query_mask", ndim=1)
    return patterns.global_tokens(attention_query_mask).to_dense()


def random_pattern(attn_size: int, sparsity: float, seed: int | None = None) -> torch.Tensor:
    """Random attention, ``[attn_size, attn_size]`` bool: each entry independently kept with probability
    ``1 - sparsity`` (xformers: ``torch.rand(n, n) > sparsity``), ``0 < sparsity < 1``. ``seed`` defaults
    to a draw from torch's global generator."""
    attn_size = _checks.as_int(attn_size, "attn_size", 0)
    sparsity = _checks.as_float(sparsity, "sparsity")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    return patterns.random(attn_size, attn_size, 1.0 - sparsity, seed=_seed_from_torch(seed)).to_dense()


# ---- block layouts -------------------------------------------------------------------------------------------
def layout_to_pattern(layout: torch.Tensor, block_size: int) -> torch.Tensor:
    """Expands a block layout ``[..., nb_rows, nb_cols]`` (bool or 0/1 integers; leading dims such as heads
    are kept) into a bool mask ``[..., nb_rows * block_size, nb_cols * block_size]``, on the layout's device."""
    block_size = _checks.as_int(block_size, "block_size", 1)
    layout = _checks.as_tensor(layout, "layout")
    if layout.ndim < 2:
        raise ValueError(f"layout must be [..., nb_rows, nb_cols], got shape {tuple(layout.shape)}")
    leading, (block_rows, block_cols) = layout.shape[:-2], layout.shape[-2:]
    heads = layout.reshape(math.prod(leading), block_rows, block_cols)
    masks = [patterns.from_block_layout(head, block_size).to_dense() for head in heads]
    if not masks:
        return torch.zeros(*leading, block_rows * block_size, block_cols * block_size, dtype=torch.bool,
                           device=layout.device)
    return torch.stack(masks).reshape(*leading, block_rows * block_size, block_cols * block_size)


def pattern_to_layout(mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """The block layout that covers a mask ``[..., seq, seq]`` (bool, or 0/1 integers): block ``(r, c)``
    is 1 when any entry of it is set. Returns ``[..., seq // block_size, seq // block_size]`` int64, as
    xformers does; both sizes must be multiples of ``block_size``."""
    mask = _checks.as_tensor(mask, "mask")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex():
            raise TypeError(f"mask must be a bool tensor (or hold 0/1 integers), got dtype {mask.dtype}")
        if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must hold only 0 and 1")
        mask = mask != 0
    if mask.ndim < 2:
        raise ValueError(f"mask must be [Heads, Seq, Seq] or [Seq, Seq], got shape {tuple(mask.shape)}")
    block_size = _checks.as_int(block_size, "block_size", 1)
    if mask.shape[-2] % block_size or mask.shape[-1] % block_size:
        raise ValueError(f"block_size = {block_size} must divide both sizes of mask, got shape {tuple(mask.shape)}")
    return layouts.pattern_to_layout(mask, block_size).long()


def _quick_layout(num_heads, block_size, seq_len, make_head) -> torch.Tensor:
    """Every head shares one layout, as xformers' configs do by default (different_layout_per_head=False):
    ``[num_heads, seq_len // block_size, seq_len // block_size]`` int64."""
    num_heads = _checks.as_int(num_heads, "num_heads", 1)
    block_size = _checks.as_int(block_size, "block_size", 1)
    seq_len = _checks.as_int(seq_len, "seq_len", 0)
    if seq_len % block_size:
        raise ValueError(f"seq_len = {seq_len} must be divisible by block_size = {block_size}")
    return make_head(seq_len // block_size).to(torch.int64).expand(num_heads, -1, -1).contiguous()


def quick_fixed_layout(num_heads: int, block_size: int, seq_len: int) -> torch.Tensor:
    """``FixedSparsityConfig(num_heads, block_size).make_layout(seq_len)``: ``[num_heads, nb, nb]`` int64
    with ``nb = seq_len // block_size`` (see :func:`spattn.layouts.fixed`)."""
    return _quick_layout(num_heads, block_size, seq_len, layouts.fixed)


def quick_variable_layout(num_heads: int, block_size: int, seq_len: int) -> torch.Tensor:
    """``VariableSparsityConfig(num_heads, block_size).make_layout(seq_len)``: ``[num_heads, nb, nb]`` int64
    (see :func:`spattn.layouts.variable`)."""
    return _quick_layout(num_heads, block_size, seq_len, layouts.variable)


def quick_bigbird_layout(num_heads: int, block_size: int, seq_len: int, seed: int | None = None) -> torch.Tensor:
    """``BigBirdSparsityConfig(num_heads, block_size).make_layout(seq_len)``: ``[num_heads, nb, nb]`` int64
    (see :func:`spattn.layouts.bigbird`). Its random block comes from ``seed``, by default drawn from
    torch's global generator."""
    seed = _seed_from_torch(seed)
    return _quick_layout(num_heads, block_size, seq_len, lambda num_blocks: layouts.bigbird(num_blocks, seed=seed))


def quick_bslongformer_layout(num_heads: int, block_size: int, seq_len: int) -> torch.Tensor:
    """``BSLongformerSparsityConfig(num_heads, block_size).make_layout(seq_len)``: ``[num_heads, nb, nb]``
    int64 (see :func:`spattn.layouts.longformer`)."""
    return _quick_layout(num_heads, block_size, seq_len, layouts.longformer)
