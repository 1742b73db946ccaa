"""torchvision Swin, Swin V2 and Video Swin converted to spattn give torchvision's outputs and gradients, at
sizes the windows divide and sizes they do not."""

from __future__ import annotations

import copy

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

import spattn  # noqa: E402
import spattn.torchvision  # noqa: E402
from spattn._windows import padded_window_layout  # noqa: E402
from torchvision.models import swin_transformer  # noqa: E402
from torchvision.models.video import swin_transformer as video_swin_transformer  # noqa: E402


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Clearly non-zero position biases and qkv biases (the key part too: Swin V2 must zero it itself), and
    logit scales on both sides of V2's clamp at log(100), so that a wrong index or term shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "relative_position_bias_table" in name or name.endswith("qkv.bias"):
                parameter.normal_(0.0, 1.0)
            elif "cpb_mlp" in name:
                parameter.normal_(0.0, 0.5)
            elif "logit_scale" in name:
                parameter.uniform_(1.0, 5.5)
    return module


def _model(builder) -> torch.nn.Module:
    torch.manual_seed(0)
    model = builder(weights=None)
    for module in model.modules():  # no stochastic depth: both models must be the same network in train mode
        if isinstance(module, torchvision.ops.StochasticDepth):
            module.p = 0.0
    return _randomise(model)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-12)).item()


def _assert_same_outputs_and_gradients(original, converted, inputs, tolerance=1e-4):
    for module in (original, converted):
        module.train()
        module.zero_grad(set_to_none=True)
    expected, actual = original(inputs), converted(inputs)
    assert _relative_error(actual, expected) < tolerance
    for module, out in ((original, expected), (converted, actual)):
        (out ** 2).mean().backward()
    converted_parameters = dict(converted.named_parameters())
    for name, parameter in original.named_parameters():
        expected_grad, actual_grad = parameter.grad, converted_parameters[name].grad
        assert actual_grad is not None, name
        error = (actual_grad - expected_grad).norm() / expected_grad.norm().clamp_min(1e-12)
        assert error < tolerance, f"{name}: relative gradient error {error:.2e}"


# ---- one attention layer: many grids, windows and shifts ---------------------------------------------------

CASES_2D = [((8, 8), 4, 2), ((9, 10), 4, 2), ((5, 7), 3, 1), ((13, 17), 7, 3),
            ((7, 7), 7, 3),   # the window covers the map: no shift
            ((3, 9), 4, 2),   # covers one axis only: shifted along the other
            ((4, 4), 7, 3)]   # padded up to one window


@pytest.mark.parametrize("grid,window,shift", CASES_2D)
@pytest.mark.parametrize("attention_class", [swin_transformer.ShiftedWindowAttention,
                                             swin_transformer.ShiftedWindowAttentionV2], ids=["v1", "v2"])
def test_attention_2d_equals_torchvision(attention_class, grid, window, shift):
    attention = _randomise(attention_class(16, [window, window], [shift, shift], num_heads=2))
    converted = spattn.torchvision.convert(copy.deepcopy(attention))
    inputs = torch.randn(2, *grid, 16, generator=torch.Generator().manual_seed(1))
    _assert_same_outputs_and_gradients(attention, converted, inputs)


CASES_3D = [((3, 24, 30), (8, 7, 7), (4, 3, 3)),  # time shrinks its window, height and width pad
            ((3, 3, 4), (8, 7, 7), (4, 3, 3)),    # every axis shrinks: the sliced bias index
            ((9, 5, 8), (4, 3, 3), (2, 1, 1)),
            ((4, 6, 6), (2, 3, 3), (1, 1, 1))]


@pytest.mark.parametrize("grid,window,shift", CASES_3D)
def test_attention_3d_equals_torchvision(grid, window, shift):
    attention = _randomise(video_swin_transformer.ShiftedWindowAttention3d(16, list(window), list(shift), 2))
    converted = spattn.torchvision.convert(copy.deepcopy(attention))
    inputs = torch.randn(1, *grid, 16, generator=torch.Generator().manual_seed(1))
    _assert_same_outputs_and_gradients(attention, converted, inputs)


