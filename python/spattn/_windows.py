"""Shifted-window layouts of the Swin implementations that pad *before* the roll (torchvision's Swin, Swin V2
and Video Swin; Hugging Face's Swin and Swinv2 do the same), on a grid of any number of axes.

Such an implementation pads the grid at the end of every axis to a multiple of the window, rolls the padded
grid by -shift, cuts windows and, when shifted, masks pairs from different regions of the last window. The
padding tokens are zero vectors, so their keys and values are the projection of zero, and they are real keys:
nothing masks them. Per axis a slot (real or padding) therefore belongs to a group (window, region) computed
from its position on the rolled, padded axis, and two tokens attend to each other exactly when they share the
group on every axis. (timm rolls first and pads after: :func:`spattn.timm.swin_layout`.) The layout is
returned as timm's :class:`~spattn.timm.SwinLayout`, so the converters share the attention code around it.
"""

from __future__ import annotations

import functools
import math

import torch

from .patterns import from_groups
from .timm import SwinLayout

__all__ = ["padded_window_layout"]


def _axis(size: int, window: int, shift: int):
    """Per slot of one padded axis: its group, its position inside its window, and its rolled position."""
    padded = math.ceil(size / window) * window
    rolled = (torch.arange(padded) - shift) % padded  # the roll moves padding slots too
    if shift > 0:
        # The region slices of the mask: [0, padded - window), [padded - window, padded - shift), the rest.
        region = torch.where(rolled < padded - window, 0, torch.where(rolled < padded - shift, 1, 2))
    else:
        region = torch.zeros_like(rolled)
    return (rolled // window) * 3 + region, rolled % window, rolled


def _strides(sizes) -> list[int]:
    strides, stride = [], 1
    for size in reversed(sizes):
        strides.insert(0, stride)
        stride *= size
    return strides


@functools.lru_cache(maxsize=None)
def padded_window_layout(sizes: tuple[int, ...], window_size: tuple[int, ...], shift_size: tuple[int, ...],
                         table_window: tuple[int, ...] | None = None) -> SwinLayout:
    """The pattern and relative-position index of pad-then-roll shifted-window attention on a grid of
    ``sizes`` (on the CPU; cached). ``window_size`` and ``shift_size`` are the ones the attention uses
    (after any per-input adjustment); a shift of 0 on an axis leaves it unmasked.

    Queries are the real tokens in their natural (row-major) order; keys are the real tokens, then the
    padding tokens in row-major order of their rolled position. ``bias_index`` numbers each entry's
    relative position like torchvision's ``relative_position_index`` of a window of ``table_window``
    (default ``window_size``) read at the two tokens' flat positions inside their window of ``window_size``:
    Video Swin, whose window shrinks to a small input, slices its full-window index so.
    """
    table_window = tuple(window_size if table_window is None else table_window)
    axes = [_axis(size, window, shift) for size, window, shift in zip(sizes, window_size, shift_size)]
    padded = [len(group) for group, _, _ in axes]
    slots = torch.arange(math.prod(padded))
    coords = [(slots // stride) % size for stride, size in zip(_strides(padded), padded)]

    is_real = torch.ones_like(slots, dtype=torch.bool)
    for coordinate, size in zip(coords, sizes):
        is_real &= coordinate < size
    # Row-major order of the padding slots' rolled positions: neighbours on the rolled grid stay close.
    rolled_order = sum(rolled[c] * stride for (_, _, rolled), c, stride in zip(axes, coords, _strides(padded)))
    padding_slots = torch.nonzero(~is_real).flatten()
    padding_slots = padding_slots[torch.argsort(rolled_order[padding_slots])]
    key_slots = torch.cat([torch.nonzero(is_real).flatten(), padding_slots])

    labels = torch.zeros_like(slots)
    for (group, _, _), coordinate in zip(axes, coords):
        labels = labels * (int(group.max()) + 1) + group[coordinate]
    key_labels = labels[key_slots]
    real_tokens = math.prod(sizes)
    pattern = from_groups(key_labels[:real_tokens], key_labels)

    # Flat position of every slot inside its window, then the table's relative-position number of each entry.
    flat = sum(within[c] * stride for (_, within, _), c, stride in zip(axes, coords, _strides(window_size)))
    flat = flat[key_slots]
    query_flat = torch.repeat_interleave(flat[:real_tokens], pattern.row_lengths())
    key_flat = flat[pattern.col_indices]
    bias_index = torch.zeros_like(key_flat)
    for stride, extent in zip(_strides(table_window), table_window):
        delta = (query_flat // stride) % extent - (key_flat // stride) % extent + extent - 1
        bias_index = bias_index * (2 * extent - 1) + delta
    return SwinLayout(pattern.prepare(), bias_index.contiguous(), len(padding_slots))
