"""Neighborhood attention (sliding windows, dilated and causal, on 1-D to 3-D grids) and Video Swin's 3-D
windows as patterns, plus the relative-position-bias index of a neighborhood pattern. Grid tokens are
numbered row-major: token ``(x0, x1, x2)`` of a ``(s0, s1, s2)`` grid is ``(x0 * s1 + x1) * s2 + x2``."""

from __future__ import annotations

import numpy as np
import torch

from . import _checks
from ._core import _C
from .pattern import Pattern, _from_core

__all__ = ["neighborhood", "neighborhood_bias_index", "swin_3d"]

_MAX_AXES = 3


def _as_shape(shape) -> list[int]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of 1 to {_MAX_AXES} ints, got {type(shape).__name__} {shape!r}")
    if not 1 <= len(shape) <= _MAX_AXES:
        raise ValueError(f"shape must have 1 to {_MAX_AXES} axes, got {len(shape)}: {shape!r}")
    return [_checks.as_int(size, f"shape[{i}]", 1) for i, size in enumerate(shape)]


def _per_axis(value, name: str, ndim: int, convert) -> list:
    """An int/bool for every axis, or a tuple/list with one value per axis."""
    if isinstance(value, (tuple, list)):
        if len(value) != ndim:
            raise ValueError(f"{name} must be one value or {ndim} (one per axis of shape), got {len(value)}: "
                             f"{value!r}")
        return [convert(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return [convert(value, name)] * ndim


def _as_bool(value, name: str) -> bool:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype == torch.bool:
        value = value.item()
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _core_axes(shape, kernel_size, dilation, causal, stride) -> tuple[list, list, list, list, list]:
    """Checked per-axis lists (shape, kernel_size, dilation, causal, stride) in the form the core takes."""
    shape = _as_shape(shape)
    ndim = len(shape)
    return (shape, _per_axis(kernel_size, "kernel_size", ndim, _checks.as_int),
            _per_axis(dilation, "dilation", ndim, _checks.as_int), _per_axis(causal, "causal", ndim, _as_bool),
            _per_axis(stride, "stride", ndim, _checks.as_int))


def neighborhood(shape, kernel_size, dilation=1, causal=False, device=None, *, stride=1) -> Pattern:
    """Neighborhood attention (NATTEN 0.21's rule) on a grid of ``shape`` (1 to 3 ints): ``[N, N]``,
    ``N = prod(shape)``.

    ``kernel_size``, ``dilation``, ``stride`` (ints) and ``causal`` (bool) are one value for every axis or a
    tuple with one per axis. Per axis, tokens split into ``dilation`` interleaved groups (same coordinate
    modulo ``dilation``), and within its group a query belongs to a stride group of ``stride`` consecutive
    members whose leader (its centre; causal: its last member) picks the window: the ``kernel_size``
    consecutive members centred on the leader (even kernels: one more on the left), shifted inwards at the
    borders so that there are always ``kernel_size`` of them; a causal axis takes the members from
    ``leader - kernel_size + 1`` up to the query itself (fewer at the start). A token attends to the product
    of its per-axis windows, so every row of a non-causal pattern has ``prod(kernel_size)`` entries.
    ``stride == 1`` is the sliding window; ``stride == kernel_size`` is blocked (window) attention.

    Requires ``kernel_size * dilation <= shape`` on every axis (the smallest group must hold the kernel),
    causal axes included, and ``1 <= stride <= kernel_size``. Raises TypeError/ValueError naming the bad
    argument.
    """
    return _from_core(_C.patterns_neighborhood(*_core_axes(shape, kernel_size, dilation, causal, stride), False),
                      device)


def neighborhood_bias_index(shape, kernel_size, dilation=1, causal=False, device=None, *, stride=1) -> torch.Tensor:
    """For each entry of ``neighborhood(shape, kernel_size, dilation, causal, stride=stride)`` (CSR order), its
    index into a relative-position-bias table of ``prod(2 * kernel_size - 1)`` entries: int64 ``[nnz]``.

    Per axis the offset is ``(key - query) // dilation + kernel_size - 1`` (in ``[0, 2 * kernel_size - 1)``:
    a query always lies in its own window, whatever the stride), combined row-major over the axes. With a
    learnable ``table`` of shape ``[heads, prod(2 * k - 1)]``,
    ``spattn.scaled_dot_product_attention(q, k, v, pattern, bias=table[:, index])`` is neighborhood
    attention with relative position bias.
    """
    index = torch.from_numpy(np.asarray(_C.patterns_neighborhood_bias_index(
        *_core_axes(shape, kernel_size, dilation, causal, stride))))
    return index if device is None else index.to(device)


def _neighborhood_with_bias_index(shape, kernel_size, dilation=1, causal=False, device=None, *, stride=1):
    """``(neighborhood(...), neighborhood_bias_index(...))`` from one call into the core."""
    pattern, index = _C.patterns_neighborhood(*_core_axes(shape, kernel_size, dilation, causal, stride), True)
    index = torch.from_numpy(np.asarray(index))
    return _from_core(pattern, device), (index if device is None else index.to(device))


def _as_triple(value, name: str) -> tuple[int, int, int]:
    """An int (used for all three axes) or a triple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 3:
            raise ValueError(f"{name} must be an int or a triple (t, h, w) of ints, got {len(value)} values: "
                             f"{value!r}")
        return tuple(_checks.as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    v = _checks.as_int(value, name)
    return (v, v, v)


def swin_3d(T: int, H: int, W: int, window_size, shift_size=0, device=None) -> Pattern:
    """Video Swin Transformer's (shifted) 3-D window attention on a ``T x H x W`` grid: ``[N, N]``,
    ``N = T * H * W``, token ``(t, i, j)`` numbered ``(t * H + i) * W + j``.

    ``window_size`` and ``shift_size`` are an int or a ``(t, h, w)`` triple. A token attends to exactly the
    tokens that Video Swin's ``roll(-shift)`` on all three axes + 3-D window partition + region mask lets it
    attend to: in un-rolled order, per axis, the groups ``[0, shift), [shift, shift + window), ...`` (border
    groups partial, no wrap-around). Requires ``1 <= window <= size`` and ``0 <= shift < window`` per axis.
    """
    T, H, W = _checks.as_int(T, "T"), _checks.as_int(H, "H"), _checks.as_int(W, "W")
    window = _as_triple(window_size, "window_size")
    shift = _as_triple(shift_size, "shift_size")
    return _from_core(_C.patterns_swin_3d(T, H, W, *window, *shift), device)
