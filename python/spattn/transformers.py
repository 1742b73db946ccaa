"""Hugging Face transformers' Swin (``SwinModel``, ``SwinFor*``, ``SwinBackbone``) and Swinv2 on spattn.

:func:`convert` replaces the shifted-window attention of every ``SwinLayer`` / ``Swinv2Layer`` with spattn
attention over the layer's pattern: no pad, roll, window partition or mask tensor. Parameters, buffers and
their names stay (``state_dict`` loads both ways), and outputs and gradients equal the original's, with
Hugging Face's semantics, which are torchvision's rather than timm's:

- the grid is padded at the bottom/right to a multiple of the window *before* the roll (so the roll moves
  padding too), and padded tokens are not masked: zero vectors through the q/k/v projections, real keys;
- Swin (V1) calls ``set_shift_and_window_size`` with each input's size (unless ``always_partition``, as
  ``SwinBackbone`` asks): a grid no larger than the window on some axis gets no shift and a window of that
  size, and the layer keeps the new values, as Hugging Face's does;
- separate query, key and value projections (Swinv2's key has no bias) and Swin's ``scaling``;
- Swinv2: post-norm blocks, cosine attention with the logit scale clamped at log(100), and the continuous
  position bias ``16 * sigmoid(continuous_position_bias_mlp(relative_coords_table))``, the table built for the
  layer's ``pretrained_window_size``; window and shift fixed at construction for the configured size.

Hugging Face masks pairs from different regions by adding -100 to their scores (Swinv2: -200); spattn leaves
them out of the pattern, the same softmax up to exp(-100). A converted model computes no attention weights:
asking for them (``output_attentions=True``, in the call or the config) raises a ValueError.
"""

from __future__ import annotations

import functools

import torch

from ._conversion import converted_class
from ._layout_cache import LayoutCache
from ._windows import padded_window_layout
from .functional import scaled_dot_product_attention
from .timm import SwinLayout, _append_padding_keys, _bias_on_pattern, _cosine_attention

__all__ = ["convert", "demo_model", "DemoClassifier"]

# Layouts by ((height, width), window, shift) and device: built eagerly, constants under torch.compile.
_LAYOUTS = LayoutCache("Hugging Face Swin", lambda key, device: padded_window_layout(*key).to(device))


def _layout_key(height: int, width: int, window: int, shift: int) -> tuple:
    window, shift = int(window), int(shift)
    return (int(height), int(width)), (window, window), (shift, shift)


def _refuse_attention_weights(layer) -> ValueError:
    return ValueError(f"output_attentions=True: {type(layer).__name__} was converted by spattn.transformers."
                      f"convert and computes attention without forming attention weights; call the model with "
                      f"output_attentions=False (and config.output_attentions=False)")


def _heads(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, H * D] -> [B, H, N, D] (a view)."""
    batch, tokens, _ = tensor.shape
    return tensor.view(batch, tokens, num_heads, -1).transpose(1, 2)


def _projections(query, key, value, x: torch.Tensor, layout: SwinLayout, num_heads: int):
    """q, k, v [B, H, N, D] of the tokens x [B, N, C], the keys and values followed by the padding tokens'
    (the projections of a zero vector)."""
    q, k, v = (_heads(linear(x), num_heads) for linear in (query, key, value))
    project = lambda zeros: torch.cat([query(zeros), key(zeros), value(zeros)], dim=-1)  # noqa: E731
    k, v = _append_padding_keys(k, v, project, x, layout, num_heads)
    return q, k, v


def _merge_heads(out: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D] -> [B, N, H * D] (a view where out lies in [B, N, H, D] order, as the CPU kernels write)."""
    batch, heads, tokens, dim = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * dim)


# ---- Swin (V1) ------------------------------------------------------------------------------------------

