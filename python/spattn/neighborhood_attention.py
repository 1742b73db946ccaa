"""`NeighborhoodAttention2D`: NATTEN's 2-D neighborhood attention block (qkv projection, sliding-window
attention with relative position bias, output projection) on spattn patterns."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from . import _checks
from .functional import scaled_dot_product_attention
from .neighborhood import _neighborhood_with_bias_index

__all__ = ["NeighborhoodAttention2D"]


# The geometry is cached outside the modules, shared by every block with the same arguments, and kept out
# of their state (a module holding patterns could not be deep-copied or pickled).
@functools.lru_cache(maxsize=64)
def _layout(height: int, width: int, kernel_size: tuple[int, int], dilation: tuple[int, int],
            device: torch.device) -> tuple:
    if device.type != "cpu":
        pattern, bias_index = _layout(height, width, kernel_size, dilation, torch.device("cpu"))
        return pattern.to(device), bias_index.to(device)
    return _neighborhood_with_bias_index((height, width), kernel_size, dilation)


class NeighborhoodAttention2D(nn.Module):
    """Multi-head 2-D neighborhood attention: each token of an ``H x W`` grid attends to the
    ``kernel_size`` window around it (see :func:`spattn.patterns.neighborhood`), with an optional learnable
    relative position bias.

    ``kernel_size`` and ``dilation`` are an int or an ``(h, w)`` pair. Parameters: ``qkv`` (Linear
    ``dim -> 3 * dim``), ``proj`` (Linear ``dim -> dim``) and, when ``rpb``, ``rpb`` of shape
    ``[num_heads, (2 * kernel_h - 1) * (2 * kernel_w - 1)]`` (row-major over the two offsets).

    ``forward(x [B, H, W, C]) -> [B, H, W, C]``; the pattern and bias index are built for each new
    ``(H, W)`` on first use and cached. ``H`` and ``W`` must be at least ``kernel_size * dilation``.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size, dilation=1, qkv_bias: bool = True, rpb: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
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
        self.kernel_size = _checks.as_pair(kernel_size, "kernel_size", 1)
        self.dilation = _checks.as_pair(dilation, "dilation", 1)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if rpb:
            table_size = (2 * self.kernel_size[0] - 1) * (2 * self.kernel_size[1] - 1)
            self.rpb = nn.Parameter(torch.empty(num_heads, table_size))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def layout(self, height: int, width: int, device) -> tuple:
        """The ``[H * W, H * W]`` pattern and its ``[nnz]`` bias index for an ``H x W`` grid on ``device``."""
        return _layout(height, width, self.kernel_size, self.dilation, torch.device(device))

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be a [B, H, W, C = {self.dim}] tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        batch, height, width, channels = x.shape
        pattern, bias_index = self.layout(height, width, x.device)
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = None if self.rpb is None else self.rpb[:, bias_index].to(q.dtype)
        out = scaled_dot_product_attention(q, k, v, pattern, bias=bias, scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, rpb={self.rpb is not None}")