def test_padding_tokens_are_keys_and_the_roll_moves_them():
    # 5 x 5 padded to 8 x 8, shifted by 2: the pattern has 64 - 25 padding keys, and a real token that the roll
    # brings next to the padding attends to some of it.
    layout = padded_window_layout((5, 5), (4, 4), (2, 2))
    assert layout.padding_tokens == 39 and layout.pattern.shape == (25, 64)
    assert (layout.pattern.col_indices >= 25).any()
    # Where the window divides the grid it is Swin's pattern.
    assert padded_window_layout((8, 12), (4, 4), (2, 2)).pattern.equal(spattn.patterns.swin(8, 12, 4, 2))
    assert padded_window_layout((8, 12), (4, 4), (2, 2)) is padded_window_layout((8, 12), (4, 4), (2, 2))


# ---- whole models -----------------------------------------------------------------------------------------

IMAGE_MODELS = [("swin_t", (200, 264)), ("swin_v2_t", (200, 264)),
                pytest.param("swin_t", (224, 224), marks=pytest.mark.slow),
                pytest.param("swin_v2_t", (256, 256), marks=pytest.mark.slow)]


@pytest.mark.parametrize("name,size", IMAGE_MODELS)
def test_image_model_equals_torchvision(name, size):
    model = _model(getattr(torchvision.models, name))
    converted = spattn.torchvision.convert(copy.deepcopy(model))
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    _assert_same_outputs_and_gradients(model, converted, images)


@pytest.mark.parametrize("clip", [(6, 96, 120), pytest.param((16, 224, 224), marks=pytest.mark.slow)])
def test_video_model_equals_torchvision(clip):
    model = _model(torchvision.models.video.swin3d_t)
    converted = spattn.torchvision.convert(copy.deepcopy(model))
    video = torch.randn(1, 3, *clip, generator=torch.Generator().manual_seed(3))
    _assert_same_outputs_and_gradients(model, converted, video)


@pytest.mark.parametrize("name,shape", [("swin_t", (1, 3, 200, 264)), ("swin_v2_t", (1, 3, 200, 264)),
                                        ("video.swin3d_t", (1, 3, 6, 96, 120))])
