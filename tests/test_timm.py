"""timm Swin Transformers converted to spattn give timm's outputs and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

timm = pytest.importorskip("timm")

import spattn  # noqa: E402
from spattn.timm import swin_layout  # noqa: E402

pytestmark = pytest.mark.slow


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    # Clearly non-zero position biases, so a wrong bias gather cannot hide behind zeros.
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "relative_position_bias_table" in parameter_name:
                parameter.normal_(0.0, 1.0)
            if "logit_scale" in parameter_name:
                parameter.uniform_(1.0, 3.0)
    return model


# ---- the layout alone --------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width,window,shift", [(8, 8, 4, 0), (8, 8, 4, 2), (12, 8, 4, 1), (14, 21, 7, 3),
                                                       (6, 6, 3, 1)])
def test_layout_is_the_swin_pattern_when_the_grid_fits(height, width, window, shift):
    layout = swin_layout(height, width, (window, window), (shift, shift))
    assert layout.padding_tokens == 0
    assert layout.pattern.equal(spattn.patterns.swin(height, width, window, shift))


def _timm_block_attention_weights(height, width, window, shift):
    """Dense [N, N + padding] 'who attends to whom' and relative-position index, from timm's own code."""
    from timm.models.swin_transformer import get_relative_position_index, window_partition
    padded_h, padded_w = -(-height // window) * window, -(-width // window) * window
    # Token ids carried through timm's roll + pad + partition; padding gets ids >= N.
    ids = torch.arange(height * width, dtype=torch.float64).view(1, height, width, 1)
    rolled = torch.roll(ids, shifts=(-shift, -shift), dims=(1, 2)) if shift else ids
    padded = torch.full((1, padded_h, padded_w, 1), -1.0, dtype=torch.float64)
    padded[:, :height, :width] = rolled
    pad_slots = (padded < 0).flatten().nonzero().flatten()
    padded.view(-1)[pad_slots] = torch.arange(len(pad_slots), dtype=torch.float64) + height * width
    windows = window_partition(padded, (window, window)).view(-1, window * window).long()
    region = torch.zeros(1, padded_h, padded_w, 1)
    if shift:
        count = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                region[:, hs, ws] = count
                count += 1
    region = window_partition(region, (window, window)).view(-1, window * window)
    index = get_relative_position_index(window, window)
    total = padded_h * padded_w
    allowed = torch.zeros(total, total, dtype=torch.bool)
    bias_index = torch.full((total, total), -1, dtype=torch.long)
    for w in range(windows.shape[0]):
        same = region[w][:, None] == region[w][None, :]
        q, k = windows[w][:, None].expand(-1, window * window), windows[w][None, :].expand(window * window, -1)
        allowed[q[same], k[same]] = True
        bias_index[q[same], k[same]] = index[same]
    return allowed[: height * width], bias_index[: height * width]


@pytest.mark.parametrize("height,width,window,shift", [(8, 8, 4, 2), (9, 9, 4, 2), (10, 13, 4, 1), (5, 7, 3, 0),
                                                       (40, 48, 7, 3), (7, 7, 7, 0)])
def test_layout_reproduces_roll_pad_partition_and_region_mask(height, width, window, shift):
    allowed, bias_index = _timm_block_attention_weights(height, width, window, shift)
    layout = swin_layout(height, width, (window, window), (shift, shift))
    assert torch.equal(layout.pattern.to_dense(), allowed)
    rows = torch.repeat_interleave(torch.arange(height * width), layout.pattern.row_lengths())
    assert torch.equal(layout.bias_index, bias_index[rows, layout.pattern.col_indices])


# ---- whole models ---------------------------------------------------------------------------------------

MODELS = [
    ("swin_tiny_patch4_window7_224", {}, 224, 2),
    ("swin_small_patch4_window7_224", {}, 224, 1),
    ("swin_base_patch4_window7_224", {}, 224, 1),
    ("swin_base_patch4_window12_384", {}, 384, 1),
    ("swin_tiny_patch4_window7_224", {"img_size": (160, 192)}, (160, 192), 2),
    ("swinv2_tiny_window8_256", {}, 256, 1),
]


@pytest.mark.parametrize("name,kwargs,size,batch", MODELS, ids=[f"{m[0]}-{m[2]}" for m in MODELS])
def test_converted_model_outputs_equal_timm(name, kwargs, size, batch):
    model = _model(name, **kwargs).eval()
    converted = spattn.timm.convert(copy.deepcopy(model))
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
        actual = converted(images)
    difference = (actual - expected).abs()
    print(f"{name} {size}: median {difference.median():.2e}, max {difference.max():.2e}")
    assert difference.max() < 1e-4


@pytest.mark.parametrize("name,kwargs,size", [("swin_tiny_patch4_window7_224", {}, 224),
                                              ("swin_tiny_patch4_window7_224", {"img_size": (160, 192)}, (160, 192)),
                                              ("swinv2_tiny_window8_256", {}, 256)])
def test_converted_model_gradients_equal_timm(name, kwargs, size):
    # No stochastic depth: both models must see the same network in training mode.
    model = _model(name, drop_path_rate=0.0, **kwargs).train()
    converted = spattn.timm.convert(copy.deepcopy(model))
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(2))
    for m in (model, converted):
        (m(images) ** 2).mean().backward()
    converted_parameters = dict(converted.named_parameters())
    for parameter_name, parameter in model.named_parameters():
        expected, actual = parameter.grad, converted_parameters[parameter_name].grad
        assert actual is not None, parameter_name
        error = (actual - expected).norm() / expected.norm().clamp_min(1e-12)
        assert error < 1e-4, f"{parameter_name}: relative gradient error {error:.2e}"


