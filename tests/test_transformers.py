"""Hugging Face Swin and Swinv2 models converted to spattn give the originals' outputs and gradients.

Small randomly initialised models (nothing downloaded): narrow configurations of the tiny models' shape, with
relative position bias tables drawn from N(0, 1) so that a wrong index shows.
"""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

import spattn  # noqa: E402
import spattn.transformers  # noqa: E402
from transformers import (SwinBackbone, SwinConfig, SwinForImageClassification, SwinModel,  # noqa: E402
                          Swinv2Backbone, Swinv2Config, Swinv2ForImageClassification, Swinv2Model)

# kind -> (config class, model class, classifier class, backbone class, standard image size, window)
KINDS = {"swin": (SwinConfig, SwinModel, SwinForImageClassification, SwinBackbone, (224, 224), 7),
         "swinv2": (Swinv2Config, Swinv2Model, Swinv2ForImageClassification, Swinv2Backbone, (256, 256), 8)}


def _config(kind: str, **overrides):
    config_class, _, _, _, size, window = KINDS[kind]
    # The tiny models' depth and window, narrower; no stochastic depth, so train mode is deterministic.
    arguments = dict(image_size=size, patch_size=4, window_size=window, embed_dim=16, depths=[2, 2, 2, 2],
                     num_heads=[1, 2, 2, 4], drop_path_rate=0.0, num_labels=10)
    arguments.update(overrides)
    return config_class(**arguments)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_(0.0, 1.0)
            elif "logit_scale" in name:
                parameter.uniform_(1.0, 3.0)
            elif "continuous_position_bias_mlp" in name:
                parameter.normal_(0.0, 0.5)  # a position bias far from constant
    return model


def _model(kind: str, which: int = 1, **overrides) -> torch.nn.Module:
    """which: 1 the bare model, 2 the image classifier, 3 the backbone."""
    torch.manual_seed(0)
    return _randomised(KINDS[kind][which](_config(kind, **overrides)))


