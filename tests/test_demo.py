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
