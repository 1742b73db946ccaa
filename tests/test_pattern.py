"""The Pattern object: construction round trips, properties, devices, dense conversion, the transpose and
its permutation, algebra, equality, row order, the plan's schedule, caching and repr."""

import numpy as np
import pytest
import torch

from spattn import Pattern, patterns

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_mask(n_rows, n_cols, density=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_rows, n_cols, generator=generator) < density


def reference_csr(mask):
    """CSR arrays of a dense mask, computed here from nonzero() (row-major, so sorted within rows)."""
    rows, cols = mask.nonzero(as_tuple=True)
    offsets = torch.zeros(mask.shape[0] + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(rows, minlength=mask.shape[0]), 0)
    return offsets, cols.to(torch.int64)


SHAPES = [(0, 0), (0, 4), (4, 0), (1, 1), (3, 5), (7, 2), (16, 16), (33, 17)]


# ---- construction --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_from_dense_round_trip(shape, density):
    mask = random_mask(*shape, density=density)
    pattern = Pattern.from_dense(mask)
    offsets, cols = reference_csr(mask)
    assert pattern.shape == shape
    assert torch.equal(pattern.row_offsets, offsets)
    assert torch.equal(pattern.col_indices, cols)
    assert torch.equal(pattern.to_dense(), mask)


@pytest.mark.parametrize("shape", SHAPES)
def test_from_csr_round_trip(shape):
    mask = random_mask(*shape, seed=3)
    offsets, cols = reference_csr(mask)
    pattern = Pattern.from_csr(offsets, cols, shape)
    assert pattern.shape == shape
    assert torch.equal(pattern.row_offsets, offsets) and torch.equal(pattern.col_indices, cols)
    assert torch.equal(pattern.to_dense(), mask)
    assert pattern.equal(Pattern.from_dense(mask))


def test_from_csr_accepts_lists_numpy_other_int_dtypes_and_torch_size():
    expected = Pattern.from_dense(torch.tensor([[True, False, True], [False, False, False], [False, True, False]]))
    assert Pattern.from_csr([0, 2, 2, 3], [0, 2, 1], (3, 3)).equal(expected)
    assert Pattern.from_csr(np.array([0, 2, 2, 3], np.int32), np.array([0, 2, 1], np.int16), [3, 3]).equal(expected)
    assert Pattern.from_csr(torch.tensor([0, 2, 2, 3], dtype=torch.int32), torch.tensor([0, 2, 1]),
                            torch.Size([3, 3])).equal(expected)


def test_from_csr_and_from_coo_accept_empty_lists():
    assert Pattern.from_csr([0, 0], [], (1, 4)).nnz == 0
    assert Pattern.from_coo([], [], (2, 3)).shape == (2, 3)


def test_from_csr_does_not_alias_the_callers_lists():
    offsets = [0, 1]
    pattern = Pattern.from_csr(offsets, [0], (1, 1))
    offsets[1] = 5  # changing the caller's list later must not change the pattern
    assert pattern.row_offsets.tolist() == [0, 1]


@pytest.mark.parametrize("shape", SHAPES)
def test_from_coo_sorts_and_merges_duplicates(shape):
    mask = random_mask(*shape, seed=5)
    rows, cols = mask.nonzero(as_tuple=True)
    # Shuffled and every entry given twice.
    order = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(1))
    rows, cols = torch.cat([rows[order], rows]), torch.cat([cols[order], cols])
    pattern = Pattern.from_coo(rows, cols, shape)
    assert pattern.equal(Pattern.from_dense(mask))
    assert torch.equal(pattern.to_dense(), mask)


def test_init_is_refused():
    with pytest.raises(TypeError, match="from_csr"):
        Pattern()


# ---- properties ----------------------------------------------------------------------------------------------
def test_properties():
    mask = torch.tensor([[True, True, False, False], [False, False, False, False], [True, False, False, True]])
    pattern = Pattern.from_dense(mask)
    assert pattern.shape == (3, 4)
    assert pattern.nnz == 4
    assert pattern.density == pytest.approx(4 / 12)
    assert pattern.row_offsets.tolist() == [0, 2, 2, 4]
    assert pattern.col_indices.tolist() == [0, 1, 0, 3]
    assert pattern.row_offsets.dtype == pattern.col_indices.dtype == torch.int64
    assert pattern.device == torch.device("cpu")
    assert pattern.row_lengths().tolist() == [2, 0, 2]


