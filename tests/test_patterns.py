"""Every generator in spattn.patterns against an independent dense reference written here with torch
(coordinates and broadcasting, never our generators), plus CSR validity and the Swin build-time budget."""

import itertools
import math
import time
from fractions import Fraction

import pytest
import torch

import spattn
from spattn import patterns


# ---- helpers -----------------------------------------------------------------------------------------------
def assert_valid_csr(pattern):
    """row_offsets start at 0, never decrease and end at nnz; columns in range, sorted and unique per row."""
    n_rows, n_cols = pattern.shape
    offsets, columns = pattern.row_offsets, pattern.col_indices
    assert offsets.dtype == torch.int64 and columns.dtype == torch.int64
    assert offsets.shape == (n_rows + 1,) and columns.ndim == 1
    assert int(offsets[0]) == 0 and int(offsets[-1]) == columns.numel() == pattern.nnz
    assert bool((offsets[1:] >= offsets[:-1]).all())
    if columns.numel():
        assert int(columns.min()) >= 0 and int(columns.max()) < n_cols
        rows = torch.repeat_interleave(torch.arange(n_rows), offsets[1:] - offsets[:-1])
        same_row = rows[1:] == rows[:-1]
        assert bool((columns[1:][same_row] > columns[:-1][same_row]).all()), "columns not sorted/unique in a row"


def csr_to_dense(pattern):
    """Dense bool from CSR, written here so these tests do not trust Pattern.to_dense."""
    n_rows, n_cols = pattern.shape
    dense = torch.zeros(n_rows, n_cols, dtype=torch.bool)
    for row in range(n_rows):
        dense[row, pattern.col_indices[pattern.row_offsets[row]:pattern.row_offsets[row + 1]]] = True
    return dense


def assert_matches(pattern, expected):
    assert_valid_csr(pattern)
    assert pattern.shape == tuple(expected.shape)
    assert pattern.nnz == int(expected.sum())
    actual = csr_to_dense(pattern)
    if not torch.equal(actual, expected):
        wrong = (actual != expected).nonzero()[:10].tolist()
        raise AssertionError(f"pattern differs from the reference at (row, col) {wrong} (first 10)")


def grid_coordinates(H, W):
    """(i, j) of every token of an H x W grid, token i * W + j."""
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return i.reshape(-1), j.reshape(-1)


