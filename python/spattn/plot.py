"""Pictures of patterns: the pattern matrix and, on a 2-D grid, each query's attention map (the pictures of
the xformers Swin notebook). matplotlib is optional (``pip install 'spattn[plot]'``); figures are built
without pyplot, so nothing needs a display and no global figure state is left behind."""

from __future__ import annotations

import math

import numpy as np

from . import _checks
from .pattern import Pattern

__all__ = ["plot_pattern", "plot_swin", "pattern_image", "query_map"]

# Viridis' ends, as in the notebook's imshow(mask): not attended / attended; the query itself in red.
_NOT_ATTENDED = (0.267, 0.005, 0.329)
_ATTENDED = (0.993, 0.906, 0.144)
_QUERY = (0.894, 0.102, 0.110)
_GAP = (1.0, 1.0, 1.0)
# Cell borders beyond this many cells per axis would merge into a grey smear.
_MAX_GRID_LINES = 32
# Entries are binned this many at a time, so that drawing a huge pattern needs bounded extra memory.
_ENTRY_CHUNK = 1 << 22
# Query maps side by side span at most this many grid cells per axis (about 1,400 pixels).
_MAX_MOSAIC_CELLS = 720
# Height of the matrix panel.
_MATRIX_INCHES = 6.0


def _matplotlib():
    """The matplotlib pieces we draw with, or an ImportError saying how to install them."""
    try:
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("spattn's plots need matplotlib: pip install 'spattn[plot]'") from error
    return Figure, LineCollection


def _check_pattern(pattern) -> Pattern:
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a spattn.Pattern, got {type(pattern).__name__}")
    return pattern.cpu()


def _check_grid(grid, pattern: Pattern) -> tuple[int, int]:
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"grid must be a pair (H, W), got {grid!r}")
    height, width = _checks.as_int(grid[0], "grid[0]", 1), _checks.as_int(grid[1], "grid[1]", 1)
    if height * width != pattern.shape[1]:
        raise ValueError(f"grid: H x W = {height} x {width} = {height * width} must equal the number of keys "
                         f"(columns) of the pattern, {pattern.shape[1]}")
    return height, width


