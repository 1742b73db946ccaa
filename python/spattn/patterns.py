"""Pattern generators. Each builds CSR directly in the C++ core, in time and memory proportional to the
number of entries (never an N x N mask). 2-D patterns number grid token ``(i, j)`` of an ``H x W`` grid as
``i * W + j``."""

from __future__ import annotations

import torch

from . import _checks
from ._core import _C
from .pattern import Pattern, _from_core

__all__ = ["swin", "local_1d", "causal_1d", "local_2d", "axial_2d", "dilated_2d", "global_tokens", "random",
           "from_groups", "from_block_layout"]


def swin(H: int, W: int, window_size, shift_size=0, device=None) -> Pattern:
    """Swin Transformer's (shifted) window attention on an ``H x W`` grid.

    ``window_size`` and ``shift_size`` are an int or an ``(h, w)`` pair. Token ``(i, j)`` attends to exactly
    the tokens that Swin's ``roll(-shift)`` + window partition + region mask lets it attend to. In un-rolled
    order these are, per axis, the groups ``[0, shift), [shift, shift + window), ...`` (border groups partial,
    no wrap-around). Requires ``1 <= window <= size`` and ``0 <= shift < window`` on each axis.
    """
    H, W = _checks.as_int(H, "H"), _checks.as_int(W, "W")
    window_h, window_w = _checks.as_pair(window_size, "window_size")
    shift_h, shift_w = _checks.as_pair(shift_size, "shift_size")
    return _from_core(_C.patterns_swin(H, W, window_h, window_w, shift_h, shift_w), device)


def local_1d(n: int, window_size: int, device=None) -> Pattern:
    """1-D local attention: ``|i - j| <= window_size // 2``."""
    return _from_core(_C.patterns_local_1d(_checks.as_int(n, "n"), _checks.as_int(window_size, "window_size")), device)


def causal_1d(n: int, device=None) -> Pattern:
    """Causal attention: ``j <= i``."""
    return _from_core(_C.patterns_causal_1d(_checks.as_int(n, "n")), device)


def local_2d(H: int, W: int, distance: float, p: float = 2.0, device=None) -> Pattern:
    """2-D local attention: grid positions at p-norm distance ``< distance`` (``p=0`` counts differing
    coordinates, ``p=float('inf')`` takes the largest difference)."""
    return _from_core(_C.patterns_local_2d(_checks.as_int(H, "H"), _checks.as_int(W, "W"),
                                           _checks.as_float(distance, "distance"), _checks.as_float(p, "p")), device)


def axial_2d(H: int, W: int, device=None) -> Pattern:
    """Axial attention: same grid row or same grid column."""
    return _from_core(_C.patterns_axial_2d(_checks.as_int(H, "H"), _checks.as_int(W, "W")), device)


def dilated_2d(H: int, W: int, k: int = 2, device=None) -> Pattern:
    """Dilated attention: both coordinate differences are multiples of ``k``."""
    return _from_core(_C.patterns_dilated_2d(_checks.as_int(H, "H"), _checks.as_int(W, "W"),
                                             _checks.as_int(k, "k")), device)


def global_tokens(flags, device=None) -> Pattern:
    """Global tokens: entry ``(i, j)`` exists when ``flags[i]`` or ``flags[j]`` (``flags``: 1-D bool)."""
    if device is None and isinstance(flags, torch.Tensor):
        device = flags.device
    flags = _checks.as_bool_array(flags, "flags", ndim=1)
    return _from_core(_C.patterns_global_tokens(flags.numpy()), device)


def random(n_rows: int, n_cols: int, density: float, seed: int = 0, device=None) -> Pattern:
    """Each entry independently with probability ``density``; the same ``seed`` gives the same pattern."""
    # The core's seed is unsigned 64-bit: every value in [0, 2**64) is a seed.
    seed = _checks.as_int(seed, "seed", 0, maximum=2**64 - 1)
    return _from_core(_C.patterns_random(_checks.as_int(n_rows, "n_rows"), _checks.as_int(n_cols, "n_cols"),
                                         _checks.as_float(density, "density"), seed), device)


def from_groups(row_labels, col_labels=None, device=None) -> Pattern:
    """Group attention: row ``r`` attends to column ``c`` when ``row_labels[r] == col_labels[c] >= 0``
    (labels: 1-D integers; a negative label attends to nothing; ``col_labels`` defaults to ``row_labels``).
    Windows with padding, clustered or bucketed attention are all of this form."""
    if device is None and isinstance(row_labels, torch.Tensor):
        device = row_labels.device
    rows = _checks.as_index_vector(row_labels, "row_labels")
    cols = rows if col_labels is None else _checks.as_index_vector(col_labels, "col_labels")
    return _from_core(_C.patterns_from_groups(rows.numpy(), cols.numpy()), device)


def from_block_layout(layout, block_size: int, device=None) -> Pattern:
    """Expands a 2-D 0/1 block layout: block ``(r, c)`` set means rows ``r*block_size ..`` attend to columns
    ``c*block_size ..`` (a ``block_size x block_size`` block)."""
    if device is None and isinstance(layout, torch.Tensor):
        device = layout.device
    layout = _checks.as_bool_array(layout, "layout", ndim=2, allow_01=True)
    return _from_core(_C.patterns_from_block_layout(layout.numpy(), _checks.as_int(block_size, "block_size")), device)


from .neighborhood import neighborhood, swin_3d, neighborhood_bias_index  # noqa: E402
__all__ += ["neighborhood", "swin_3d", "neighborhood_bias_index"]