def test_density_of_empty_shapes_is_zero():
    assert Pattern.from_dense(torch.zeros(0, 5, dtype=torch.bool)).density == 0.0
    assert Pattern.from_dense(torch.ones(3, 3, dtype=torch.bool)).density == 1.0


def test_repr():
    assert repr(patterns.swin(8, 8, 4, 2)) == "Pattern(shape=(64, 64), nnz=576, density=14.062%, device=cpu)"


# ---- devices -------------------------------------------------------------------------------------------------
def test_to_the_same_device_returns_the_same_object():
    pattern = patterns.causal_1d(5)
    assert pattern.to("cpu") is pattern
    assert pattern.to(torch.device("cpu")) is pattern
    assert pattern.cpu() is pattern


@CUDA
def test_to_cuda_and_back():
    pattern = patterns.swin(8, 8, 4, 2)
    on_gpu = pattern.to("cuda")
    assert on_gpu.device.type == "cuda"
    assert on_gpu.row_offsets.device.type == on_gpu.col_indices.device.type == "cuda"
    assert on_gpu is pattern.to("cuda") is pattern.cuda()  # cached: moving every forward pass costs nothing
    assert on_gpu.cpu().equal(pattern)
    assert torch.equal(on_gpu.to_dense().cpu(), pattern.to_dense())
    assert on_gpu.T.device.type == "cuda" and on_gpu.rows_by_length().device.type == "cuda"
    assert (on_gpu & on_gpu).device.type == "cuda"
    mask = random_mask(6, 7).cuda()
    assert Pattern.from_dense(mask).device.type == "cuda"
    offsets, cols = reference_csr(mask.cpu())
    assert Pattern.from_csr(offsets.cuda(), cols.cuda(), (6, 7)).device.type == "cuda"


# ---- dense conversion ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [lambda: patterns.swin(6, 6, 3, 1), lambda: patterns.causal_1d(9),
                                   lambda: patterns.random(11, 7, 0.4, seed=2)])
def test_to_dense_agrees_with_the_csr_arrays(build):
    pattern = build()
    dense = pattern.to_dense()
    assert dense.dtype == torch.bool and dense.shape == pattern.shape
    offsets, cols = reference_csr(dense)
    assert torch.equal(offsets, pattern.row_offsets) and torch.equal(cols, pattern.col_indices)


def test_to_sparse_csr():
    pattern = patterns.local_1d(6, 3)
    sparse = pattern.to_sparse_csr()
    assert torch.equal(sparse.to_dense() != 0, pattern.to_dense())


# ---- transpose -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_transpose_and_its_permutation(shape):
    mask = random_mask(*shape, seed=11)
    pattern = Pattern.from_dense(mask)
    transposed, permutation = pattern.transposed()
    assert transposed.shape == (shape[1], shape[0])
    assert torch.equal(transposed.to_dense(), mask.T)
    assert transposed.equal(Pattern.from_dense(mask.T.contiguous()))
    # values_t = values[permutation]: entry t of the transpose is entry permutation[t] of the pattern.
    assert permutation.dtype == torch.int64
    assert sorted(permutation.tolist()) == list(range(pattern.nnz))
    values = torch.arange(1, pattern.nnz + 1, dtype=torch.float64)
    dense_values = torch.zeros(shape, dtype=torch.float64)
    dense_values[mask] = values  # row-major order is CSR order
    dense_values_t = torch.zeros(shape[1], shape[0], dtype=torch.float64)
    dense_values_t[mask.T] = values[permutation]
    assert torch.equal(dense_values_t, dense_values.T)


def test_T_is_the_cached_transpose_and_transposing_twice_gives_the_pattern_back():
    pattern = patterns.swin(6, 9, 3, 1)
    assert pattern.T is pattern.transposed()[0]
    assert pattern.T.T.equal(pattern)


def test_transposing_a_symmetric_pattern_gives_an_equal_pattern():
    pattern = patterns.swin(8, 8, 4, 2)
    assert pattern.T.equal(pattern)


# ---- algebra -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_and_or(shape):
    a, b = random_mask(*shape, seed=1), random_mask(*shape, seed=2)
    pa, pb = Pattern.from_dense(a), Pattern.from_dense(b)
    assert torch.equal((pa & pb).to_dense(), a & b)
    assert torch.equal((pa | pb).to_dense(), a | b)
    assert (pa & pa).equal(pa) and (pa | pa).equal(pa)


