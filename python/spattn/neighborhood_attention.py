"""`NeighborhoodAttention1D`, `NeighborhoodAttention2D`, `NeighborhoodAttention3D`: NATTEN's neighborhood
attention blocks (qkv projection, sliding-window attention with optional relative position bias, output
projection) on spattn patterns, and the heads-last plumbing they share with :mod:`spattn.compat.natten`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _checks
from ._layout_cache import LayoutCache
from .functional import scaled_dot_product_attention
from .neighborhood import _as_bool, _neighborhood_with_bias_index, _per_axis, neighborhood

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


def _build_layout(key: tuple, device: torch.device) -> tuple:
    shape, kernel_size, stride, dilation, is_causal, with_bias_index = key
    if not with_bias_index:
        return neighborhood(shape, kernel_size, dilation, is_causal, stride=stride).to(device).prepare(), None
    pattern, bias_index = _neighborhood_with_bias_index(shape, kernel_size, dilation, is_causal, stride=stride)
    return pattern.to(device).prepare(), bias_index.to(device)


# The geometry is cached outside the modules, shared by every block and call with the same arguments, and
# kept out of their state (a module holding patterns could not be deep-copied or pickled). Built in eager
# mode, read as constants under torch.compile.
_LAYOUTS = LayoutCache("neighborhood attention", _build_layout)


def _neighborhood_layout(shape: tuple, kernel_size: tuple, stride: tuple, dilation: tuple, is_causal: tuple,
                         device: torch.device, with_bias_index: bool = True) -> tuple:
    """``(pattern [N, N], bias_index [nnz] or None)`` of a neighborhood on a grid of ``shape``
    (N = prod(shape)), on ``device``; per-axis tuples for the rest."""
    return _LAYOUTS.get((tuple(shape), kernel_size, stride, dilation, is_causal, with_bias_index), device)


def _heads_first(x: Tensor, na_dim: int) -> Tensor:
    """``[B, *spatial, H, D]`` (``na_dim`` spatial axes) -> ``[B, H, N, D]``, a view when the spatial axes
    can be flattened without a copy (always for contiguous tensors and for slices of a fused projection)."""
    return x.flatten(1, na_dim).transpose(1, 2)


def _heads_last(x: Tensor, spatial: tuple) -> Tensor:
    """``[B, H, N, ...]`` -> ``[B, *spatial, H, ...]``: free for the attention output, whose memory is in
    ``[B, N, H, Dv]`` order."""
    x = x.transpose(1, 2)
    return x.reshape(x.shape[0], *spatial, *x.shape[2:])


def _axis_arguments(na_dim: int, kernel_size, stride, dilation, is_causal, minimum_kernel: int = 1) -> tuple:
    """Per-axis tuples ``(kernel_size, stride, dilation, is_causal)``, each from one value or a tuple with
    one value per axis; None for stride, dilation or is_causal means 1, 1, False (NATTEN's defaults)."""
    def integers(value, name, minimum):
        return tuple(_per_axis(value, name, na_dim, lambda v, n: _checks.as_int(v, n, minimum)))

    return (integers(kernel_size, "kernel_size", minimum_kernel),
            integers(1 if stride is None else stride, "stride", 1),
            integers(1 if dilation is None else dilation, "dilation", 1),
            tuple(_per_axis(False if is_causal is None else is_causal, "is_causal", na_dim, _as_bool)))


class _NeighborhoodAttention(nn.Module):
    """Multi-head neighborhood attention on a grid of ``na_dim`` axes (set by the subclasses)."""

    na_dim: int = 0

    def __init__(self, dim: int, num_heads: int, kernel_size, dilation=1, qkv_bias: bool = True, rpb: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, *, stride=1, is_causal=False):
        super().__init__()
        dim = _checks.as_int(dim, "dim", 1)
        num_heads = _checks.as_int(num_heads, "num_heads", 1)
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        for flag, name in ((qkv_bias, "qkv_bias"), (rpb, "rpb")):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size, self.stride, self.dilation, self.is_causal = _axis_arguments(
            self.na_dim, kernel_size, stride, dilation, is_causal)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if rpb:
            table_size = math.prod(2 * kernel - 1 for kernel in self.kernel_size)
            self.rpb = nn.Parameter(torch.empty(num_heads, table_size))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _layout(self, shape: tuple, device) -> tuple:
        return _neighborhood_layout(shape, self.kernel_size, self.stride, self.dilation, self.is_causal,
                                    torch.device(device), with_bias_index=self.rpb is not None)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, *spatial, C] -> [B, *spatial, C]`` (``spatial``: 1, 2 or 3 sizes, each at least
        ``kernel_size * dilation``)."""
        if not isinstance(x, Tensor) or x.ndim != self.na_dim + 2 or x.shape[-1] != self.dim:
            spatial = ", ".join(["L"] if self.na_dim == 1 else ["H", "W"] if self.na_dim == 2 else ["T", "H", "W"])
            raise ValueError(f"x must be a [B, {spatial}, C = {self.dim}] tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        spatial = tuple(x.shape[1:-1])
        pattern, bias_index = self._layout(spatial, x.device)
        # q, k and v stay views of the projection: [B, *spatial, 3, H, D] sliced, then read heads-first.
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = (_heads_first(t, self.na_dim) for t in qkv.unbind(-3))
        bias = None if self.rpb is None else self.rpb[:, bias_index].to(q.dtype)
        out = scaled_dot_product_attention(q, k, v, pattern, bias=bias, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        out = _heads_last(out, spatial).flatten(-2)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, dilation={self.dilation}, is_causal={self.is_causal}, "
                f"rpb={self.rpb is not None}")


_CLASS_DOC = """Multi-head {n}-D neighborhood attention: each token of a {grid} grid attends to its
    ``kernel_size`` neighborhood (NATTEN's rule, see :func:`spattn.patterns.neighborhood`), with an optional
    learnable relative position bias.

    ``kernel_size``, ``dilation`` and (keyword-only) ``stride`` are an int or a tuple of {n} ints,
    ``is_causal`` a bool or a tuple of {n}; ``stride <= kernel_size``. Parameters: ``qkv`` (Linear
    ``dim -> 3 * dim``), ``proj`` (Linear ``dim -> dim``) and, when ``rpb``, ``rpb`` of shape
    ``[num_heads, prod(2 * kernel_size - 1)]`` (row-major over the per-axis offsets
    ``(key - query) // dilation + kernel_size - 1``).

    ``forward(x [B, {spatial}, C]) -> [B, {spatial}, C]``; the pattern and bias index are built for each new
    grid size on first use (eagerly; under ``torch.compile`` they are read as constants) and cached. Every
    grid axis must be at least ``kernel_size * dilation``.
    """


class NeighborhoodAttention1D(_NeighborhoodAttention):
    __doc__ = _CLASS_DOC.format(n=1, grid="length-``L``", spatial="L")
    na_dim = 1

    def layout(self, length: int, device) -> tuple:
        """The ``[L, L]`` pattern and its ``[nnz]`` bias index (None without ``rpb``) for a sequence of ``L``
        tokens on ``device``."""
        return self._layout((length,), device)


class NeighborhoodAttention2D(_NeighborhoodAttention):
    __doc__ = _CLASS_DOC.format(n=2, grid="``H x W``", spatial="H, W")
    na_dim = 2

    def layout(self, height: int, width: int, device) -> tuple:
        """The ``[H * W, H * W]`` pattern and its ``[nnz]`` bias index (None without ``rpb``) for an
        ``H x W`` grid on ``device``."""
        return self._layout((height, width), device)


class NeighborhoodAttention3D(_NeighborhoodAttention):
    __doc__ = _CLASS_DOC.format(n=3, grid="``T x H x W``", spatial="T, H, W")
    na_dim = 3

    def layout(self, depth: int, height: int, width: int, device) -> tuple:
        """The ``[N, N]`` pattern (``N = T * H * W``) and its ``[nnz]`` bias index (None without
        ``rpb``) for a ``T x H x W`` grid on ``device``."""
        return self._layout((depth, height, width), device)
