"""`spattn demo` end to end, shortened: equal outputs, a table, the pictures."""

from __future__ import annotations

import pytest

pytest.importorskip("timm")
pytest.importorskip("matplotlib")

from spattn.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_demo_writes_table_and_pictures(tmp_path, capsys):
    assert main(["demo", "--device", "cpu", "--batch-size", "1", "--rounds", "1", "--out", str(tmp_path),
                 "--floor"]) == 0
    printed = capsys.readouterr().out
    assert "spattn / timm" in printed and "no attention" in printed and "With attention for free" in printed
    difference = float(printed.split("output difference: max ")[1].split(",")[0])
    assert difference < 1e-4
    for name in ("swin_pattern.png", "swin_attention_maps_shifted.png", "swin_timing.png", "swin_table.md"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_info_prints_the_build():
    assert main(["info"]) == 0


@pytest.mark.parametrize("spec,size,picture", [("torchvision:swin_t", "72x88", "swin_pattern.png"),
                                               ("torchvision:swin3d_t", "4x64x72",
                                                "video_swin_attention_maps_shifted.png")])
def test_demo_runs_torchvision_models(tmp_path, capsys, spec, size, picture):
    pytest.importorskip("torchvision")
    assert main(["demo", "--model", spec, "--size", size, "--device", "cpu", "--batch-size", "1", "--rounds", "1",
                 "--out", str(tmp_path), "--floor", "--no-memory"]) == 0
    printed = capsys.readouterr().out
    assert "spattn / torchvision" in printed and "With attention for free" in printed
    assert f"{'clip' if 'swin3d' in spec else 'image'} {size}" in printed
    assert float(printed.split("output difference: max ")[1].split(",")[0]) < 1e-4
    assert (tmp_path / picture).stat().st_size > 0


def test_model_specs_name_their_source():
    from spattn import demo

    assert demo._load_model("swin_tiny_patch4_window7_224").baseline == "timm"
    loaded = demo._load_model("timm:swin_tiny_patch4_window7_224", batch_size=2, size=(64, 96))
    assert loaded.baseline == "timm" and tuple(loaded.inputs.shape) == (2, 3, 64, 96)
    with pytest.raises(SystemExit, match="unknown model source 'keras'"):
        demo._load_model("keras:swin")
    with pytest.raises(SystemExit, match="no Swin model 'resnet50'"):
        demo._load_model("torchvision:resnet50")