def _bin_edges(size: int, bins: int) -> np.ndarray:
    """Where each of ``bins`` equal bins over ``size`` items starts (``bins + 1`` values): bin ``b`` holds
    the items ``x`` with ``x * bins // size == b``."""
    return np.array([-(-(b * size) // bins) for b in range(bins + 1)], dtype=np.int64)


def pattern_image(pattern: Pattern, max_pixels: int = 256) -> np.ndarray:
    """The pattern as an image of at most ``max_pixels`` per side: float64 ``[R, C]`` with
    ``R = min(n_rows, max_pixels)``, ``C = min(n_cols, max_pixels)``; each pixel holds the fraction of its
    block of the matrix that is set (exactly 0 or 1 when the pattern is not downsampled).

    Built from CSR in time proportional to ``nnz``: never an ``n_rows x n_cols`` array."""
    pattern = _check_pattern(pattern)
    max_pixels = _checks.as_int(max_pixels, "max_pixels", 1)
    n_rows, n_cols = pattern.shape
    bins_r, bins_c = min(n_rows, max_pixels), min(n_cols, max_pixels)
    counts = np.zeros(bins_r * bins_c, dtype=np.int64)
    offsets = pattern.row_offsets.numpy()
    columns = pattern.col_indices.numpy()
    for start in range(0, pattern.nnz, _ENTRY_CHUNK):
        entries = np.arange(start, min(start + _ENTRY_CHUNK, pattern.nnz), dtype=np.int64)
        rows = np.searchsorted(offsets, entries, side="right") - 1
        flat = (rows * bins_r // n_rows) * bins_c + columns[entries] * bins_c // n_cols
        counts += np.bincount(flat, minlength=bins_r * bins_c)
    cells = np.outer(np.diff(_bin_edges(n_rows, bins_r)), np.diff(_bin_edges(n_cols, bins_c)))
    return counts.reshape(bins_r, bins_c) / np.maximum(cells, 1)


def query_map(pattern: Pattern, query: int, grid) -> np.ndarray:
    """Which keys query row ``query`` attends to, as a bool ``[H, W]`` image of the key grid."""
    pattern = _check_pattern(pattern)
    height, width = _check_grid(grid, pattern)
    query = _checks.as_int(query, "query", 0)
    if query >= pattern.shape[0]:
        raise ValueError(f"query must be < n_rows = {pattern.shape[0]}, got {query}")
    offsets = pattern.row_offsets
    image = np.zeros(height * width, dtype=bool)
    image[pattern.col_indices[int(offsets[query]):int(offsets[query + 1])].numpy()] = True
    return image.reshape(height, width)


def _summary(pattern: Pattern) -> str:
    return f"{pattern.shape[0]} x {pattern.shape[1]}, nnz {pattern.nnz:,}, density {pattern.density:.2%}"


def _draw_matrix(figure_or_subfigure, pattern: Pattern, title: str | None, max_pixels: int) -> None:
    ax = figure_or_subfigure.add_subplot(1, 1, 1)
    n_rows, n_cols = pattern.shape
    heading = _summary(pattern) if title is None else f"{title}\n{_summary(pattern)}"
    if pattern.nnz == 0 or n_rows == 0 or n_cols == 0:
        ax.text(0.5, 0.5, "no entries", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(heading, fontsize=10)
        return
    image = pattern_image(pattern, max_pixels)
    downsampled = image.shape != pattern.shape
    # A sparse pattern's blocks are mostly empty: scale to the densest block so that structure shows.
    brightest = float(image.max()) if downsampled else 1.0
    # The extent keeps the axes in token indices even when one pixel stands for a block of tokens.
    shown = ax.imshow(image, cmap="viridis", vmin=0.0, vmax=brightest, interpolation="nearest",
                      extent=(-0.5, n_cols - 0.5, n_rows - 0.5, -0.5), aspect="equal" if n_rows == n_cols else "auto")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    if downsampled:
        heading += f"\n(downsampled to {image.shape[0]} x {image.shape[1]} pixels)"
        figure_or_subfigure.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the block's entries set")
    ax.set_title(heading, fontsize=10)


def _chosen_queries(size: int, count: int) -> np.ndarray:
    """``count`` coordinates spread evenly over ``[0, size)``. From three on both ends are included, so the
    border cases show and the spacing rarely matches a window's period; one or two take the middles of
    equal parts (a corner alone is the least typical token)."""
    if count <= 2:
        return np.unique(((2 * np.arange(count) + 1) * size) // (2 * count))
    return np.unique(np.linspace(0, size - 1, count).round().astype(np.int64))


def _query_layout(pattern: Pattern, height: int, width: int, max_queries: int):
    """The queries to draw, as a 2-D array laid out like the picture (grid positions when rows are grid
    tokens; -1 where there is none), and a phrase saying which ones they are."""
    n_rows = pattern.shape[0]
    # Few enough maps per axis that each cell of a map still gets a pixel or more.
    fit_across = max(1, _MAX_MOSAIC_CELLS // (width + _gap(height, width)))
    fit_down = max(1, _MAX_MOSAIC_CELLS // (height + _gap(height, width)))
    if n_rows == height * width:
        if n_rows <= max_queries and height <= fit_down and width <= fit_across:
            return np.arange(n_rows).reshape(height, width), f"all {n_rows} queries"
        # Keep the grid's aspect ratio so the chosen queries still look like a grid.
        per_column = max(1, min(height, fit_down, round(math.sqrt(max_queries * height / width))))
        per_row = max(1, min(width, fit_across, max_queries // per_column))
        rows, cols = _chosen_queries(height, per_column), _chosen_queries(width, per_row)
        layout = rows[:, None] * width + cols[None, :]
        return layout, (f"{layout.size} of {n_rows} queries: grid rows {_listing(rows)}, "
                        f"columns {_listing(cols)}")
    count = min(n_rows, max_queries, fit_across * fit_down)
    chosen = _chosen_queries(n_rows, count) if count else np.zeros(0, dtype=np.int64)
    per_row = max(1, min(fit_across, math.ceil(math.sqrt(chosen.size))))
    layout = np.full(per_row * max(1, math.ceil(chosen.size / per_row)), -1, dtype=np.int64)
    layout[:chosen.size] = chosen
    which = f"all {n_rows} queries" if chosen.size == n_rows else f"{chosen.size} of {n_rows} queries, evenly spaced"
    return layout.reshape(-1, per_row), which


def _gap(height: int, width: int) -> int:
    """White cells between two maps: a quarter of a small map, a tenth of a large one."""
    longest = max(height, width)
    return max(1, round(longest / 4) if longest <= _MAX_GRID_LINES else round(longest / 10))


def _listing(values: np.ndarray) -> str:
    return ", ".join(str(v) for v in values) if values.size <= 8 else f"{values[0]}, {values[1]}, ..., {values[-1]}"


def _query_mosaic(pattern: Pattern, layout: np.ndarray, height: int, width: int) -> np.ndarray:
    """One RGB image holding every query's map in its place of ``layout``, separated by white gaps."""
    gap = _gap(height, width)
    tiles_down, tiles_across = layout.shape
    mosaic = np.empty((tiles_down * (height + gap) - gap, tiles_across * (width + gap) - gap, 3))
    mosaic[:] = _GAP
    for (a, b), query in np.ndenumerate(layout):
        if query < 0:
            continue
        attended = query_map(pattern, int(query), (height, width))
        tile = np.where(attended[..., None], _ATTENDED, _NOT_ATTENDED)
        if _rows_are_grid_tokens(pattern, height, width):
            tile[query // width, query % width] = _QUERY
        top, left = a * (height + gap), b * (width + gap)
        mosaic[top:top + height, left:left + width] = tile
    return mosaic


def _rows_are_grid_tokens(pattern: Pattern, height: int, width: int) -> bool:
    return pattern.shape[0] == height * width


def _cell_borders(layout: np.ndarray, height: int, width: int) -> list:
    """Line segments around every cell of every map (the notebook's grid lines)."""
    gap = _gap(height, width)
    segments = []
    for (a, b), query in np.ndenumerate(layout):
        if query < 0:
            continue
        top, left = a * (height + gap) - 0.5, b * (width + gap) - 0.5
        segments += [[(left + k, top), (left + k, top + height)] for k in range(width + 1)]
        segments += [[(left, top + k), (left + width, top + k)] for k in range(height + 1)]
    return segments


def _maps_size(layout: np.ndarray, height: int, width: int) -> tuple[float, float]:
    """Inches (width, height) that the query maps need, title included."""
    gap = _gap(height, width)
    across = layout.shape[1] * (width + gap) - gap
    down = layout.shape[0] * (height + gap) - gap
    inches_across = min(14.0, max(6.0, across * 0.09))
    return inches_across, inches_across * down / across + 1.0


def _draw_query_maps(figure_or_subfigure, pattern: Pattern, grid: tuple[int, int], max_queries: int) -> None:
    _, LineCollection = _matplotlib()
    height, width = grid
    layout, which = _query_layout(pattern, height, width, max_queries)
    ax = figure_or_subfigure.add_subplot(1, 1, 1)
    ax.imshow(_query_mosaic(pattern, layout, height, width), interpolation="nearest")
    marks_query = _rows_are_grid_tokens(pattern, height, width)
    if max(height, width) <= _MAX_GRID_LINES:
        ax.add_collection(LineCollection(_cell_borders(layout, height, width), colors="k", linewidths=0.5))
    elif marks_query:
        # One red cell is too small to see on a large grid: ring each query as well.
        gap = _gap(height, width)
        where = [(b * (width + gap) + q % width, a * (height + gap) + q // width)
                 for (a, b), q in np.ndenumerate(layout) if q >= 0]
        ax.scatter(*zip(*where), s=60, facecolors="none", edgecolors=[_QUERY], linewidths=1.5)
    ax.set_axis_off()
    legend = "yellow: attended key" + (", red: the query's own position" if marks_query else "")
    ax.set_title(f"attention map of each query on the {height} x {width} grid\n{which}\n{legend}", fontsize=10)


def _save(figure, path) -> None:
    if path is not None:
        # savefig on a pyplot-free Figure renders with Agg: no display, no backend switch.
        figure.savefig(path, format="png", dpi=100)


def plot_pattern(pattern: Pattern, grid=None, path=None, *, title: str | None = None, max_queries: int = 64,
                 max_pixels: int = 256):
    """Draws ``pattern`` and returns the matplotlib ``Figure``; saves it as a PNG when ``path`` is given.

    The top panel is the ``[n_rows, n_cols]`` matrix (yellow = entry set), downsampled to at most
    ``max_pixels`` per side for large patterns (each pixel then shades the fraction of its block that is
    set). With ``grid=(H, W)`` (``H * W == n_cols``, keys numbered ``i * W + j``) the panel below shows, for
    each query, which keys of the grid it attends to, like the xformers Swin notebook; at most
    ``max_queries`` queries are drawn (fewer on large grids: an evenly spaced subset, named in the title)."""
    Figure, _ = _matplotlib()
    pattern = _check_pattern(pattern)
    max_queries = _checks.as_int(max_queries, "max_queries", 1)
    max_pixels = _checks.as_int(max_pixels, "max_pixels", 1)
    if grid is None:
        figure = Figure(figsize=(_MATRIX_INCHES + 0.5, _MATRIX_INCHES), layout="constrained")
        _draw_matrix(figure, pattern, title, max_pixels)
    else:
        grid = _check_grid(grid, pattern)
        figure = _stacked_figure([(pattern, title)], grid, max_queries, max_pixels)
    _save(figure, path)
    return figure


def plot_swin(H: int, W: int, window_size, shift_size=None, path=None, *, max_queries: int = 64,
              max_pixels: int = 256):
    """Swin's window attention on an ``H x W`` grid, unshifted (left) and shifted (right) side by side:
    each side shows the pattern matrix above the per-query attention maps. ``shift_size`` defaults to
    ``window_size // 2`` (Swin's choice); window and shift are an int or an ``(h, w)`` pair. Returns the
    ``Figure`` and saves a PNG when ``path`` is given."""
    from . import patterns

    _matplotlib()
    window = _checks.as_pair(window_size, "window_size")
    shift = (window[0] // 2, window[1] // 2) if shift_size is None else _checks.as_pair(shift_size, "shift_size")
    max_queries = _checks.as_int(max_queries, "max_queries", 1)
    max_pixels = _checks.as_int(max_pixels, "max_pixels", 1)
    unshifted, shifted = patterns.swin(H, W, window, 0), patterns.swin(H, W, window, shift)
    grid = (int(H), int(W))
    figure = _stacked_figure([(unshifted, "no shift"), (shifted, f"shift {_pair(shift)}")], grid, max_queries,
                             max_pixels)
    figure.suptitle(f"Swin attention on a {grid[0]} x {grid[1]} grid, window {_pair(window)}", fontsize=13)
    _save(figure, path)
    return figure


def _stacked_figure(columns: list, grid: tuple[int, int], max_queries: int, max_pixels: int):
    """A figure with one column per ``(pattern, title)``: the matrix above its query maps."""
    Figure, _ = _matplotlib()
    layout, _ = _query_layout(columns[0][0], grid[0], grid[1], max_queries)
    maps_width, maps_height = _maps_size(layout, *grid)
    column_width = max(_MATRIX_INCHES + 1.5, maps_width)
    figure = Figure(figsize=(len(columns) * column_width, _MATRIX_INCHES + maps_height + 0.5), layout="constrained")
    panels = figure.subfigures(1, len(columns), squeeze=False)[0]
    for panel, (pattern, title) in zip(panels, columns):
        matrix_row, maps_panel = panel.subfigures(2, 1, height_ratios=[_MATRIX_INCHES, maps_height])
        # The matrix keeps its own width, centred, rather than stretching over wide query maps.
        margin = (column_width - _MATRIX_INCHES - 1.0) / 2
        matrix_panel = matrix_row.subfigures(1, 3, width_ratios=[margin, _MATRIX_INCHES + 1.0, margin])[1]
        _draw_matrix(matrix_panel, pattern, title, max_pixels)
        _draw_query_maps(maps_panel, pattern, grid, max_queries)
    return figure


def _pair(value: tuple[int, int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"({value[0]}, {value[1]})"
