"""A catalogue of malformed calls to every generator and Pattern constructor. Each must raise ValueError or
TypeError with a message that names the offending argument: never crash, hang or return a pattern. The calls
run in-process, so a crash (segfault, abort) kills pytest and fails the run."""

import re

import numpy as np
import pytest
import torch

from spattn import Pattern, patterns

BOOL = torch.bool
LONG = torch.int64
empty = torch.zeros(0, dtype=LONG)
HUGE = 2**32  # HUGE * HUGE = 2**64 tokens: the size overflows int64

# (id, call, exception type, pattern the message must match: it names the argument)
CASES = [
    # ---- swin
    ("swin-H-float", lambda: patterns.swin(8.0, 8, 4), TypeError, r"\bH\b"),
    ("swin-W-bool", lambda: patterns.swin(8, True, 4), TypeError, r"\bW\b"),
    ("swin-H-zero", lambda: patterns.swin(0, 8, 1), ValueError, r"\bH\b"),
    ("swin-W-negative", lambda: patterns.swin(8, -8, 4), ValueError, r"\bW\b"),
    ("swin-window-zero", lambda: patterns.swin(8, 8, 0), ValueError, "window_size"),
    ("swin-window-larger-than-H", lambda: patterns.swin(4, 8, 5), ValueError, "window_size"),
    ("swin-window-larger-than-W", lambda: patterns.swin(8, 4, (2, 5)), ValueError, "window_size.*width"),
    ("swin-window-three-values", lambda: patterns.swin(8, 8, (2, 2, 2)), ValueError, "window_size"),
    ("swin-window-string", lambda: patterns.swin(8, 8, "4"), TypeError, "window_size"),
    ("swin-window-float", lambda: patterns.swin(8, 8, 4.0), TypeError, "window_size"),
    ("swin-window-pair-with-bool", lambda: patterns.swin(8, 8, (4, False)), TypeError, r"window_size\[1\]"),
    ("swin-window-tensor", lambda: patterns.swin(8, 8, torch.tensor([4, 4])), TypeError, "window_size"),
    ("swin-shift-equals-window", lambda: patterns.swin(8, 8, 4, 4), ValueError, "shift_size"),
    ("swin-shift-negative", lambda: patterns.swin(8, 8, 4, -1), ValueError, "shift_size"),
    ("swin-shift-width-out-of-range", lambda: patterns.swin(8, 8, (4, 2), (1, 2)), ValueError, "shift_size.*width"),
    ("swin-shift-float", lambda: patterns.swin(8, 8, 4, 0.5), TypeError, "shift_size"),
    ("swin-shift-none", lambda: patterns.swin(8, 8, 4, None), TypeError, "shift_size"),
    ("swin-size-overflows", lambda: patterns.swin(HUGE, HUGE, 1), ValueError, "4294967296"),
    ("swin-H-beyond-int64", lambda: patterns.swin(2**64, 8, 4), ValueError, r"\bH\b"),
    # ---- local_1d / causal_1d
    ("local_1d-n-negative", lambda: patterns.local_1d(-1, 3), ValueError, r"\bn\b"),
    ("local_1d-n-float", lambda: patterns.local_1d(4.5, 3), TypeError, r"\bn\b"),
    ("local_1d-window-zero", lambda: patterns.local_1d(4, 0), ValueError, "window_size"),
    ("local_1d-window-bool", lambda: patterns.local_1d(4, True), TypeError, "window_size"),
    ("local_1d-window-numpy-bool", lambda: patterns.local_1d(4, np.bool_(True)), TypeError, "window_size"),
    ("causal_1d-n-negative", lambda: patterns.causal_1d(-3), ValueError, r"\bn\b"),
    ("causal_1d-n-string", lambda: patterns.causal_1d("3"), TypeError, r"\bn\b"),
    ("causal_1d-n-float-tensor", lambda: patterns.causal_1d(torch.tensor(3.0)), TypeError, r"\bn\b"),
    ("causal_1d-n-vector-tensor", lambda: patterns.causal_1d(torch.tensor([3])), TypeError, r"\bn\b"),
    # ---- local_2d
    ("local_2d-H-negative", lambda: patterns.local_2d(-1, 4, 2.0), ValueError, r"\bH\b"),
    ("local_2d-distance-nan", lambda: patterns.local_2d(4, 4, float("nan")), ValueError, "distance"),
    ("local_2d-distance-inf", lambda: patterns.local_2d(4, 4, float("inf")), ValueError, "distance"),
    ("local_2d-distance-negative", lambda: patterns.local_2d(4, 4, -1.0), ValueError, "distance"),
    ("local_2d-distance-bool", lambda: patterns.local_2d(4, 4, True), TypeError, "distance"),
    ("local_2d-distance-string", lambda: patterns.local_2d(4, 4, "2"), TypeError, "distance"),
    ("local_2d-p-negative", lambda: patterns.local_2d(4, 4, 2.0, p=-1.0), ValueError, r"\bp\b"),
    ("local_2d-p-nan", lambda: patterns.local_2d(4, 4, 2.0, p=float("nan")), ValueError, r"\bp\b"),
    ("local_2d-size-overflows", lambda: patterns.local_2d(HUGE, HUGE, 1.0), ValueError, "4294967296"),
    # ---- axial_2d / dilated_2d
    ("axial_2d-W-negative", lambda: patterns.axial_2d(4, -2), ValueError, r"\bW\b"),
    ("axial_2d-H-float", lambda: patterns.axial_2d(4.0, 4), TypeError, r"\bH\b"),
    ("axial_2d-size-overflows", lambda: patterns.axial_2d(HUGE, HUGE), ValueError, "4294967296"),
    ("dilated_2d-k-zero", lambda: patterns.dilated_2d(4, 4, 0), ValueError, r"\bk\b"),
    ("dilated_2d-k-negative", lambda: patterns.dilated_2d(4, 4, -2), ValueError, r"\bk\b"),
    ("dilated_2d-k-float", lambda: patterns.dilated_2d(4, 4, 2.0), TypeError, r"\bk\b"),
    ("dilated_2d-size-overflows", lambda: patterns.dilated_2d(HUGE, HUGE), ValueError, "4294967296"),
    # ---- global_tokens
    ("global_tokens-int-flags", lambda: patterns.global_tokens(torch.tensor([0, 1])), TypeError, "flags"),
    ("global_tokens-float-flags", lambda: patterns.global_tokens(torch.tensor([0.0, 1.0])), TypeError, "flags"),
    ("global_tokens-2d", lambda: patterns.global_tokens(torch.zeros(2, 2, dtype=BOOL)), ValueError, "flags"),
    ("global_tokens-0d", lambda: patterns.global_tokens(torch.tensor(True)), ValueError, "flags"),
    ("global_tokens-none", lambda: patterns.global_tokens(None), TypeError, "flags"),
    ("global_tokens-string", lambda: patterns.global_tokens("1010"), TypeError, "flags"),
    # ---- random
    ("random-density-above-one", lambda: patterns.random(4, 4, 1.5), ValueError, "density"),
    ("random-density-negative", lambda: patterns.random(4, 4, -0.1), ValueError, "density"),
    ("random-density-nan", lambda: patterns.random(4, 4, float("nan")), ValueError, "density"),
    ("random-density-string", lambda: patterns.random(4, 4, "0.5"), TypeError, "density"),
    ("random-n_rows-negative", lambda: patterns.random(-1, 4, 0.5), ValueError, "n_rows"),
    ("random-n_cols-float", lambda: patterns.random(4, 4.0, 0.5), TypeError, "n_cols"),
    ("random-seed-negative", lambda: patterns.random(4, 4, 0.5, seed=-1), ValueError, "seed"),
    ("random-seed-beyond-uint64", lambda: patterns.random(4, 4, 0.5, seed=2**64), ValueError, "seed"),
    ("random-seed-float", lambda: patterns.random(4, 4, 0.5, seed=1.0), TypeError, "seed"),
    ("random-size-overflows", lambda: patterns.random(HUGE, HUGE, 0.5), ValueError, "4294967296"),
    # ---- from_block_layout
    ("block-layout-values-not-0-1", lambda: patterns.from_block_layout(torch.tensor([[0, 2]]), 2), ValueError,
     "layout"),
    ("block-layout-float", lambda: patterns.from_block_layout(torch.tensor([[0.0, 1.0]]), 2), TypeError, "layout"),
    ("block-layout-1d", lambda: patterns.from_block_layout(torch.ones(3, dtype=BOOL), 2), ValueError, "layout"),
    ("block-layout-3d", lambda: patterns.from_block_layout(torch.ones(1, 2, 2, dtype=BOOL), 2), ValueError, "layout"),
    ("block-size-zero", lambda: patterns.from_block_layout(torch.ones(2, 2, dtype=BOOL), 0), ValueError, "block_size"),
    ("block-size-bool", lambda: patterns.from_block_layout(torch.ones(2, 2, dtype=BOOL), True), TypeError,
     "block_size"),
    # ---- Pattern.from_dense
    ("from_dense-int-mask", lambda: Pattern.from_dense(torch.ones(2, 2, dtype=torch.int32)), TypeError, "mask"),
    ("from_dense-float-mask", lambda: Pattern.from_dense(torch.ones(2, 2)), TypeError, "mask"),
    ("from_dense-1d", lambda: Pattern.from_dense(torch.ones(4, dtype=BOOL)), ValueError, "mask"),
    ("from_dense-3d", lambda: Pattern.from_dense(torch.ones(2, 2, 2, dtype=BOOL)), ValueError, "mask"),
    ("from_dense-none", lambda: Pattern.from_dense(None), TypeError, "mask"),
    ("from_dense-ragged-list", lambda: Pattern.from_dense([[True], [True, False]]), TypeError, "mask"),
    # ---- Pattern.from_csr
    ("from_csr-unsorted-columns", lambda: Pattern.from_csr([0, 2], [1, 0], (1, 3)), ValueError, "col_indices.*sorted"),
    ("from_csr-duplicate-columns", lambda: Pattern.from_csr([0, 2], [1, 1], (1, 3)), ValueError, "col_indices.*unique"),
    ("from_csr-column-out-of-range", lambda: Pattern.from_csr([0, 1], [3], (1, 3)), ValueError, "col_indices"),
    ("from_csr-column-negative", lambda: Pattern.from_csr([0, 1], [-1], (1, 3)), ValueError, "col_indices"),
    ("from_csr-offsets-not-from-zero", lambda: Pattern.from_csr([1, 2], [0], (1, 3)), ValueError, "row_offsets"),
    ("from_csr-offsets-decreasing", lambda: Pattern.from_csr([0, 2, 1, 2], [0, 1], (3, 3)), ValueError, "row_offsets"),
    ("from_csr-offsets-negative", lambda: Pattern.from_csr([0, -1, 0], [], (2, 3)), ValueError, "row_offsets"),
    ("from_csr-offsets-too-short", lambda: Pattern.from_csr([0, 1], [0], (2, 3)), ValueError, "row_offsets"),
    ("from_csr-offsets-too-long", lambda: Pattern.from_csr([0, 1, 1, 1], [0], (2, 3)), ValueError, "row_offsets"),
    ("from_csr-offsets-empty", lambda: Pattern.from_csr(empty, empty, (0, 3)), ValueError, "row_offsets"),
    ("from_csr-last-offset-not-nnz", lambda: Pattern.from_csr([0, 1], [0, 1], (1, 3)), ValueError, "offset"),
    ("from_csr-last-offset-beyond-nnz", lambda: Pattern.from_csr([0, 5], [0, 1], (1, 3)), ValueError, "offset"),
    ("from_csr-float-offsets", lambda: Pattern.from_csr(torch.tensor([0.0, 1.0]), [0], (1, 3)), TypeError,
     "row_offsets"),
    ("from_csr-bool-columns", lambda: Pattern.from_csr([0, 1], torch.tensor([True]), (1, 3)), TypeError, "col_indices"),
    ("from_csr-2d-columns", lambda: Pattern.from_csr([0, 1], [[0]], (1, 3)), ValueError, "col_indices"),
    ("from_csr-string-offsets", lambda: Pattern.from_csr("01", [0], (1, 3)), TypeError, "row_offsets"),
    ("from_csr-uint64-offsets-beyond-int64", lambda: Pattern.from_csr(np.array([0, 2**63], np.uint64), [0], (1, 3)),
     ValueError, "row_offsets"),
    ("from_csr-shape-three-values", lambda: Pattern.from_csr([0, 1], [0], (1, 3, 1)), TypeError, "shape"),
    ("from_csr-shape-int", lambda: Pattern.from_csr([0, 1], [0], 3), TypeError, "shape"),
    ("from_csr-shape-float", lambda: Pattern.from_csr([0, 1], [0], (1.0, 3)), TypeError, r"shape\[0\]"),
    ("from_csr-shape-negative", lambda: Pattern.from_csr([0], [], (-1, 3)), ValueError, r"shape\[0\]"),
    ("from_csr-shape-int64-max-rows", lambda: Pattern.from_csr([0], [], (2**63 - 1, 1)), ValueError, "row_offsets"),
    ("from_csr-shape-beyond-int64", lambda: Pattern.from_csr([0], [], (2**63, 1)), ValueError, r"shape\[0\]"),
    # ---- Pattern.from_coo
    ("from_coo-length-mismatch", lambda: Pattern.from_coo([0, 1], [0], (2, 2)), ValueError, "rows.*cols"),
    ("from_coo-row-negative", lambda: Pattern.from_coo([-1], [0], (2, 2)), ValueError, "rows"),
    ("from_coo-row-out-of-range", lambda: Pattern.from_coo([2], [0], (2, 2)), ValueError, "rows"),
    ("from_coo-col-out-of-range", lambda: Pattern.from_coo([0], [5], (2, 2)), ValueError, "cols"),
    ("from_coo-float-rows", lambda: Pattern.from_coo([0.5], [0], (2, 2)), TypeError, "rows"),
    ("from_coo-bool-cols", lambda: Pattern.from_coo([0], [True], (2, 2)), TypeError, "cols"),
    ("from_coo-2d-rows", lambda: Pattern.from_coo([[0]], [0], (2, 2)), ValueError, "rows"),
    ("from_coo-shape-none", lambda: Pattern.from_coo([0], [0], None), TypeError, "shape"),
    ("from_coo-shape-negative", lambda: Pattern.from_coo([0], [0], (2, -2)), ValueError, r"shape\[1\]"),
    ("from_coo-shape-beyond-int64", lambda: Pattern.from_coo([0], [0], (2, 2**64)), ValueError, r"shape\[1\]"),
    # ---- Pattern itself
    ("Pattern-constructor", lambda: Pattern(), TypeError, "from_csr"),
    ("Pattern-and-other-shape", lambda: patterns.causal_1d(3) & patterns.causal_1d(4), ValueError, "other"),
    ("Pattern-or-other-shape", lambda: patterns.causal_1d(3) | patterns.causal_1d(4), ValueError, "other"),
    ("Pattern-equal-not-a-pattern", lambda: patterns.causal_1d(3).equal(torch.ones(3, 3)), TypeError, "other"),
]

if hasattr(patterns, "from_groups"):
    CASES += [
        ("from_groups-float-labels", lambda: patterns.from_groups(torch.tensor([0.0, 1.0])), TypeError, "row_labels"),
        ("from_groups-2d-col-labels", lambda: patterns.from_groups([0, 1], [[0, 1]]), ValueError, "col_labels"),
        ("from_groups-bool-labels", lambda: patterns.from_groups(torch.tensor([True])), TypeError, "row_labels"),
    ]


def test_the_catalogue_is_large_and_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("call, error, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_raises_a_named_error(call, error, message):
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    assert caught.type is error, f"expected {error.__name__}, got {caught.type.__name__}: {caught.value}"
    assert re.search(message, str(caught.value)), f"message does not name the argument: {caught.value}"