def test_no_timm_window_code_runs(monkeypatch):
    import timm.models.swin_transformer as swin_v1
    model = spattn.timm.convert(_model("swin_tiny_patch4_window7_224").eval())

    def forbidden(*args, **kwargs):
        raise AssertionError("timm window-attention code ran in the converted model")

    monkeypatch.setattr(swin_v1, "window_partition", forbidden)
    monkeypatch.setattr(swin_v1, "window_reverse", forbidden)
    monkeypatch.setattr(torch, "roll", forbidden)
    monkeypatch.setattr(swin_v1.WindowAttention, "forward", forbidden)
    monkeypatch.setattr(swin_v1.SwinTransformerBlock, "get_attn_mask", forbidden)
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert all(block.attn_mask is None for block in model.modules() if isinstance(block, swin_v1.SwinTransformerBlock))


def test_state_dict_loads_both_ways_and_patterns_are_shared():
    model = _model("swin_tiny_patch4_window7_224")
    converted = spattn.timm.convert(copy.deepcopy(model))
    assert list(model.state_dict()) == list(converted.state_dict())
    converted.load_state_dict(model.state_dict())
    model.load_state_dict(converted.state_dict())
    first = swin_layout(56, 56, (7, 7), (3, 3))
    assert swin_layout(56, 56, (7, 7), (3, 3)) is first


def test_convert_rejects_models_without_swin_blocks():
    with pytest.raises(ValueError, match="model"):
        spattn.timm.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        spattn.timm.convert("swin")


# ---- torch.compile ---------------------------------------------------------------------------------------

def _small_swin(name: str, image: int) -> torch.nn.Module:
    """A small model of the family (two stages, a shifted block in each), no stochastic depth."""
    kwargs = dict(img_size=image, embed_dim=16, depths=(2, 2), num_heads=(1, 2), drop_path_rate=0.0)
    if name.startswith("swinv2"):
        kwargs["window_size"] = 4
    return _model(name, **kwargs)


# Inductor is what users run; aot_eager traces the same graphs (Dynamo, AOT autograd) without generating code,
# which takes minutes on two cores.
@pytest.mark.parametrize("name,image,backend", [("swin_tiny_patch4_window7_224", 88, "inductor"),
                                                ("swinv2_tiny_window8_256", 40, "aot_eager")])
def test_compiled_fullgraph_equals_eager(name, image, backend):
    # 88 / 4 = 22 tokens a side, then 11: neither divides into windows of 7 (padding keys, region masks); the
    # layouts were built by convert, so the compiled model never runs an eager pass before tracing.
    model = _small_swin(name, image)
    spattn.timm._LAYOUTS.clear()  # none from other tests: convert must build what tracing reads
    converted = spattn.timm.convert(copy.deepcopy(model))
    compiled = torch.compile(converted, fullgraph=True, backend=backend)
    images = torch.randn(2, 3, image, image, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.eval()(images)
        actual = compiled.eval()(images)
    assert (actual - expected).abs().max() < 1e-4 * expected.abs().max()

    # One training step: the compiled converted model's gradients are timm's.
    model.train(), converted.train()
    (model(images) ** 2).mean().backward()
    (compiled(images) ** 2).mean().backward()
    converted_parameters = dict(converted.named_parameters())
    for parameter_name, parameter in model.named_parameters():
        actual_grad = converted_parameters[parameter_name].grad
        assert actual_grad is not None, parameter_name
        error = (actual_grad - parameter.grad).norm() / parameter.grad.norm().clamp_min(1e-12)
        assert error < 1e-4, f"{parameter_name}: relative gradient error {error:.2e}"


def test_compiled_fullgraph_names_a_size_it_has_no_layout_for():
    model = spattn.timm.convert(_model("swin_tiny_patch4_window7_224", img_size=56, embed_dim=16, depths=(2,),
                                       num_heads=(1,), dynamic_img_size=True)).eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    images = torch.randn(1, 3, 84, 84)  # not the configured 56: its layouts were never built
    with pytest.raises(Exception, match="no timm Swin layout for .21, 21"):
        with torch.no_grad():
            compiled(images)
    with torch.no_grad():
        expected = model(images)  # an eager pass builds them; now it compiles
        assert torch.allclose(compiled(images), expected, atol=1e-5)