def _swin_attention(attention, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
    """SwinAttention on the layout: x [B, N, C] (the layer-normed real tokens) -> [B, N, C]."""
    q, k, v = _projections(attention.q_proj, attention.k_proj, attention.v_proj, x, layout,
                           attention.num_attention_heads)
    # Under autocast the projections are bf16/fp16 while the table stays float32: attend in q's dtype.
    table = attention.relative_position_bias.relative_position_bias_table
    bias = _bias_on_pattern(table, layout).to(q.dtype)
    out = scaled_dot_product_attention(q, k, v, layout.pattern, bias=bias, scale=attention.scaling,
                                       dropout_p=attention.attention_dropout if attention.training else 0.0)
    return attention.o_proj(_merge_heads(out))


def _swin_window_and_shift(layer, height: int, width: int, always_partition: bool) -> tuple[int, int]:
    """The window and shift SwinLayer.forward uses for this input, without changing the layer."""
    if not always_partition and min(height, width) <= layer.window_size:
        return min(height, width), 0
    return layer.window_size, layer.shift_size


def _swin_layer_forward(self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int],
                        always_partition: bool = False, **kwargs):
    """SwinLayer.forward on spattn: hidden_states [B, H * W, C] -> ([B, H * W, C], None)."""
    if kwargs.get("output_attentions", self.attention.config.output_attentions):
        raise _refuse_attention_weights(self)
    if not always_partition:
        self.set_shift_and_window_size(input_dimensions)
    height, width = input_dimensions
    table_window = self.attention.relative_position_bias.window_size
    if (self.window_size, self.window_size) != tuple(table_window):
        # Hugging Face's layer fails here too: its bias is built for the configured window.
        raise ValueError(f"input_dimensions: a {height} x {width} grid shrinks {type(self).__name__}'s window to "
                         f"{self.window_size}, but its relative position bias is for {tuple(table_window)} windows")
    shortcut = hidden_states
    hidden_states = self.layernorm_before(hidden_states)
    layout = _LAYOUTS.get(_layout_key(height, width, self.window_size, self.shift_size), hidden_states.device)
    attention_output = self.dropout(_swin_attention(self.attention, hidden_states, layout))
    hidden_states = shortcut + self.drop_path(attention_output)

    residual = hidden_states
    hidden_states = self.layernorm_after(hidden_states)
    hidden_states = self.mlp(hidden_states)
    hidden_states = self.dropout(hidden_states) + residual
    return hidden_states, None


def _swin_layer_keys(layer, height: int, width: int) -> list[tuple]:
    """Layout keys of a height x width grid: as the model's forward (and SwinBackbone's) use it."""
    keys = []
    for always_partition in (False, True):
        window, shift = _swin_window_and_shift(layer, height, width, always_partition)
        if window == layer.attention.relative_position_bias.window_size[0]:
            keys.append(_layout_key(height, width, window, shift))
    return keys


# ---- Swinv2 ---------------------------------------------------------------------------------------------

def _swinv2_attention(attention, x: torch.Tensor, layout: SwinLayout) -> torch.Tensor:
    """Swinv2Attention on the layout: x [B, N, C] (the real tokens, not normed: V2 is post-norm) -> [B, N, C]."""
    attn = attention.self
    q, k, v = _projections(attn.query, attn.key, attn.value, x, layout, attn.num_attention_heads)
    out = _cosine_attention(q, k, v, attn.logit_scale, attn.continuous_position_bias_mlp(attn.relative_coords_table),
                            layout, dropout_p=attn.dropout.p if attn.training else 0.0)
    return attention.output(_merge_heads(out), x)


def _swinv2_layer_forward(self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int],
                          output_attentions: bool | None = False):
    """Swinv2Layer.forward on spattn: hidden_states [B, H * W, C] -> ([B, H * W, C],)."""
    if output_attentions:
        raise _refuse_attention_weights(self)
    height, width = input_dimensions
    shortcut = hidden_states
    layout = _LAYOUTS.get(_layout_key(height, width, self.window_size, self.shift_size), hidden_states.device)
    hidden_states = self.layernorm_before(_swinv2_attention(self.attention, hidden_states, layout))
    hidden_states = shortcut + self.drop_path(hidden_states)

    layer_output = self.output(self.intermediate(hidden_states))
    layer_output = hidden_states + self.drop_path(self.layernorm_after(layer_output))
    return (layer_output,)


def _swinv2_layer_keys(layer, height: int, width: int) -> list[tuple]:
    return [_layout_key(height, width, layer.window_size, layer.shift_size)]


# ---- conversion ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _check_swin_layer(layer) -> None:
    attention = layer.attention
    if not all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "relative_position_bias")):
        raise ValueError(f"model: this {type(layer).__name__} (transformers {_transformers_version()}) has no "
                         f"q_proj/k_proj/v_proj/o_proj attention; spattn.transformers converts transformers >= 5")


def _transformers_version() -> str:
    import transformers
    return transformers.__version__