# ---- Swin: timm's own construction ---------------------------------------------------------------------------
def window_partition(image, window_h, window_w):
    """[Hp, Wp] -> [windows, window_h * window_w], timm's window_partition for one channel."""
    Hp, Wp = image.shape
    return (image.view(Hp // window_h, window_h, Wp // window_w, window_w).permute(0, 2, 1, 3)
            .reshape(-1, window_h * window_w))


def swin_reference_timm(H, W, window_h, window_w, shift_h, shift_w):
    """What timm's SwinTransformerBlock lets token a attend to: roll(-shift), window partition, and the
    region mask built from the slices (0, -window), (-window, -shift), (-shift, None), as in timm's
    calculate_mask/get_attn_mask. A grid that the window does not divide is first padded at the end (pad
    tokens, id -1, are dropped), so that the mask applies to whole windows."""
    Hp, Wp = math.ceil(H / window_h) * window_h, math.ceil(W / window_w) * window_w
    token = torch.full((Hp, Wp), -1, dtype=torch.int64)
    token[:H, :W] = torch.arange(H * W).view(H, W)
    labels = torch.zeros(Hp, Wp, dtype=torch.int64)
    count = 0
    # Literally timm's slices: with shift 0 the last slice (-0, None) covers everything, so every label
    # ends equal and there is no mask, which is what timm does without a shift.
    for h in (slice(0, -window_h), slice(-window_h, -shift_h), slice(-shift_h, None)):
        for w in (slice(0, -window_w), slice(-window_w, -shift_w), slice(-shift_w, None)):
            labels[h, w] = count
            count += 1
    token = torch.roll(token, shifts=(-shift_h, -shift_w), dims=(0, 1))
    token_windows = window_partition(token, window_h, window_w)
    label_windows = window_partition(labels, window_h, window_w)
    allowed = label_windows[:, :, None] == label_windows[:, None, :]
    allowed &= (token_windows[:, :, None] >= 0) & (token_windows[:, None, :] >= 0)
    window, a, b = allowed.nonzero(as_tuple=True)
    dense = torch.zeros(H * W, H * W, dtype=torch.bool)
    dense[token_windows[window, a], token_windows[window, b]] = True
    return dense


def swin_reference_groups(H, W, window_h, window_w, shift_h, shift_w):
    """The documented semantics: per axis the groups [0, shift), [shift, shift + window), ..., clipped."""
    def group(x, window, shift):
        return torch.where(x < shift, 0, 1 + (x - shift) // window)
    i, j = grid_coordinates(H, W)
    gi, gj = group(i, window_h, shift_h), group(j, window_w, shift_w)
    return (gi[:, None] == gi[None, :]) & (gj[:, None] == gj[None, :])


def swin_cases():
    """(H, W, window, shift): square and non-square grids, per-axis and odd windows, every shift."""
    cases = []
    for H, W, window in [(8, 8, (4, 4)), (7, 7, (7, 7)), (12, 8, (4, 4)), (9, 15, (3, 5)), (14, 21, (7, 7)),
                         (6, 10, (3, 5)), (1, 1, (1, 1)), (1, 6, (1, 3)), (5, 1, (5, 1)), (10, 10, (5, 2))]:
        for shift in itertools.product(range(window[0]), range(window[1])):
            cases.append((H, W, window, shift))
    return cases


def swin_call(H, W, window, shift):
    """Calls swin with ints when both axes agree (the common form) and pairs otherwise."""
    def as_arg(pair):
        return pair[0] if pair[0] == pair[1] else pair

    return patterns.swin(H, W, as_arg(window), as_arg(shift))


@pytest.mark.parametrize("H, W, window, shift", swin_cases())
def test_swin_matches_timm_construction(H, W, window, shift):
    expected = swin_reference_timm(H, W, *window, *shift)
    assert_matches(swin_call(H, W, window, shift), expected)
    assert torch.equal(expected, swin_reference_groups(H, W, *window, *shift))


@pytest.mark.parametrize("H, W, window, shift", [
    (10, 10, (4, 4), (s, s)) for s in range(4)] + [
    (10, 7, (4, 3), (sh, sw)) for sh in range(4) for sw in range(3)] + [
    (11, 13, (5, 6), (2, 5)), (3, 9, (2, 4), (1, 3)), (9, 2, (4, 2), (3, 1))])
def test_swin_on_grids_the_window_does_not_divide(H, W, window, shift):
    # Border groups are partial and nothing wraps around (the grid padded at the end, then rolled).
    expected = swin_reference_groups(H, W, *window, *shift)
    assert torch.equal(expected, swin_reference_timm(H, W, *window, *shift))
    assert_matches(swin_call(H, W, window, shift), expected)


def test_swin_rows_of_one_window_share_their_columns():
    pattern = patterns.swin(8, 8, 4, 0)
    first_window_rows = [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27]
    expected = torch.tensor(first_window_rows)
    for row in first_window_rows:
        assert torch.equal(pattern.col_indices[pattern.row_offsets[row]:pattern.row_offsets[row + 1]], expected)


def test_swin_256_builds_fast_with_the_expected_nnz():
    patterns.swin(16, 16, 8, 4)  # warm-up: first-call costs are not the generator's
    start = time.perf_counter()
    pattern = patterns.swin(256, 256, 8, 4)
    elapsed = time.perf_counter() - start
    print(f"swin(256, 256, 8, 4): nnz {pattern.nnz:,} built in {elapsed * 1e3:.1f} ms")
    assert pattern.shape == (65536, 65536)
    assert pattern.nnz == 4_064_256
    assert_valid_csr(pattern)
    assert elapsed < 1.0, f"swin(256, 256, 8, 4) took {elapsed:.2f} s; it should take about 20 ms"


def test_swin_accepts_tensor_and_numpy_integers():
    import numpy as np
    expected = patterns.swin(8, 8, 4, 2)
    assert patterns.swin(torch.tensor(8), np.int64(8), (np.int32(4), 4), torch.tensor(2)).equal(expected)


# ---- 1-D patterns --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 5, 16, 33])
@pytest.mark.parametrize("window_size", [1, 2, 3, 4, 7, 100])
def test_local_1d(n, window_size):
    i = torch.arange(n)
    expected = (i[:, None] - i[None, :]).abs() <= window_size // 2
    assert_matches(patterns.local_1d(n, window_size), expected)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 64])
def test_causal_1d(n):
    i = torch.arange(n)
    assert_matches(patterns.causal_1d(n), i[None, :] <= i[:, None])


# ---- 2-D patterns --------------------------------------------------------------------------------------------
GRIDS = [(0, 0), (0, 5), (4, 0), (1, 1), (1, 7), (6, 1), (5, 5), (4, 9), (9, 4), (8, 8)]