def test_swin_union_of_shifts_and_intersection_with_local():
    unshifted, shifted = patterns.swin(8, 8, 4, 0), patterns.swin(8, 8, 4, 2)
    assert torch.equal((unshifted | shifted).to_dense(), unshifted.to_dense() | shifted.to_dense())
    assert torch.equal((unshifted & shifted).to_dense(), unshifted.to_dense() & shifted.to_dense())


def test_algebra_refuses_other_shapes_and_types():
    a = patterns.causal_1d(4)
    with pytest.raises(ValueError, match="other"):
        a & patterns.causal_1d(5)
    with pytest.raises(ValueError, match="other"):
        a | patterns.causal_1d(5)
    with pytest.raises(TypeError):
        a & 1
    with pytest.raises(TypeError):
        a | torch.ones(4, 4, dtype=torch.bool)


# ---- equality ------------------------------------------------------------------------------------------------
def test_equal():
    a = patterns.local_1d(6, 3)
    assert a.equal(patterns.local_1d(6, 3))
    assert not a.equal(patterns.local_1d(6, 5))
    assert not a.equal(patterns.local_1d(7, 3))
    assert not Pattern.from_dense(torch.zeros(2, 3, dtype=torch.bool)).equal(
        Pattern.from_dense(torch.zeros(3, 2, dtype=torch.bool)))
    # Same nnz, different entries.
    assert not Pattern.from_csr([0, 1], [0], (1, 2)).equal(Pattern.from_csr([0, 1], [1], (1, 2)))
    with pytest.raises(TypeError, match="other"):
        a.equal(a.to_dense())


# ---- row order -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [lambda: patterns.causal_1d(7), lambda: patterns.random(40, 30, 0.2, seed=4),
                                   lambda: patterns.swin(10, 10, 4, 2),
                                   lambda: Pattern.from_dense(torch.zeros(3, 3, dtype=torch.bool))])
def test_rows_by_length_is_decreasing_length_then_row(build):
    pattern = build()
    lengths = pattern.row_lengths().tolist()
    expected = sorted(range(pattern.shape[0]), key=lambda row: (-lengths[row], row))
    order = pattern.rows_by_length()
    assert order.dtype == torch.int64
    assert order.tolist() == expected


# ---- caching -------------------------------------------------------------------------------------------------
def test_derived_data_is_cached():
    pattern = patterns.swin(8, 8, 4, 2)
    assert pattern.transposed() is pattern.transposed()
    assert pattern.T is pattern.T
    assert pattern.rows_by_length() is pattern.rows_by_length()
    calls = []
    assert pattern.cached("mine", lambda: calls.append(1) or "value") == "value"
    assert pattern.cached("mine", lambda: calls.append(1) or "other") == "value"
    assert calls == [1]
    assert pattern.cached("never computed") is None


def test_prepare_builds_what_tracing_cannot():
    """prepare() builds the transpose, the plan, its schedule and statistics once; is_prepared() and
    cached(key) see them without building anything (what code traced by torch.compile may do)."""
    pattern = patterns.swin(8, 8, 4, 2)
    assert not pattern.is_prepared() and pattern.cached("plan") is None
    assert pattern.prepare() is pattern and pattern.is_prepared()
    assert pattern.cached("transposed") is pattern.transposed() and pattern.cached("plan") is pattern.plan()
    assert pattern.plan_statistics() == (pattern.plan()[0].numel() - 1, 16)


def test_caches_are_per_pattern():
    a, b = patterns.causal_1d(4), patterns.causal_1d(4)
    assert a.T is not b.T
    assert a.T.equal(b.T)


