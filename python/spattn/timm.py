"""timm's Swin Transformer (V1 and V2) on spattn.

:func:`convert` replaces the windowed attention of every Swin block with spattn attention over the block's
Swin pattern: no roll, no window partition, no mask tensor. The same parameters and buffers stay in place
(``state_dict`` loads both ways), and outputs and gradients equal timm's, relative position bias included.

How timm's window attention maps to a pattern. timm rolls the H x W grid by -shift, pads it at the bottom
and right to a multiple of the window (padded tokens are zero vectors, so their keys and values are the
projection of zero), cuts windows, and masks pairs from different regions of the last window. Per axis, a
token therefore belongs to a group (window, region) computed from its rolled, padded position, and two
tokens attend to each other exactly when they share the group on both axes. Queries are the H * W real
tokens in their natural order; keys are the real tokens followed by the padding tokens. The relative
position bias of an entry depends only on the two tokens' positions inside their window.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._conversion import converted_class
from ._layout_cache import LayoutCache
from .functional import scaled_dot_product_attention
from .pattern import Pattern
from .patterns import from_groups

__all__ = ["convert", "SwinLayout", "swin_layout"]


@dataclass(frozen=True)
class SwinLayout:
    """What a Swin block's attention needs, computed once per (grid, window, shift) and shared by every block
    with the same arguments.

    pattern:        [H * W, H * W + padding_tokens]: queries are the real tokens, keys the real tokens then
                    the padding tokens.
    bias_index:     [nnz] int64 index of each entry into the flattened relative-position table
                    ((2 * window_h - 1) * (2 * window_w - 1) rows), as timm's ``relative_position_index``.
    padding_tokens: number of padding keys (0 when the grid is a multiple of the window).
    """

    pattern: Pattern
    bias_index: torch.Tensor
    padding_tokens: int

    def to(self, device) -> "SwinLayout":
        return _layout_on_device(self, torch.device(device))


def _axis_groups(size: int, window: int, shift: int):
    """For the ``padded`` coordinate slots of one axis (slots ``< size`` are real coordinates, the rest are
    padding), the group of each slot and its position on the rolled, padded axis."""
    padded = math.ceil(size / window) * window
    real = torch.arange(size)
    # A real coordinate x sits at (x - shift) mod size after the roll; padding slots stay where they are.
    rolled = torch.cat([(real - shift) % size, torch.arange(size, padded)])
    if shift > 0:
        region = torch.where(rolled < padded - window, 0, torch.where(rolled < padded - shift, 1, 2))
    else:
        region = torch.zeros_like(rolled)
    return (rolled // window) * 3 + region, rolled, padded


@functools.lru_cache(maxsize=None)
def swin_layout(height: int, width: int, window_size: tuple[int, int], shift_size: tuple[int, int]) -> SwinLayout:
    """The pattern and relative-position index of timm's (shifted) window attention on a ``height x width``
    grid (on the CPU; cached; see :class:`SwinLayout`)."""
    (window_h, window_w), (shift_h, shift_w) = window_size, shift_size
    group_h, rolled_h, padded_h = _axis_groups(height, window_h, shift_h)
    group_w, rolled_w, padded_w = _axis_groups(width, window_w, shift_w)
    groups_per_row = int(group_w.max()) + 1
    within_h, within_w = rolled_h % window_h, rolled_w % window_w

    # Keys: the real tokens in their natural order, then the padding tokens in row-major order of their
    # position on the rolled, padded grid.
    slot_h = torch.arange(padded_h).repeat_interleave(padded_w)
    slot_w = torch.arange(padded_w).repeat(padded_h)
    is_real = (slot_h < height) & (slot_w < width)
    padding_slots = torch.nonzero(~is_real).flatten()
    padding_slots = padding_slots[torch.argsort(rolled_h[slot_h[padding_slots]] * padded_w +
                                                rolled_w[slot_w[padding_slots]])]
    key_slots = torch.cat([torch.nonzero(is_real).flatten(), padding_slots])
    key_h, key_w = slot_h[key_slots], slot_w[key_slots]
    key_labels = group_h[key_h] * groups_per_row + group_w[key_w]
    real_tokens = height * width
    pattern = from_groups(key_labels[:real_tokens], key_labels)

    # Relative position of every entry inside its window, numbered like timm's relative_position_index.
    query_of_entry = torch.repeat_interleave(torch.arange(real_tokens), pattern.row_lengths())
    key_of_entry = pattern.col_indices
    delta_h = within_h[key_h[query_of_entry]] - within_h[key_h[key_of_entry]] + window_h - 1
    delta_w = within_w[key_w[query_of_entry]] - within_w[key_w[key_of_entry]] + window_w - 1
    bias_index = (delta_h * (2 * window_w - 1) + delta_w).contiguous()
    return SwinLayout(pattern.prepare(), bias_index, padded_h * padded_w - real_tokens)


_device_layouts: dict = {}
_device_layouts_lock = threading.Lock()


def _layout_on_device(layout: SwinLayout, device: torch.device) -> SwinLayout:
    if device.type == "cpu":
        return layout
    key = (id(layout), device)
    moved = _device_layouts.get(key)
    if moved is None:
        with _device_layouts_lock:
            moved = _device_layouts.setdefault(key, SwinLayout(layout.pattern.to(device).prepare(),
                                                               layout.bias_index.to(device), layout.padding_tokens))
    return moved


# ---- attention of the converted blocks ------------------------------------------------------------------

def _split_heads(qkv: torch.Tensor, num_heads: int):
    """[B, N, 3 * H * D] -> q, k, v each [B, H, N, D] (views)."""
    batch, tokens, _ = qkv.shape
    return qkv.view(batch, tokens, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _append_padding_keys(k, v, project, x: torch.Tensor, layout: SwinLayout, num_heads: int):
    """Keys and values followed by the padding tokens' (all equal: ``project`` of a zero vector)."""
    if layout.padding_tokens == 0:
        return k, v
    _, k_pad, v_pad = _split_heads(project(x.new_zeros(1, 1, x.shape[-1])), num_heads)
    expand = (k.shape[0], k.shape[1], layout.padding_tokens, k.shape[3])
    return torch.cat([k, k_pad.expand(expand)], dim=2), torch.cat([v, v_pad.expand(expand)], dim=2)


