"""torchvision's Swin Transformer (``swin_t/s/b``), Swin V2 (``swin_v2_t/s/b``) and Video Swin
(``swin3d_t/s/b``) on spattn.

:func:`convert` replaces the shifted-window attention of every block with spattn attention over the
block's pattern: no pad, roll, window partition or mask tensor. Parameters, buffers and their names stay
(``state_dict`` loads both ways), and outputs and gradients equal torchvision's, with torchvision's own
semantics, which differ from timm's:

- the grid is padded at the bottom/right (and end of time) to a multiple of the window *before* the roll,
  and the padded tokens are not masked: they are zero vectors through the qkv projection, real keys;
- a 2-D block does not shift along an axis whose padded size the window covers;
- Video Swin shrinks the window to the input along an axis the input does not exceed, drops that axis's
  shift, and reads its relative-position index sliced to the smaller window (``index[:volume, :volume]``);
- Swin V2: cosine attention with the logit scale clamped at log(100), the continuous position bias
  ``16 * sigmoid(cpb_mlp(...))``, and the key part of the qkv bias zeroed in the forward.

torchvision masks pairs from different regions with -100 added to their scores; spattn leaves them out of
the pattern, which is the same softmax up to exp(-100) (below float32's resolution of any real score).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ._conversion import converted_class
from ._layout_cache import LayoutCache
from ._windows import padded_window_layout
from .functional import scaled_dot_product_attention
from .timm import SwinLayout, _append_padding_keys, _bias_on_pattern, _cosine_attention, _split_heads

__all__ = ["convert"]


# Layouts by (grid, window, shift, table window) and device: built eagerly, constants under torch.compile.
_LAYOUTS = LayoutCache("torchvision Swin", lambda key, device: padded_window_layout(*key).to(device))


def _layout_key_2d(attn, height: int, width: int) -> tuple:
    window = tuple(int(w) for w in attn.window_size)
    # torchvision: "If window size is larger than feature size, there is no need to shift window" (padded).
    padded = (math.ceil(height / window[0]) * window[0], math.ceil(width / window[1]) * window[1])
    shift = tuple(0 if w >= p else int(s) for w, p, s in zip(window, padded, attn.shift_size))
    return (int(height), int(width)), window, shift, window


def _layout_key_3d(attn, frames: int, height: int, width: int) -> tuple:
    # Video Swin's _get_window_and_shift_size: the window shrinks to a small input, and does not shift there.
    sizes = (int(frames), int(height), int(width))
    window = tuple(min(size, int(w)) for size, w in zip(sizes, attn.window_size))
    shift = tuple(0 if size <= w else int(s) for size, w, s in zip(sizes, attn.window_size, attn.shift_size))
    return sizes, window, shift, tuple(int(w) for w in attn.window_size)


def _qkv_bias_v2(attn) -> torch.Tensor | None:
    """Swin V2's qkv bias as its forward uses it: the key part zeroed (so it gets no gradient)."""
    bias = attn.qkv.bias
    if bias is None:
        return None
    length = bias.numel() // 3
    return torch.cat([bias[:length], torch.zeros_like(bias[length:2 * length]), bias[2 * length:]])


def _attend(attn, x: torch.Tensor, layout: SwinLayout, cosine: bool) -> torch.Tensor:
    """The attention of one block on x [B, *grid, C] (grid: H, W or T, H, W): [B, *grid, C]."""
    channels = x.shape[-1]
    tokens = x.reshape(x.shape[0], -1, channels)
    qkv_bias = _qkv_bias_v2(attn) if cosine else attn.qkv.bias
    project = functools.partial(F.linear, weight=attn.qkv.weight, bias=qkv_bias)
    q, k, v = _split_heads(project(tokens), attn.num_heads)
    k, v = _append_padding_keys(k, v, project, x, layout, attn.num_heads)
    dropout_p = attn.attention_dropout if attn.training else 0.0
    if cosine:
        out = _cosine_attention(q, k, v, attn.logit_scale, attn.cpb_mlp(attn.relative_coords_table), layout,
                                dropout_p=dropout_p)
    else:
        # Under autocast the projections are bf16 while the table stays float32: attend in q's dtype.
        bias = _bias_on_pattern(attn.relative_position_bias_table, layout).to(q.dtype)
        out = scaled_dot_product_attention(q, k, v, layout.pattern, bias=bias, scale=q.shape[-1] ** -0.5,
                                           dropout_p=dropout_p)
    # out is [B, H, N, D] in [B, N, H, D] memory order on the CPU: this reshape is a view there.
    out = attn.proj(out.transpose(1, 2).reshape(x.shape))
    return F.dropout(out, p=attn.dropout, training=attn.training)


def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
    """ShiftedWindowAttention(V2).forward on spattn: x [B, H, W, C] -> [B, H, W, C]."""
    layout = _LAYOUTS.get(_layout_key_2d(self, x.shape[1], x.shape[2]), x.device)
    return _attend(self, x, layout, cosine=self._spattn_cosine)


def _forward_3d(self, x: torch.Tensor) -> torch.Tensor:
    """ShiftedWindowAttention3d.forward on spattn: x [B, T, H, W, C] -> [B, T, H, W, C]."""
    layout = _LAYOUTS.get(_layout_key_3d(self, x.shape[1], x.shape[2], x.shape[3]), x.device)
    return _attend(self, x, layout, cosine=False)


@functools.lru_cache(maxsize=None)
def _attention_kinds():
    # Most derived first: ShiftedWindowAttentionV2 is a ShiftedWindowAttention.
    from torchvision.models import swin_transformer
    from torchvision.models.video import swin_transformer as video_swin_transformer
    return ((swin_transformer.ShiftedWindowAttentionV2, _forward_2d, True),
            (swin_transformer.ShiftedWindowAttention, _forward_2d, False),
            (video_swin_transformer.ShiftedWindowAttention3d, _forward_3d, False))


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Converts a torchvision Swin Transformer in place to spattn attention and returns it.

    Every ``ShiftedWindowAttention`` (``swin_t/s/b``), ``ShiftedWindowAttentionV2`` (``swin_v2_t/s/b``) and
    ``ShiftedWindowAttention3d`` (``swin3d_t/s/b``) keeps its parameters, buffers and names; its forward
    (pad, roll, window partition, region mask) becomes one sparse attention over the block's pattern with
    the relative position bias on the pattern, with torchvision's semantics (see the module's docstring).
    Inputs of any size: patterns are built per (grid, window, shift) on first use in eager mode and shared
    by blocks. ``torch.compile(model, fullgraph=True)`` reads them as constants: run the model once eagerly at
    each input size (and device) before compiling (torchvision's models do not record an input size).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = _attention_kinds()
    blocks = 0
    for module in model.modules():
        for attention_class, forward, cosine in kinds:
            if isinstance(module, attention_class):
                blocks += 1
                if not hasattr(type(module), "_spattn_cosine"):  # converting twice changes nothing
                    module.__class__ = converted_class(type(module), __name__, forward=forward, _spattn_cosine=cosine)
                break
    if blocks == 0:
        raise ValueError(f"model: no torchvision Swin Transformer attention found in {type(model).__name__}")
    return model
