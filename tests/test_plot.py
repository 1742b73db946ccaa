"""spattn.plot and `spattn show`: pictures are written as non-empty PNGs, without a display; large patterns
are drawn from CSR (never N x N); bad arguments give named errors."""

import sys

import numpy as np
import pytest
import torch

from spattn import Pattern, patterns

pytest.importorskip("matplotlib")

from spattn import plot  # noqa: E402
from spattn.cli import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, f"{path} is not a non-empty PNG"


# ---- plot functions ------------------------------------------------------------------------------------------
def test_plot_pattern_matrix_only(tmp_path):
    figure = plot.plot_pattern(patterns.causal_1d(20), path=tmp_path / "causal.png")
    assert type(figure).__name__ == "Figure"
    assert_png(tmp_path / "causal.png")


def test_plot_pattern_with_query_maps(tmp_path):
    figure = plot.plot_pattern(patterns.swin(8, 8, 4, 2), grid=(8, 8), path=tmp_path / "swin.png")
    assert_png(tmp_path / "swin.png")
    assert "all 64 queries" in _titles(figure)


def test_plot_pattern_returns_a_figure_without_saving():
    figure = plot.plot_pattern(patterns.axial_2d(3, 4), grid=(3, 4))
    assert len(_axes(figure)) >= 2


def test_large_grids_draw_a_named_subset_of_queries(tmp_path):
    figure = plot.plot_pattern(patterns.local_2d(32, 24, 3.0), grid=(32, 24), path=tmp_path / "local.png",
                               max_queries=16)
    assert_png(tmp_path / "local.png")
    assert "of 768 queries" in _titles(figure)


def test_large_pattern_is_drawn_downsampled(tmp_path):
    pattern = patterns.swin(128, 128, 8, 4)
    figure = plot.plot_pattern(pattern, grid=(128, 128), path=tmp_path / "big.png")
    assert_png(tmp_path / "big.png")
    assert "downsampled" in _titles(figure)


def test_plot_swin_side_by_side(tmp_path):
    figure = plot.plot_swin(8, 8, 4, 2, path=tmp_path / "swin.png")
    assert_png(tmp_path / "swin.png")
    titles = _titles(figure)
    assert "no shift" in titles and "shift 2" in titles


def test_plot_swin_default_shift_is_half_the_window_and_pairs_work(tmp_path):
    assert "shift 2" in _titles(plot.plot_swin(8, 8, 4))
    plot.plot_swin(6, 9, (3, 3), (1, 2), path=tmp_path / "pairs.png")
    assert_png(tmp_path / "pairs.png")


@pytest.mark.parametrize("pattern", [Pattern.from_dense(torch.zeros(0, 0, dtype=torch.bool)),
                                     Pattern.from_dense(torch.zeros(3, 5, dtype=torch.bool)),
                                     patterns.random(7, 300, 0.2), patterns.local_1d(1, 1)],
                         ids=["0x0", "no-entries", "wide", "1x1"])
def test_edge_shapes_draw(pattern, tmp_path):
    plot.plot_pattern(pattern, path=tmp_path / "edge.png")
    assert_png(tmp_path / "edge.png")


def test_non_square_pattern_with_key_grid(tmp_path):
    # Rows are not grid tokens: the maps are for evenly spaced rows, with no query mark.
    plot.plot_pattern(patterns.random(10, 12, 0.3), grid=(3, 4), path=tmp_path / "keys.png")
    assert_png(tmp_path / "keys.png")


def test_pattern_image_is_exact_when_small_and_block_fractions_when_downsampled():
    pattern = patterns.random(40, 60, 0.3, seed=3)
    dense = pattern.to_dense().numpy()
    assert np.array_equal(plot.pattern_image(pattern), dense.astype(float))
    image = plot.pattern_image(pattern, max_pixels=20)
    assert image.shape == (20, 20)
    assert np.allclose(image, dense.reshape(20, 2, 20, 3).mean(axis=(1, 3)))


def test_pattern_image_of_a_big_pattern_stays_small():
    image = plot.pattern_image(patterns.swin(256, 256, 8, 4), max_pixels=128)
    assert image.shape == (128, 128)
    # Each pixel covers 512 x 512 tokens; the whole image still counts every entry.
    assert image.sum() * 512 * 512 == pytest.approx(4_064_256)


def test_query_map():
    pattern = patterns.swin(8, 8, 4, 0)
    expected = np.zeros((8, 8), dtype=bool)
    expected[4:8, 0:4] = True
    assert np.array_equal(plot.query_map(pattern, 5 * 8 + 1, (8, 8)), expected)