def _bias_on_pattern(table: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
    """The relative-position table [positions, H] gathered onto the pattern's entries: [H, nnz], contiguous.
    (Gathering columns of the transposed table writes the kernels' layout directly, and its backward is an
    index_add; indexing rows then transposing would copy, and its backward sorts the indices.)"""
    return table.t().index_select(1, layout.bias_index)


def _windowed_attention_v1(attn, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
    batch, height, width, channels = x.shape
    qkv = attn.qkv(x.reshape(batch, height * width, channels))
    q, k, v = _split_heads(qkv, attn.num_heads)
    k, v = _append_padding_keys(k, v, attn.qkv, x, layout, attn.num_heads)
    # Under autocast the projections are bf16/fp16 while the table stays float32: attend in q's dtype.
    bias = _bias_on_pattern(attn.relative_position_bias_table, layout).to(q.dtype)
    out = scaled_dot_product_attention(q, k, v, layout.pattern, bias=bias, scale=q.shape[-1] ** -0.5,
                                       dropout_p=attn.attn_drop.p if attn.training else 0.0)
    # out is [B, H, N, D] in [B, N, H, D] memory order (spattn's CPU kernels write it so): this is a view.
    out = attn.proj(out.transpose(1, 2).reshape(batch, height, width, -1))
    return attn.proj_drop(out)


def _qkv_v2(attn, x: torch.Tensor) -> torch.Tensor:
    # timm's SwinV2 projection, with its three ways of adding the q/k/v bias.
    if attn.q_bias is None:
        return attn.qkv(x)
    qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    if attn.qkv_bias_separate:
        return attn.qkv(x) + qkv_bias
    return F.linear(x, weight=attn.qkv.weight, bias=qkv_bias)


def _windowed_attention_v2(attn, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
    batch, height, width, channels = x.shape
    q, k, v = _split_heads(_qkv_v2(attn, x.reshape(batch, height * width, channels)), attn.num_heads)
    k, v = _append_padding_keys(k, v, functools.partial(_qkv_v2, attn), x, layout, attn.num_heads)
    out = _cosine_attention(q, k, v, attn.logit_scale, attn.cpb_mlp(attn.relative_coords_table), layout,
                            dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = attn.proj(out.transpose(1, 2).reshape(batch, height, width, -1))
    return attn.proj_drop(out)


def _cosine_attention(q, k, v, logit_scale: torch.Tensor, position_mlp_output: torch.Tensor, layout: SwinLayout,
                      dropout_p: float) -> torch.Tensor:
    """Swin V2's attention on the layout (timm's and Hugging Face's):
    ``softmax(exp(min(logit_scale, log 100)) * cos(q, k) + 16 * sigmoid(table)) v``.

    q, k, v [B, H, N(+padding keys), D]; logit_scale [H, 1, 1]; position_mlp_output: the continuous position
    bias MLP's output on the relative coordinates table, [..., H] (``(2 * window_h - 1) * (2 * window_w - 1)``
    positions). Returns [B, H, N, D] (in [B, N, H, D] memory order on the CPU)."""
    heads = q.shape[1]
    # Cosine attention: unit queries and keys, a learnable temperature per head (folded into q).
    scale = torch.clamp(logit_scale, max=math.log(1.0 / 0.01)).exp()  # [H, 1, 1]
    dtype = v.dtype  # autocast may promote the normalised, rescaled q and k: attend in v's dtype
    q = (F.normalize(q, dim=-1) * scale).to(dtype)
    k = F.normalize(k, dim=-1).to(dtype)
    # Continuous position bias: computed once per forward from the MLP, then gathered onto the pattern.
    table = 16 * torch.sigmoid(position_mlp_output.reshape(-1, heads))
    bias = _bias_on_pattern(table, layout).to(dtype)
    return scaled_dot_product_attention(q, k, v, layout.pattern, bias=bias, scale=1.0, dropout_p=dropout_p)


# Layouts by (height, width, window, shift) and device: built eagerly, constants under torch.compile.
_LAYOUTS = LayoutCache("timm Swin", lambda key, device: swin_layout(*key).to(device))


def _layout_key(block, height: int, width: int) -> tuple:
    return int(height), int(width), tuple(block.window_size), tuple(block.shift_size)


def _sparse_attn(self, x: torch.Tensor) -> torch.Tensor:
    """Replacement of SwinTransformerBlock._attn / SwinTransformerV2Block._attn: x [B, H, W, C]."""
    _, height, width, _ = x.shape
    layout = _LAYOUTS.get(_layout_key(self, height, width), x.device)
    return self._spattn_attention(self.attn, x, layout)


@functools.lru_cache(maxsize=None)
def _converted_class(block_class: type, attention) -> type:
    # (Cached here too: each call would wrap `attention` in a new staticmethod.)
    return converted_class(block_class, __name__, _attn=_sparse_attn, _spattn_attention=staticmethod(attention))


def _block_kinds():
    from timm.models import swin_transformer, swin_transformer_v2
    return ((swin_transformer.SwinTransformerBlock, _windowed_attention_v1),
            (swin_transformer_v2.SwinTransformerV2Block, _windowed_attention_v2))


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Converts a timm Swin Transformer (V1 or V2) in place to spattn attention and returns it.

    Every ``SwinTransformerBlock`` / ``SwinTransformerV2Block`` keeps its parameters, buffers and names; its
    window attention (roll, partition, mask) is replaced by one sparse attention over the block's Swin
    pattern with the relative position bias on the pattern. Patterns and bias indices are shared by blocks
    with the same grid, window and shift. The layouts of the model's configured input size are built here
    (on the model's device), those of other sizes on first use; ``torch.compile(model, fullgraph=True)``
    reads them as constants (another size or device: run the model once eagerly at it before compiling).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = _block_kinds()
    blocks = 0
    for module in model.modules():
        for block_class, attention in kinds:
            if not isinstance(module, block_class):
                continue
            blocks += 1
            if not hasattr(type(module), "_spattn_attention"):  # converting twice changes nothing
                module.__class__ = _converted_class(type(module), attention)
                # The region mask is no longer used; drop it (it is a non-persistent buffer).
                module.attn_mask = None
            # The layout of the input size the block was built for, so that torch.compile finds it.
            parameter = next(module.parameters(), None)
            _LAYOUTS.prepare(_layout_key(module, *module.input_resolution),
                             parameter.device if parameter is not None else "cpu")
    if blocks == 0:
        raise ValueError(f"model: no timm Swin Transformer blocks found in {type(model).__name__}")
    return model