def _configured_grids(model: torch.nn.Module) -> dict:
    """layer -> (height, width) of its grid at the configured image size. (A layer's input_resolution rounds
    odd sizes down, but patch embedding pads the image and patch merging pads odd grids: sizes round up.)"""
    from transformers.models.swin import modeling_swin
    from transformers.models.swinv2 import modeling_swinv2

    grids = {}
    for encoder in model.modules():
        if not isinstance(encoder, (modeling_swin.SwinEncoder, modeling_swinv2.Swinv2Encoder)):
            continue
        config = encoder.config
        image = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
        patch = config.patch_size if isinstance(config.patch_size, (tuple, list)) else (config.patch_size,) * 2
        height, width = -(-image[0] // patch[0]), -(-image[1] // patch[1])
        for stage in encoder.layers:
            for layer in stage.blocks:
                grids[layer] = (height, width)
            if stage.downsample is not None:
                height, width = (height + 1) // 2, (width + 1) // 2
    return grids


def _layer_kinds():
    from transformers.models.swin import modeling_swin
    from transformers.models.swinv2 import modeling_swinv2
    return ((modeling_swin.SwinLayer, _swin_layer_forward, _swin_layer_keys, _check_swin_layer),
            (modeling_swinv2.Swinv2Layer, _swinv2_layer_forward, _swinv2_layer_keys, None))


def convert(model: torch.nn.Module) -> torch.nn.Module:
    """Converts a Hugging Face Swin or Swinv2 model in place to spattn attention and returns it.

    Every ``SwinLayer`` / ``Swinv2Layer`` inside ``model`` (``SwinModel``, ``SwinForImageClassification``,
    ``SwinForMaskedImageModeling``, ``SwinBackbone``, their Swinv2 counterparts, or any module embedding them)
    keeps its parameters, buffers and names; its padded, rolled window attention is replaced by one sparse
    attention over the layer's pattern with the relative position bias on the pattern. Layouts are shared by
    layers with the same grid, window and shift; those of the configured image size are built here (on the
    model's device), others on first use, and ``torch.compile(model, fullgraph=True)`` reads them as constants
    (another size or device: run the model once eagerly at it before compiling). A converted model refuses
    ``output_attentions=True``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    kinds = _layer_kinds()
    grids = _configured_grids(model)
    layers = 0
    for module in model.modules():
        for layer_class, forward, keys, check in kinds:
            if not isinstance(module, layer_class):
                continue
            layers += 1
            if check is not None:
                check(module)
            if type(module).forward is not forward:  # converting twice changes nothing
                module.__class__ = converted_class(type(module), __name__, forward=forward)
            parameter = next(module.parameters(), None)
            for key in keys(module, *grids.get(module, module.input_resolution)):
                _LAYOUTS.prepare(key, parameter.device if parameter is not None else "cpu")
    if layers == 0:
        raise ValueError(f"model: no Hugging Face Swin or Swinv2 layers found in {type(model).__name__}")
    return model


# ---- the demo's model ------------------------------------------------------------------------------------

class DemoClassifier(torch.nn.Module):
    """A Hugging Face image classifier that returns its logits tensor (the demo compares and times tensors)."""

    def __init__(self, classifier: torch.nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images).logits


def demo_model(name: str, batch_size: int = 1, image_size=None) -> tuple[torch.nn.Module, torch.Tensor]:
    """A randomly initialised Hugging Face image classifier for the demo, and an example batch of images.

    name: ``"swin"`` (``SwinForImageClassification`` in the shape of microsoft/swin-tiny-patch4-window7-224,
    224 x 224 images) or ``"swinv2"`` (``Swinv2ForImageClassification`` as swinv2-tiny-patch4-window8-256,
    256 x 256); image_size: (H, W) instead. Returns (a :class:`DemoClassifier` in eval mode: images -> logits
    [batch_size, 1000], images [batch_size, 3, H, W]). Nothing is downloaded: the configurations are here.
    """
    from transformers import (SwinConfig, SwinForImageClassification, Swinv2Config,
                              Swinv2ForImageClassification)

    if name == "swin":
        size = tuple(image_size or (224, 224))
        config = SwinConfig(image_size=size, window_size=7, embed_dim=96, depths=[2, 2, 6, 2],
                            num_heads=[3, 6, 12, 24], num_labels=1000)
        model = SwinForImageClassification(config)
    elif name == "swinv2":
        size = tuple(image_size or (256, 256))
        config = Swinv2Config(image_size=size, window_size=8, embed_dim=96, depths=[2, 2, 6, 2],
                              num_heads=[3, 6, 12, 24], num_labels=1000)
        model = Swinv2ForImageClassification(config)
    else:
        raise ValueError(f"name must be 'swin' or 'swinv2', got {name!r}")
    return DemoClassifier(model).eval(), torch.randn(batch_size, 3, *size)