# ---- the plan's schedule -------------------------------------------------------------------------------------
def check_schedule(pattern):
    """Steps cover every (group, row) once with at most 4 warps and 64 padded keys each, a task's warps
    consecutive, a group of more than 64 columns alone; unowned columns match their definition."""
    group_offsets, group_rows = pattern.plan()
    steps, unowned = pattern.plan_schedule()
    assert steps.dtype == unowned.dtype == torch.int64 and steps.shape[1:] == (4, 2)
    sizes = group_offsets.diff().tolist()
    offsets, columns = pattern.row_offsets.tolist(), pattern.col_indices.tolist()
    first_rows = group_rows[group_offsets[:-1]].tolist()
    widths = [offsets[r + 1] - offsets[r] for r in first_rows]
    covered = [[0] * size for size in sizes]
    for step in steps.tolist():
        groups = [g for g, _ in step if g >= 0]
        assert groups and groups == sorted(groups)
        assert [g for g, _ in step] == groups + [-1] * (4 - len(groups))  # idle warps last
        assert all(row == 0 for g, row in step if g < 0)
        distinct = sorted(set(groups))
        assert sum(-(-min(widths[g], 64) // 16) * 16 for g in distinct) <= 64
        assert all(widths[g] <= 64 for g in distinct) or len(distinct) == 1
        for w, (g, row) in enumerate(step):
            if g < 0:
                continue
            previous = step[w - 1] if w > 0 else (-1, 0)
            assert row == (previous[1] + 16 if previous[0] == g else row - row % 64)  # tasks start at 64-row chunks
            for r in range(row, min(row + 16, sizes[g])):
                covered[g][r] += 1
    assert all(count == 1 for rows in covered for count in rows)
    group_of_row = {}
    for g, size in enumerate(sizes):
        for r in group_rows[group_offsets[g]:group_offsets[g + 1]].tolist():
            group_of_row[r] = g
    groups_of_column = [set() for _ in range(pattern.shape[1])]
    for r in range(pattern.shape[0]):
        for c in columns[offsets[r]:offsets[r + 1]]:
            groups_of_column[c].add(group_of_row[r])
    expected = [c for c, groups in enumerate(groups_of_column) if len(groups) != 1 or sizes[min(groups)] > 64]
    assert unowned.tolist() == expected


@pytest.mark.parametrize("build", [lambda: patterns.swin(56, 56, 7), lambda: patterns.swin(28, 28, 7, 3),
                                   lambda: patterns.random(150, 90, 0.1, seed=3), lambda: patterns.causal_1d(100),
                                   lambda: Pattern.from_dense(torch.zeros(5, 3, dtype=torch.bool)),
                                   lambda: Pattern.from_dense(torch.ones(70, 100, dtype=torch.bool)),
                                   lambda: Pattern.from_dense(torch.zeros(0, 4, dtype=torch.bool))])
def test_plan_schedule(build):
    check_schedule(build())


def test_plan_schedule_of_swin_windows():
    steps, unowned = patterns.swin(56, 56, 7).plan_schedule()
    assert steps.shape == (64, 4, 2) and unowned.numel() == 0
    assert torch.equal(steps[:, :, 0], torch.arange(64)[:, None].expand(64, 4))  # one window per step
    assert torch.equal(steps[:, :, 1], torch.tensor([0, 16, 32, 48]).expand(64, 4))
    shifted = patterns.swin(56, 56, 7, 3)
    assert shifted.plan_schedule()[0].shape[0] < shifted.plan()[0].numel() - 1  # small regions share steps
    assert shifted.plan_schedule()[1].numel() == 0


def test_plan_schedule_is_cached_with_the_plan_and_follows_the_pattern_to_other_devices(monkeypatch):
    import spattn.pattern
    calls = []
    csr_plan = spattn.pattern._C.csr_plan
    monkeypatch.setattr(spattn.pattern._C, "csr_plan", lambda *args: calls.append(1) or csr_plan(*args))
    pattern = patterns.swin(14, 14, 7, 3)
    assert pattern.plan_schedule() is pattern.plan_schedule()
    assert pattern.plan() is pattern.plan()
    moved = pattern.to("meta")  # another device, no GPU needed: the copy moves the CPU pattern's arrays
    steps, unowned = moved.plan_schedule()
    group_offsets, group_rows = moved.plan()
    assert steps.device.type == unowned.device.type == group_offsets.device.type == group_rows.device.type == "meta"
    assert steps.shape == pattern.plan_schedule()[0].shape and group_rows.shape == pattern.plan()[1].shape
    assert calls == [1]  # one csr_plan call for the plan, the schedule and every device


@CUDA
def test_plan_schedule_on_cuda():
    pattern = patterns.swin(14, 14, 7, 3)
    steps, unowned = pattern.cuda().plan_schedule()
    assert steps.device.type == unowned.device.type == "cuda"
    assert torch.equal(steps.cpu(), pattern.plan_schedule()[0])
    assert torch.equal(unowned.cpu(), pattern.plan_schedule()[1])
