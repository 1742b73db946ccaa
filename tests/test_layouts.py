"""spattn.layouts against a transcription of DeepSpeed's / xformers' SparsityConfig classes (their loops,
Python slices and all), random blocks by their counts and seeds, pattern_to_layout, and bad arguments."""

import itertools

import numpy as np
import pytest
import torch

import spattn
from spattn import layouts

# ---- the reference: SparsityConfig.make_layout for one head, without the random blocks -------------------


def reference_fixed(n, num_local_blocks=4, num_global_blocks=1, attention="bidirectional",
                    horizontal_global_attention=False, num_different_global_patterns=1, head=0):
    layout = torch.zeros(n, n, dtype=torch.int64)
    for i in range(0, n, num_local_blocks):
        end = min(i + num_local_blocks, n)
        for row in range(i, end):
            for col in range(i, (row + 1 if attention == "unidirectional" else end)):
                layout[row, col] = 1
    first_global_block_idx = num_local_blocks - (1 + head % num_different_global_patterns) * num_global_blocks
    end = n - (n % num_local_blocks)
    for i in range(first_global_block_idx, end, num_local_blocks):
        first_row = 0 if attention == "bidirectional" else i
        layout[first_row:, i:i + num_global_blocks] = 1
        if horizontal_global_attention:
            layout[i:i + num_global_blocks, :] = 1
    if end < n:
        start = min(end + first_global_block_idx, n - num_global_blocks)
        end = start + num_global_blocks
        first_row = 0 if attention == "bidirectional" else start
        layout[first_row:, start:end] = 1
        if horizontal_global_attention:
            layout[start:end, :] = 1
    return layout.bool()


def _reference_global(layout, global_block_indices, global_block_end_indices, attention, horizontal):
    n = layout.shape[0]
    ends = global_block_end_indices or [idx + 1 for idx in global_block_indices]
    for start_idx, end_idx in zip(global_block_indices, ends):
        if start_idx < n:
            end_idx = min(end_idx, n)
            if horizontal:
                layout[start_idx:end_idx, :] = 1
            first_row = 0 if attention == "bidirectional" else start_idx
            layout[first_row:, start_idx:end_idx] = 1


def reference_variable(n, local_window_blocks=(4,), global_block_indices=(0,), global_block_end_indices=None,
                       attention="bidirectional", horizontal_global_attention=False):
    layout = torch.zeros(n, n, dtype=torch.int64)
    start_block_idx = end_block_idx = 0
    for block_size in local_window_blocks:
        end_block_idx = min(end_block_idx + block_size, n)
        for row in range(start_block_idx, end_block_idx):
            for col in range(start_block_idx, (row + 1 if attention == "unidirectional" else end_block_idx)):
                layout[row, col] = 1
        start_block_idx += block_size
    for i in range(start_block_idx, n, block_size):
        end_block_idx = min(i + block_size, n)
        for row in range(i, end_block_idx):
            for col in range(i, (row + 1 if attention == "unidirectional" else end_block_idx)):
                layout[row, col] = 1
    _reference_global(layout, global_block_indices, global_block_end_indices, attention, horizontal_global_attention)
    return layout.bool()


def _reference_sliding(layout, num_sliding_window_blocks):
    n, w = layout.shape[0], num_sliding_window_blocks // 2
    for row in range(n):
        layout[row, max(0, row - w):min(row + w + 1, n)] = 1


def reference_bigbird(n, num_sliding_window_blocks=3, num_global_blocks=1, attention="bidirectional"):
    layout = torch.zeros(n, n, dtype=torch.int64)
    _reference_sliding(layout, num_sliding_window_blocks)
    layout[0:num_global_blocks, :] = 1
    layout[:, 0:num_global_blocks] = 1
    return (torch.tril(layout) if attention == "unidirectional" else layout).bool()


def reference_longformer(n, num_sliding_window_blocks=3, global_block_indices=(0,), global_block_end_indices=None,
                         attention="bidirectional"):
    layout = torch.zeros(n, n, dtype=torch.int64)
    _reference_sliding(layout, num_sliding_window_blocks)
    _reference_global(layout, global_block_indices, global_block_end_indices, "bidirectional", True)
    return (torch.tril(layout) if attention == "unidirectional" else layout).bool()


# ---- against the reference -------------------------------------------------------------------------------