def _images(size, batch: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def _loss(output) -> torch.Tensor:
    """A fixed random projection of the last hidden state (its mean square is ~1 whatever the input: layer norm)."""
    hidden = output.last_hidden_state
    weights = torch.randn(hidden.shape[1:], generator=torch.Generator().manual_seed(3))
    return (hidden * weights).sum() / hidden.shape[0]


def _assert_gradients_equal(model, converted, tolerance: float = 1e-4) -> None:
    converted_parameters = dict(converted.named_parameters())
    gradients = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    # The key bias of V1 has no gradient in exact arithmetic (it adds the same q.b to every score of a row,
    # padding keys included): there both gradients are rounding noise, to be compared with the others' scale.
    noise = 1e-6 * max(gradient.norm() for gradient in gradients.values())
    for name, expected in gradients.items():
        actual = converted_parameters[name].grad
        assert actual is not None, name
        error = (actual - expected).norm() / expected.norm().clamp_min(noise)
        assert error < tolerance, f"{name}: relative gradient error {error:.2e}"


# Standard sizes, and 200 x 264: 50 x 66 patches, then 25 x 33, 13 x 17, 7 x 9 (V1's last stage: no shift).
SIZES = [("swin", (224, 224)), ("swin", (200, 264)), ("swinv2", (256, 256)), ("swinv2", (200, 264))]


@pytest.mark.parametrize("kind,size", SIZES, ids=[f"{k}-{h}x{w}" for k, (h, w) in SIZES])
def test_outputs_and_gradients_equal_the_original(kind, size):
    model = _model(kind).train()
    converted = spattn.transformers.convert(copy.deepcopy(model))
    images = _images(size)
    expected, actual = model(images), converted(images)
    for field in ("last_hidden_state", "pooler_output"):
        assert _relative_error(actual[field].detach(), expected[field].detach()) < 1e-4, field
    _loss(expected).backward()
    _loss(actual).backward()
    _assert_gradients_equal(model, converted)


@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_small_grids_follow_the_original(kind):
    # 32 x 40 images: 8 x 10 patches with windows of 4, then 4 x 5, where V1's set_shift_and_window_size turns
    # the shift off (and keeps it off for later inputs, in both models); 36 x 44: 9 x 11, padded to 12 x 12.
    model = _model(kind, image_size=(32, 40), window_size=4, depths=[2, 2], num_heads=[1, 2]).eval()
    converted = spattn.transformers.convert(copy.deepcopy(model))
    with torch.no_grad():
        for size in ((32, 40), (36, 44), (64, 64)):
            expected = model(_images(size)).last_hidden_state
            assert _relative_error(converted(_images(size)).last_hidden_state, expected) < 1e-4, size
    for original, spattn_layer in zip(model.modules(), converted.modules()):
        if hasattr(original, "shift_size"):
            assert (original.window_size, original.shift_size) == (spattn_layer.window_size, spattn_layer.shift_size)


@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_bf16_autocast(kind):
    model = _model(kind, image_size=(64, 64), window_size=4, depths=[2, 2], num_heads=[1, 2]).eval()
    converted = spattn.transformers.convert(copy.deepcopy(model))
    images = _images((56, 72))
    with torch.no_grad():
        exact = model(images).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model(images).last_hidden_state
            actual = converted(images).last_hidden_state
    assert actual.dtype == expected.dtype
    # bf16 keeps 8 bits: the converted model is as close to the float32 result as the original is.
    assert _relative_error(actual.float(), exact) < max(3 * _relative_error(expected.float(), exact), 2e-2)


@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_models_embedding_the_encoder(kind):
    size = (64, 80)
    overrides = dict(image_size=size, window_size=4, depths=[2, 2], num_heads=[1, 2])
    classifier = _model(kind, 2, **overrides).eval()
    backbone = _model(kind, 3, out_features=["stage1", "stage2"], **overrides).eval()
    wrapper = torch.nn.Sequential(_model(kind, 1, **overrides)).eval()  # any module holding a Swin model
    images = _images(size)
    with torch.no_grad():
        for original, read in ((classifier, lambda out: [out.logits]), (backbone, lambda out: list(out.feature_maps)),
                               (wrapper, lambda out: [out.last_hidden_state])):
            converted = spattn.transformers.convert(copy.deepcopy(original))
            for actual, expected in zip(read(converted(images)), read(original(images)), strict=True):
                assert _relative_error(actual, expected) < 1e-4, type(original).__name__


@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_asking_for_attention_weights_raises(kind):
    # (Hugging Face refuses config.output_attentions with SDPA attention: ask for the eager kind.)
    model = spattn.transformers.convert(_model(kind, image_size=(32, 32), window_size=4, depths=[2],
                                               num_heads=[1], attn_implementation="eager").eval())
    images = _images((32, 32), batch=1)
    with torch.no_grad():
        model(images)  # without: fine
        with pytest.raises(ValueError, match="output_attentions"):
            model(images, output_attentions=True)
        model.config.output_attentions = True
        with pytest.raises(ValueError, match="output_attentions"):
            model(images)


def test_no_hugging_face_window_code_runs(monkeypatch):
    from transformers.models.swin import modeling_swin
    from transformers.models.swinv2 import modeling_swinv2

    models = [spattn.transformers.convert(_model(kind, image_size=(36, 44), window_size=4, depths=[2, 2],
                                                 num_heads=[1, 2]).eval()) for kind in KINDS]

    def forbidden(*args, **kwargs):
        raise AssertionError("Hugging Face window-attention code ran in the converted model")

    for module in (modeling_swin, modeling_swinv2):
        monkeypatch.setattr(module, "window_partition", forbidden)
        monkeypatch.setattr(module, "window_reverse", forbidden)
    monkeypatch.setattr(torch, "roll", forbidden)
    monkeypatch.setattr(modeling_swin.SwinAttention, "forward", forbidden)
    monkeypatch.setattr(modeling_swin.SwinLayer, "get_attn_mask", forbidden)
    monkeypatch.setattr(modeling_swinv2.Swinv2SelfAttention, "forward", forbidden)
    monkeypatch.setattr(modeling_swinv2.Swinv2Layer, "get_attn_mask", forbidden)
    with torch.no_grad():
        for model in models:
            model(_images((36, 44), batch=1))


@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_state_dict_and_parameters_stay(kind):
    model = _model(kind, 2, image_size=(32, 32), window_size=4, depths=[2], num_heads=[1])
    converted = spattn.transformers.convert(copy.deepcopy(model))
    assert list(model.state_dict()) == list(converted.state_dict())
    assert [name for name, _ in model.named_parameters()] == [name for name, _ in converted.named_parameters()]
    converted.load_state_dict(model.state_dict())
    model.load_state_dict(converted.state_dict())
    assert spattn.transformers.convert(converted) is converted  # converting twice changes nothing


def test_convert_rejects_models_without_swin_layers():
    with pytest.raises(ValueError, match="model"):
        spattn.transformers.convert(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        spattn.transformers.convert("swin")


def test_demo_model():
    model, images = spattn.transformers.demo_model("swinv2", batch_size=2, image_size=(64, 64))
    assert isinstance(model.classifier, Swinv2ForImageClassification) and images.shape == (2, 3, 64, 64)
    converted = spattn.transformers.convert(copy.deepcopy(model))
    with torch.no_grad():
        expected = model(images)
        assert expected.shape == (2, 1000)
        assert _relative_error(converted(images), expected) < 1e-4
    with pytest.raises(ValueError, match="name"):
        spattn.transformers.demo_model("vit")


# ---- torch.compile ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["swin", "swinv2"])
def test_compiled_fullgraph_equals_eager(kind):
    # 36 x 44 images: 9 x 11 patches padded to 12 x 12 windows of 4, then 5 x 6. The layouts of the configured
    # size were built by convert: the compiled model runs no eager pass before tracing. aot_eager traces what
    # inductor would compile (Dynamo, AOT autograd) without generating code (minutes on two cores).
    model = _model(kind, image_size=(36, 44), window_size=4, depths=[2, 2], num_heads=[1, 2])
    spattn.transformers._LAYOUTS.clear()  # none from other tests: convert must build what tracing reads
    eager = spattn.transformers.convert(copy.deepcopy(model))
    converted = copy.deepcopy(eager)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    images = _images((36, 44))
    with torch.no_grad():
        expected = model.eval()(images).last_hidden_state
        actual = compiled.eval()(images).last_hidden_state
    assert _relative_error(actual, expected) < 1e-4

    # One training step, against the converted model in eager mode. (Against the original, V2's logit scale of
    # a block whose windows are mostly padding is off by 2e-4 here in float32: so is the original's, from the
    # float64 gradient. test_outputs_and_gradients_equal_the_original holds eager mode to the original.)
    eager.train(), converted.train()
    _loss(eager(images)).backward()
    _loss(compiled(images)).backward()
    _assert_gradients_equal(eager, converted)


@pytest.mark.slow  # ~30 s: the demo times a tiny-sized model
def test_demo_runs_transformers_models(tmp_path, capsys):
    # (Hugging Face's Swin fails on grids below its window, as 64 x 80 images give in the last stage.)
    pytest.importorskip("matplotlib")
    from spattn import demo
    from spattn.cli import main

    assert main(["demo", "--model", "transformers:swin", "--size", "200x264", "--device", "cpu", "--batch-size", "1",
                 "--rounds", "1", "--out", str(tmp_path), "--no-memory"]) == 0
    printed = capsys.readouterr().out
    assert "spattn / transformers" in printed
    assert float(printed.split("output difference: max ")[1].split(",")[0]) < 1e-4
    with pytest.raises(SystemExit, match="transformers:vit"):
        demo._load_model("transformers:vit")