@pytest.mark.parametrize("call, error, name", [
    (lambda: plot.plot_pattern(patterns.causal_1d(9), grid=(2, 4)), ValueError, "grid"),
    (lambda: plot.plot_pattern(patterns.causal_1d(9), grid=9), TypeError, "grid"),
    (lambda: plot.plot_pattern(patterns.causal_1d(9), grid=(3, 3.0)), TypeError, r"grid\[1\]"),
    (lambda: plot.plot_pattern(torch.ones(3, 3, dtype=torch.bool)), TypeError, "pattern"),
    (lambda: plot.plot_pattern(patterns.causal_1d(4), max_queries=0), ValueError, "max_queries"),
    (lambda: plot.query_map(patterns.causal_1d(4), 4, (2, 2)), ValueError, "query"),
    (lambda: plot.plot_swin(8, 8, 4, 4), ValueError, "shift_size"),
], ids=["grid-size", "grid-int", "grid-float", "not-a-pattern", "max-queries", "query-range", "swin-shift"])
def test_bad_plot_arguments(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_missing_matplotlib_gives_the_install_hint(monkeypatch):
    # None in sys.modules makes `import matplotlib...` raise ImportError, as when it is not installed.
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'spattn\[plot\]'"):
        plot.plot_pattern(patterns.causal_1d(3))


# ---- spattn show ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arguments", [
    ["swin", "--grid", "8", "8", "--window", "4", "--shift", "2"],
    ["swin", "--grid", "6", "9", "--window", "3", "--shift", "1", "2"],
    ["local_2d", "--grid", "16", "16", "--distance", "3"],
    ["local_2d", "--grid", "5", "7", "--distance", "2", "--p", "inf"],
    ["axial_2d", "--grid", "5", "6"],
    ["dilated_2d", "--grid", "9", "9", "--k", "3"],
    ["local_1d", "--n", "30", "--window", "5"],
    ["local_1d", "--grid", "4", "4", "--window", "3"],
    ["causal_1d", "--n", "12", "--no-maps"],
    ["global_tokens", "--grid", "6", "6", "--globals", "0", "7"],
    ["random", "--n", "50", "--density", "0.1", "--seed", "3"],
    ["block", "--layout", "110,111,011", "--block-size", "4"],
], ids=lambda arguments: "-".join(arguments[:1] + arguments[1:3]))
def test_show_writes_a_png(arguments, tmp_path, capsys):
    out = tmp_path / "pattern.png"
    assert main(["show", *arguments, "--out", str(out)]) == 0
    assert_png(out)
    printed = capsys.readouterr().out
    assert "nnz" in printed and "density" in printed and "shape" in printed


def test_show_prints_the_summary(tmp_path, capsys):
    assert main(["show", "swin", "--grid", "8", "8", "--window", "4", "--shift", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert "swin: shape 64 x 64, nnz 576, density 14.0625%" in capsys.readouterr().out


def test_show_default_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["show", "axial_2d", "--grid", "3", "3"]) == 0
    assert_png(tmp_path / "axial_2d.png")


@pytest.mark.parametrize("arguments, message", [
    (["swin", "--grid", "8", "8", "--window", "4", "--shift", "4"], "shift_size"),
    (["swin", "--grid", "8", "8", "--window", "4", "2", "1"], "--window"),
    (["swin", "--grid", "0", "8", "--window", "1"], r"\bH\b"),
    (["random", "--n", "10", "--density", "2"], "density"),
    (["causal_1d"], "--n"),
    (["local_1d", "--n", "10", "--grid", "3", "3", "--window", "3"], "--grid"),
    (["global_tokens", "--n", "4", "--globals", "9"], "--globals"),
    (["block", "--layout", "12,01", "--block-size", "2"], "--layout"),
    (["block", "--layout", "10,01", "--block-size", "0"], "block_size"),
    (["block", "--layout", "10,01", "--block-size", "2", "--grid", "3", "3"], "grid"),
], ids=["shift", "window-values", "grid-zero", "density", "no-size", "n-vs-grid", "globals", "layout",
        "block-size", "plot-grid"])
def test_show_reports_bad_values_without_a_traceback(arguments, message, tmp_path, capsys):
    assert main(["show", *arguments, "--out", str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert "error" in error and "Traceback" not in error
    assert __import__("re").search(message, error), error
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("arguments", [
    [], ["nonexistent"], ["swin", "--window", "4"], ["swin", "--grid", "8", "--window", "4"],
    ["swin", "--grid", "8", "8", "--window", "x"], ["local_2d", "--grid", "4", "4"],
], ids=["no-generator", "unknown-generator", "no-grid", "grid-one-value", "window-not-int", "no-distance"])
def test_show_argparse_errors_exit_2(arguments, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["show", *arguments])
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def _axes(figure):
    """Every Axes of a figure, subfigures included."""
    found = list(figure.axes)
    for subfigure in getattr(figure, "subfigs", []):
        found += _axes(subfigure)
    return found


def _titles(figure):
    texts = [ax.get_title() for ax in _axes(figure)]
    texts += [sub._suptitle.get_text() for sub in [figure] if getattr(sub, "_suptitle", None) is not None]
    return "\n".join(texts)