def test_fixed_by_hand():
    # Windows [0, 4), [4, 8); the last block of each (3 and 7) is global.
    expected = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 1]] * 4 + [[0, 0, 0, 1, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    layout = layouts.fixed(8)
    assert layout.dtype == torch.bool and layout.shape == (8, 8)
    assert torch.equal(layout, expected)


@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 13])
def test_fixed_matches_reference(n):
    for local, glob in [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (6, 3), (5, 5)]:
        for patterns, head, attention, horizontal in itertools.product(
                range(1, local // glob + 1), range(3), ["bidirectional", "unidirectional"], [False, True]):
            if horizontal and attention == "unidirectional":
                continue
            args = (local, glob, attention, horizontal, patterns, head)
            assert torch.equal(layouts.fixed(n, *args), reference_fixed(n, *args)), (n, args)


@pytest.mark.parametrize("n", [0, 1, 5, 9, 12])
def test_variable_matches_reference(n):
    for windows, globals_, with_ends, attention, horizontal in itertools.product(
            [[1], [4], [2, 3], [3, 1, 2], [20]], [[], [0], [1, 5], [3, 30]], [False, True],
            ["bidirectional", "unidirectional"], [False, True]):
        if horizontal and attention == "unidirectional":
            continue
        ends = [g + 2 for g in globals_] if with_ends else None
        got = layouts.variable(n, 0, windows, globals_, ends, attention, horizontal)
        assert torch.equal(got, reference_variable(n, windows, globals_, ends, attention, horizontal)), \
            (n, windows, globals_, ends, attention, horizontal)


@pytest.mark.parametrize("n", [0, 1, 2, 6, 11])
def test_bigbird_and_longformer_match_reference(n):
    for window, attention in itertools.product(range(n + 1), ["bidirectional", "unidirectional"]):
        for glob in range(n + 1):
            assert torch.equal(layouts.bigbird(n, 0, window, glob, attention),
                               reference_bigbird(n, window, glob, attention)), (n, window, glob, attention)
        for globals_ in ([], [0], [2, 9], [n]):
            for ends in (None, [g + 3 for g in globals_]):
                assert torch.equal(layouts.longformer(n, window, globals_, ends, attention),
                                   reference_longformer(n, window, globals_, ends, attention))


def test_defaults_are_xformers_defaults():
    assert torch.equal(layouts.variable(10), reference_variable(10))
    assert torch.equal(layouts.longformer(10), reference_longformer(10))
    assert torch.equal(layouts.fixed(10), reference_fixed(10))
    # BigBird draws one random block per row by default.
    assert (layouts.bigbird(10) >= reference_bigbird(10)).all()


def test_list_arguments_accept_tuples_arrays_and_tensors():
    expected = layouts.variable(12, 0, [2, 3], [1, 7], [3, 9])
    assert torch.equal(layouts.variable(12, 0, (2, 3), np.array([1, 7]), torch.tensor([3, 9])), expected)
    assert torch.equal(layouts.longformer(12, 3, torch.tensor([4])), reference_longformer(12, 3, [4]))


# ---- random blocks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,count", [(1, 1), (5, 2), (16, 3), (40, 40)])
def test_random_blocks_per_row(n, count):
    for seed in range(5):
        # Windows of one block and no global blocks: each row is its diagonal plus `count` distinct draws.
        layout = layouts.variable(n, count, [1], [], seed=seed)
        per_row = layout.sum(dim=1)
        assert ((per_row == count) | (per_row == count + 1)).all()
        assert layout.diagonal().all()
        bird = layouts.bigbird(n, count, 0, 0, seed=seed)
        assert ((bird.sum(dim=1) == count) | (bird.sum(dim=1) == count + 1)).all()


def test_random_blocks_are_deterministic_and_only_add():
    assert torch.equal(layouts.bigbird(64, 3, seed=11), layouts.bigbird(64, 3, seed=11))
    assert not torch.equal(layouts.bigbird(64, 3, seed=11), layouts.bigbird(64, 3, seed=12))
    assert torch.equal(layouts.variable(64, 2, seed=5), layouts.variable(64, 2, seed=5))
    assert not torch.equal(layouts.variable(64, 2, seed=5), layouts.variable(64, 2, seed=6))
    assert (layouts.bigbird(50, 2, 3, 1, seed=3) >= reference_bigbird(50, 3, 1)).all()
    assert (layouts.variable(50, 2, [3], [4], seed=3) >= reference_variable(50, [3], [4])).all()
    assert layouts.bigbird(4, 1, seed=2**63 - 1).shape == (4, 4)


def test_random_blocks_are_uniform():
    counts = sum(layouts.variable(10, 1, [1], [], seed=seed).int() - torch.eye(10, dtype=torch.int32)
                 for seed in range(600))
    # Each off-diagonal block is drawn with probability 1/10 per seed: about 60 times.
    off_diagonal = counts[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 25 and off_diagonal.max() < 100


def test_unidirectional_bigbird_draws_from_the_past():
    for seed in range(20):
        layout = layouts.bigbird(12, 1, 1, 0, "unidirectional", seed=seed)
        assert torch.equal(layout, layout.tril())
        assert layout.diagonal().all()


# ---- expansion and pattern_to_layout ---------------------------------------------------------------------


def test_expands_into_a_pattern():
    layout = layouts.bigbird(8, seed=1)
    pattern = spattn.patterns.from_block_layout(layout, 4)
    assert pattern.shape == (32, 32)
    expected = torch.kron(layout.int(), torch.ones(4, 4, dtype=torch.int32)).bool()
    assert torch.equal(pattern.to_dense(), expected)


@pytest.mark.parametrize("block_size", [1, 2, 3, 6])
def test_pattern_to_layout(block_size):
    generator = torch.Generator().manual_seed(block_size)
    mask = torch.rand(12, 18, generator=generator) > 0.97
    expected = torch.zeros(12 // block_size, 18 // block_size, dtype=torch.bool)
    for i, j in mask.nonzero().tolist():
        expected[i // block_size, j // block_size] = True
    assert torch.equal(layouts.pattern_to_layout(mask, block_size), expected)
    assert torch.equal(layouts.pattern_to_layout(spattn.Pattern.from_dense(mask), block_size), expected)
    heads = torch.stack([mask, ~mask])
    assert torch.equal(layouts.pattern_to_layout(heads, block_size)[0], expected)


def test_pattern_to_layout_round_trip():
    layout = layouts.longformer(9, 3, [4])
    assert torch.equal(layouts.pattern_to_layout(spattn.patterns.from_block_layout(layout, 5), 5), layout)


# ---- bad arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,name", [
    (lambda: layouts.fixed(-1), ValueError, "num_blocks"),
    (lambda: layouts.fixed(1.5), TypeError, "num_blocks"),
    (lambda: layouts.fixed(8, 0), ValueError, "num_local_blocks"),
    (lambda: layouts.fixed(8, 4, 3), ValueError, "num_global_blocks"),
    (lambda: layouts.fixed(8, attention="causal"), ValueError, "attention"),
    (lambda: layouts.fixed(8, attention=None), TypeError, "attention"),
    (lambda: layouts.fixed(8, attention="unidirectional", horizontal_global_attention=True), ValueError,
     "horizontal_global_attention"),
    (lambda: layouts.fixed(8, horizontal_global_attention=1), TypeError, "horizontal_global_attention"),
    (lambda: layouts.fixed(8, num_different_global_patterns=5), ValueError, "num_different_global_patterns"),
    (lambda: layouts.fixed(8, head=-1), ValueError, "head"),
    (lambda: layouts.fixed(2**40), ValueError, "too large"),
    (lambda: layouts.fixed(2**70), ValueError, "num_blocks"),
    (lambda: layouts.variable(4, 5), ValueError, "num_random_blocks"),
    (lambda: layouts.variable(4, local_window_blocks=[]), ValueError, "local_window_blocks"),
    (lambda: layouts.variable(4, local_window_blocks=[2, 0]), ValueError, "local_window_blocks[1]"),
    (lambda: layouts.variable(4, local_window_blocks=3), TypeError, "local_window_blocks"),
    (lambda: layouts.variable(4, local_window_blocks="3"), TypeError, "local_window_blocks"),
    (lambda: layouts.variable(4, global_block_indices=[True]), TypeError, "global_block_indices[0]"),
    (lambda: layouts.variable(4, global_block_indices=[-1]), ValueError, "global_block_indices[0]"),
    (lambda: layouts.variable(4, global_block_indices=[0, 1], global_block_end_indices=[2]), ValueError,
     "global_block_end_indices"),
    (lambda: layouts.variable(4, global_block_end_indices=[0]), ValueError, "global_block_end_indices[0]"),
    (lambda: layouts.variable(4, global_block_end_indices=torch.zeros(1, 1)), ValueError,
     "global_block_end_indices"),
    (lambda: layouts.variable(4, seed=-1), ValueError, "seed"),
    (lambda: layouts.variable(4, seed=2**64), ValueError, "seed"),
    (lambda: layouts.bigbird(4, 5), ValueError, "num_random_blocks"),
    (lambda: layouts.bigbird(4, 1, 5), ValueError, "num_sliding_window_blocks"),
    (lambda: layouts.bigbird(4, 1, 3, 5), ValueError, "num_global_blocks"),
    (lambda: layouts.bigbird(4, 2, attention="unidirectional"), ValueError, "num_random_blocks"),
    (lambda: layouts.bigbird(4, seed=0.5), TypeError, "seed"),
    (lambda: layouts.longformer(2), ValueError, "num_sliding_window_blocks"),
    (lambda: layouts.longformer(4, global_block_indices=[-3]), ValueError, "global_block_indices[0]"),
    (lambda: layouts.longformer(4, attention="sideways"), ValueError, "attention"),
    (lambda: layouts.pattern_to_layout(torch.ones(6, 6, dtype=torch.bool), 4), ValueError, "block_size"),
    (lambda: layouts.pattern_to_layout(torch.ones(6, 6, dtype=torch.bool), 0), ValueError, "block_size"),
    (lambda: layouts.pattern_to_layout(torch.ones(6, 6), 2), TypeError, "pattern_or_mask"),
    (lambda: layouts.pattern_to_layout(torch.ones(6, dtype=torch.bool), 2), ValueError, "pattern_or_mask"),
    (lambda: layouts.pattern_to_layout(spattn.patterns.causal_1d(6), 4), ValueError, "block_size"),
])
def test_bad_arguments_name_the_argument(call, error, name):
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pattern_to_layout_on_cuda():
    pattern = spattn.patterns.swin(8, 8, 4, 2)
    expected = layouts.pattern_to_layout(pattern, 4)
    for source in (pattern.to("cuda"), pattern.to_dense().cuda()):
        layout = layouts.pattern_to_layout(source, 4)
        assert layout.device.type == "cuda" and torch.equal(layout.cpu(), expected)