def test_bfloat16_autocast_follows_the_same_path(name, shape):
    builder = torchvision.models
    for part in name.split("."):
        builder = getattr(builder, part)
    model = _model(builder).eval()
    converted = spattn.torchvision.convert(copy.deepcopy(model))
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = model(inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, actual = model(inputs), converted(inputs)
    assert actual.dtype == expected.dtype
    # bf16 rounding differs between the two; both stay as close to the float32 output.
    assert _relative_error(actual, expected) < 2e-2
    assert _relative_error(actual, reference) < 2 * max(_relative_error(expected, reference), 1e-2)


# The b variants differ from the s ones only in width (slow to build: 88M parameters each).
@pytest.mark.parametrize("name,shape", [("swin_s", (1, 3, 64, 72)), ("swin_v2_s", (1, 3, 64, 72)),
                                        ("video.swin3d_s", (1, 3, 4, 64, 72)),
                                        pytest.param("swin_b", (1, 3, 64, 72), marks=pytest.mark.slow),
                                        pytest.param("swin_v2_b", (1, 3, 64, 72), marks=pytest.mark.slow),
                                        pytest.param("video.swin3d_b", (1, 3, 4, 64, 72), marks=pytest.mark.slow)])
def test_larger_variants_convert_and_match(name, shape):
    builder = torchvision.models
    for part in name.split("."):
        builder = getattr(builder, part)
    model = _model(builder).eval()
    converted = spattn.torchvision.convert(copy.deepcopy(model))
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert _relative_error(converted(inputs), model(inputs)) < 1e-4


def test_no_torchvision_window_code_runs(monkeypatch):
    image_model = spattn.torchvision.convert(_model(torchvision.models.swin_v2_t).eval())
    video_model = spattn.torchvision.convert(_model(torchvision.models.video.swin3d_t).eval())

    def forbidden(*args, **kwargs):
        raise AssertionError("torchvision window-attention code ran in the converted model")

    monkeypatch.setattr(swin_transformer, "shifted_window_attention", forbidden)
    monkeypatch.setattr(video_swin_transformer, "shifted_window_attention_3d", forbidden)
    monkeypatch.setattr(swin_transformer, "_get_relative_position_bias", forbidden)
    monkeypatch.setattr(video_swin_transformer, "_get_relative_position_bias", forbidden)
    monkeypatch.setattr(torch, "roll", forbidden)
    with torch.no_grad():
        image_model(torch.randn(1, 3, 72, 88))
        video_model(torch.randn(1, 3, 4, 72, 88))
    # And the check bites: the original models call it.
    with pytest.raises(AssertionError, match="window-attention"), torch.no_grad():
        _model(torchvision.models.swin_t)(torch.randn(1, 3, 64, 64))


def test_state_dict_loads_both_ways():
    model = _model(torchvision.models.swin_v2_t)
    converted = spattn.torchvision.convert(copy.deepcopy(model))
    assert list(model.state_dict()) == list(converted.state_dict())
    converted.load_state_dict(model.state_dict())
    model.load_state_dict(converted.state_dict())
    assert spattn.torchvision.convert(converted) is converted  # converting twice changes nothing


def test_convert_rejects_models_without_swin_attention():
    with pytest.raises(ValueError, match="model"):
        spattn.torchvision.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        spattn.torchvision.convert("swin_t")


# ---- torch.compile ----------------------------------------------------------------------------------------

def _tiny(kind: str) -> torch.nn.Module:
    # Windows of 4 pad both stages (36 x 44 images: 18 x 22 then 9 x 11 tokens; 6 x 36 x 44 clips: 3 x 9 x 11
    # then 3 x 5 x 6 with windows of 2 x 4 x 4); shifted blocks in both.
    torch.manual_seed(0)
    common = dict(embed_dim=16, depths=[2, 2], num_heads=[2, 4], stochastic_depth_prob=0.0, num_classes=10)
    if kind == "video":
        return _randomise(video_swin_transformer.SwinTransformer3d(patch_size=[2, 4, 4], window_size=[2, 4, 4],
                                                                   **common))
    v2 = dict(block=swin_transformer.SwinTransformerBlockV2, downsample_layer=swin_transformer.PatchMergingV2)
    return _randomise(swin_transformer.SwinTransformer(patch_size=[2, 2], window_size=[4, 4], **common,
                                                       **(v2 if kind == "v2" else {})))


@pytest.mark.parametrize("kind,shape", [("v1", (2, 3, 36, 44)), ("v2", (2, 3, 36, 44)),
                                        ("video", (1, 3, 6, 36, 44))])
def test_compiled_fullgraph_equals_eager(kind, shape):
    # aot_eager traces what inductor would compile (Dynamo, AOT autograd) without generating code.
    model = _tiny(kind)
    eager = spattn.torchvision.convert(copy.deepcopy(model))
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = model.eval()(inputs)
        eager.eval()(inputs)  # builds the layouts of this size: torchvision models record no input size
    converted = copy.deepcopy(eager)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert _relative_error(compiled.eval()(inputs), expected) < 1e-4
    # One training step: the compiled model's gradients are the eager converted model's (and so torchvision's).
    eager.train(), converted.train()
    (eager(inputs) ** 2).mean().backward()
    (compiled(inputs) ** 2).mean().backward()
    compiled_parameters = dict(converted.named_parameters())
    for name, parameter in eager.named_parameters():
        error = (compiled_parameters[name].grad - parameter.grad).norm() / parameter.grad.norm().clamp_min(1e-12)
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"