def local_2d_reference(H, W, distance, p):
    """p-norm distance < distance. Exact for integer p (and p = 0, inf), in rationals, so that points at
    exactly the distance (e.g. (0, 4) for p = 3, distance 4) are judged right; non-integer p in float64."""
    i, j = grid_coordinates(H, W)
    di = (i[:, None] - i[None, :]).abs()
    dj = (j[:, None] - j[None, :]).abs()
    if p == 0:
        return ((di != 0).to(torch.float64) + (dj != 0).to(torch.float64)) < distance
    if math.isinf(p):
        return torch.maximum(di, dj).to(torch.float64) < distance
    if float(p).is_integer():
        radius = Fraction(distance) ** int(p)
        powers = {k: Fraction(k) ** int(p) for k in range(max(H, W) + 1)}
        inside = torch.zeros(di.shape, dtype=torch.bool)
        for a, b in itertools.product(range(H), range(W)):
            inside |= (di == a) & (dj == b) & (powers[a] + powers[b] < radius)
        return inside
    norm = (di.to(torch.float64) ** p + dj.to(torch.float64) ** p) ** (1.0 / p)
    return norm < distance


@pytest.mark.parametrize("H, W", GRIDS)
@pytest.mark.parametrize("distance, p", [(0.0, 2.0), (1.0, 2.0), (1.5, 2.0), (2.0, 2.0), (3.0, 2.0), (2.5, 1.0),
                                         (3.0, 1.0), (2.0, 0.0), (1.0, 0.0), (0.5, 0.0), (2.0, math.inf),
                                         (3.5, math.inf), (100.0, 2.0), (2.7, 0.5), (3.3, 1.5)])
def test_local_2d(H, W, distance, p):
    assert_matches(patterns.local_2d(H, W, distance, p=p), local_2d_reference(H, W, distance, p))


@pytest.mark.parametrize("distance, p", [(d, p) for d in [2.0, 3.0, 4.0, 5.0] for p in [3.0, 4.0, 5.0, 7.0]])
def test_local_2d_excludes_points_at_exactly_the_distance(distance, p):
    # Axis-aligned neighbours at exactly `distance` have norm == distance and must be left out: taking
    # the root in floating point (64 ** (1/3) == 3.9999999999999996) lets some of them in.
    H, W = 1, 12
    assert_matches(patterns.local_2d(H, W, distance, p=p), local_2d_reference(H, W, distance, p))


def test_local_2d_default_p_is_euclidean():
    assert patterns.local_2d(7, 6, 2.5).equal(patterns.local_2d(7, 6, 2.5, p=2.0))


@pytest.mark.parametrize("H, W", GRIDS)
def test_axial_2d(H, W):
    i, j = grid_coordinates(H, W)
    assert_matches(patterns.axial_2d(H, W), (i[:, None] == i[None, :]) | (j[:, None] == j[None, :]))


@pytest.mark.parametrize("H, W", GRIDS)
@pytest.mark.parametrize("k", [1, 2, 3, 5, 20])
def test_dilated_2d(H, W, k):
    i, j = grid_coordinates(H, W)
    expected = ((i[:, None] - i[None, :]) % k == 0) & ((j[:, None] - j[None, :]) % k == 0)
    assert_matches(patterns.dilated_2d(H, W, k), expected)


def test_dilated_2d_default_k_is_2():
    assert patterns.dilated_2d(6, 5).equal(patterns.dilated_2d(6, 5, 2))


# ---- global tokens, groups, block layouts ------------------------------------------------------------------
@pytest.mark.parametrize("flags", [[], [True], [False], [True, False, False, True, False], [False] * 6,
                                   [True] * 5, [False, False, True]])
def test_global_tokens(flags):
    f = torch.tensor(flags, dtype=torch.bool)
    assert_matches(patterns.global_tokens(f), f[:, None] | f[None, :])


def test_global_tokens_accepts_numpy_and_lists():
    import numpy as np
    flags = [False, True, False, False]
    expected = patterns.global_tokens(torch.tensor(flags))
    assert patterns.global_tokens(np.array(flags)).equal(expected)
    assert patterns.global_tokens(flags).equal(expected)


@pytest.mark.parametrize("layout, block_size", [
    ([[1]], 1), ([[1]], 3), ([[1, 0], [0, 1]], 2), ([[1, 1, 0], [0, 1, 1]], 3), ([[0, 0], [0, 0]], 4),
    ([[1, 0, 1]], 2), ([[1], [0], [1]], 2), (torch.zeros(0, 3), 2), (torch.zeros(2, 0), 2)])
