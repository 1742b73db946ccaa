"""`SparseAttention`: timm's ``Attention`` block (qkv projection, attention, output projection) with the
attention restricted to a :class:`~spattn.Pattern`."""

from __future__ import annotations

from torch import Tensor, nn

from . import _checks
from .functional import scaled_dot_product_attention
from .pattern import Pattern

__all__ = ["SparseAttention"]


class SparseAttention(nn.Module):
    """Multi-head self-attention over a sparsity pattern, laid out like ``timm.layers.Attention``
    (parameters ``qkv.weight``, ``qkv.bias``, ``proj.weight``, ``proj.bias``), so weights load either way.

    ``forward(x [B, N, C], pattern=None) -> [B, N, C]``; the pattern (shape ``(N, N)``) passed to forward
    wins over the one given at construction; one of them is required. ``attn_drop`` drops attention
    probabilities in training mode.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, pattern: Pattern | None = None):
        super().__init__()
        dim = _checks.as_int(dim, "dim", 1)
        num_heads = _checks.as_int(num_heads, "num_heads", 1)
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if pattern is not None and not isinstance(pattern, Pattern):
            raise TypeError(f"pattern must be a spattn.Pattern or None, got {type(pattern).__name__}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Plan and transpose built now: torch.compile cannot build them while tracing.
        self.pattern = None if pattern is None else pattern.prepare()

    def forward(self, x: Tensor, pattern: Pattern | None = None) -> Tensor:
        pattern = self.pattern if pattern is None else pattern
        if pattern is None:
            raise ValueError("pattern: none given to forward() and none set at construction")
        if not isinstance(x, Tensor) or x.ndim != 3:
            raise ValueError(f"x must be a [B, N, C] tensor, got {getattr(x, 'shape', type(x).__name__)}")
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = scaled_dot_product_attention(q, k, v, pattern, scale=self.scale,
                                         dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, pattern={self.pattern!r}"