def test_from_block_layout(layout, block_size):
    blocks = torch.as_tensor(layout).to(torch.bool)
    expected = blocks.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
    assert_matches(patterns.from_block_layout(blocks, block_size), expected)
    # Written with integers 0/1 it means the same.
    as_integers = patterns.from_block_layout(blocks.to(torch.int64), block_size)
    assert as_integers.equal(patterns.from_block_layout(blocks, block_size))


@pytest.mark.skipif(not hasattr(patterns, "from_groups"), reason="spattn.patterns.from_groups not in this build")
@pytest.mark.parametrize("row_labels, col_labels", [
    ([], None), ([0], None), ([0, 0, 1, 1, 0], None), ([2, -1, 2, 0, -5], None), ([3, 1, 2], [1, 1, 3, 2, 2, 9]),
    ([-1, -1], [0, 1, 2]), ([0, 1], []), ([], [0, 1])])
def test_from_groups(row_labels, col_labels):
    rows = torch.tensor(row_labels, dtype=torch.int64)
    cols = rows if col_labels is None else torch.tensor(col_labels, dtype=torch.int64)
    expected = (rows[:, None] == cols[None, :]) & (rows[:, None] >= 0)
    assert_matches(patterns.from_groups(rows, None if col_labels is None else cols), expected)


# ---- random --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_rows, n_cols", [(0, 0), (0, 5), (5, 0), (1, 1), (7, 13), (64, 64), (200, 50)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.9, 1.0])
def test_random_is_valid_and_about_as_dense_as_asked(n_rows, n_cols, density):
    pattern = patterns.random(n_rows, n_cols, density, seed=1)
    assert_valid_csr(pattern)
    assert pattern.shape == (n_rows, n_cols)
    total = n_rows * n_cols
    if density in (0.0, 1.0):
        assert pattern.nnz == int(density * total)
    else:
        # nnz ~ Binomial(total, density): six standard deviations never fail by chance.
        assert abs(pattern.nnz - density * total) <= 6 * math.sqrt(total * density * (1 - density)) + 1


def test_random_entries_are_spread_over_rows_and_columns():
    dense = csr_to_dense(patterns.random(300, 300, 0.3, seed=7)).to(torch.float64)
    # Each row and column has ~ Binomial(300, 0.3) entries: mean 90, sd ~7.9.
    assert float(dense.sum(1).min()) > 40 and float(dense.sum(1).max()) < 140
    assert float(dense.sum(0).min()) > 40 and float(dense.sum(0).max()) < 140


def test_random_seed_gives_the_same_pattern_and_other_seeds_differ():
    a = patterns.random(50, 70, 0.2, seed=123)
    assert a.equal(patterns.random(50, 70, 0.2, seed=123))
    assert not a.equal(patterns.random(50, 70, 0.2, seed=124))
    assert patterns.random(50, 70, 0.2).equal(patterns.random(50, 70, 0.2, seed=0))
    assert_valid_csr(patterns.random(20, 20, 0.5, seed=2**64 - 1))


# ---- every generator -----------------------------------------------------------------------------------------
TESTED_GENERATORS = {"swin", "local_1d", "causal_1d", "local_2d", "axial_2d", "dilated_2d", "global_tokens",
                     "random", "from_block_layout", "from_groups"}


# Generators whose reference tests live in their own module.
TESTED_ELSEWHERE = {"neighborhood": "test_neighborhood.py", "swin_3d": "test_neighborhood.py",
                    "neighborhood_bias_index": "test_neighborhood.py"}


def test_every_generator_has_a_reference_test():
    untested = set(patterns.__all__) - TESTED_GENERATORS - set(TESTED_ELSEWHERE)
    assert not untested, f"add a reference test for {sorted(untested)}"


@pytest.mark.parametrize("build", [
    lambda device: patterns.swin(4, 4, 2, 1, device=device),
    lambda device: patterns.local_1d(5, 3, device=device),
    lambda device: patterns.causal_1d(5, device=device),
    lambda device: patterns.local_2d(3, 3, 1.5, device=device),
    lambda device: patterns.axial_2d(3, 3, device=device),
    lambda device: patterns.dilated_2d(3, 3, device=device),
    lambda device: patterns.random(4, 4, 0.5, device=device),
], ids=["swin", "local_1d", "causal_1d", "local_2d", "axial_2d", "dilated_2d", "random"])
def test_generators_build_on_the_requested_device(build):
    assert build(None).device == torch.device("cpu")
    assert build("cpu").device == torch.device("cpu")
    if torch.cuda.is_available():
        on_gpu = build("cuda")
        assert on_gpu.device.type == "cuda"
        assert on_gpu.cpu().equal(build(None))


def test_generators_return_patterns():
    assert isinstance(patterns.causal_1d(3), spattn.Pattern)
