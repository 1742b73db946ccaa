"""Video Swin's 3-D shifted windows: spattn.patterns.swin_3d against Video Swin's own construction (label
volume, torch.roll, 3-D window partition, region mask) written here with torch."""

from __future__ import annotations

import pytest
import torch

import spattn


def _regions(window: int, shift: int):
    # Video Swin's compute_mask slices of one axis.
    return slice(-window), slice(-window, -shift), slice(-shift, None)


def _window_partition(volume: torch.Tensor, window) -> torch.Tensor:
    """[T, H, W] -> [windows, window_t * window_h * window_w], like Video Swin's window_partition."""
    T, H, W = volume.shape
    wt, wh, ww = window
    volume = volume.view(T // wt, wt, H // wh, wh, W // ww, ww)
    return volume.permute(0, 2, 4, 1, 3, 5).reshape(-1, wt * wh * ww)


def video_swin_mask(T: int, H: int, W: int, window, shift) -> torch.Tensor:
    """[N, N] bool in the original token order: Video Swin rolls the tokens by -shift, partitions the rolled
    volume into windows, and inside a window masks pairs whose region labels differ."""
    labels = torch.zeros(T, H, W, dtype=torch.long)
    if any(shift):
        count = 0
        for d in _regions(window[0], shift[0]):
            for h in _regions(window[1], shift[1]):
                for w in _regions(window[2], shift[2]):
                    labels[d, h, w] = count
                    count += 1
    tokens = torch.arange(T * H * W).view(T, H, W)
    rolled = torch.roll(tokens, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
    token_windows = _window_partition(rolled, window)
    label_windows = _window_partition(labels, window)  # labels live on the rolled volume
    mask = torch.zeros(T * H * W, T * H * W, dtype=torch.bool)
    for window_tokens, window_labels in zip(token_windows, label_windows):
        same_region = window_labels[:, None] == window_labels[None, :]
        mask[window_tokens[:, None], window_tokens[None, :]] = same_region
    return mask


CASES = [
    ((4, 8, 8), (2, 4, 4), (0, 0, 0)),
    ((4, 8, 8), (2, 4, 4), (1, 2, 2)),
    ((8, 6, 12), (4, 3, 4), (2, 1, 2)),
    ((8, 6, 12), (4, 3, 4), (3, 2, 1)),
    ((2, 12, 6), (2, 4, 6), (1, 0, 3)),
    ((6, 4, 10), (3, 4, 5), (0, 3, 0)),
    ((3, 9, 4), (1, 3, 2), (0, 1, 1)),
    ((6, 6, 6), (6, 6, 6), (3, 2, 5)),
]


@pytest.mark.parametrize("shape, window, shift", CASES)
def test_swin_3d_matches_video_swin(shape, window, shift):
    pattern = spattn.patterns.swin_3d(*shape, window, shift)
    assert torch.equal(pattern.to_dense(), video_swin_mask(*shape, window, shift))
    spattn.Pattern.from_csr(pattern.row_offsets, pattern.col_indices, pattern.shape)


def test_int_window_and_shift_apply_to_every_axis():
    assert spattn.patterns.swin_3d(4, 4, 4, 2, 1).equal(spattn.patterns.swin_3d(4, 4, 4, (2, 2, 2), (1, 1, 1)))
    assert spattn.patterns.swin_3d(4, 4, 4, 2).equal(spattn.patterns.swin_3d(4, 4, 4, 2, 0))


def test_sizes_not_a_multiple_of_the_window_give_partial_border_groups():
    # Per axis, groups [0, shift), [shift, shift + window), ... cut at the border: on one frame, Swin's 2-D
    # pattern; along time, the same groups.
    assert spattn.patterns.swin_3d(1, 10, 7, (1, 4, 3), (0, 2, 1)).equal(spattn.patterns.swin(10, 7, (4, 3), (2, 1)))
    pattern = spattn.patterns.swin_3d(5, 1, 1, (2, 1, 1), (1, 0, 0))
    groups = torch.tensor([0, 1, 1, 2, 2])
    assert torch.equal(pattern.to_dense(), groups[:, None] == groups[None, :])


@pytest.mark.parametrize("call, error, name", [
    (lambda: spattn.patterns.swin_3d(0, 4, 4, (1, 2, 2)), ValueError, "T"),
    (lambda: spattn.patterns.swin_3d(4.0, 4, 4, 2), TypeError, "T"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, 5), ValueError, "window_size"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, (2, 2)), ValueError, "window_size"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, (2, 0, 2)), ValueError, "window_size"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, 2, 2), ValueError, "shift_size"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, 2, (0, 0, -1)), ValueError, "shift_size"),
    (lambda: spattn.patterns.swin_3d(4, 4, 4, 2, (0, 0, 0.5)), TypeError, "shift_size"),
])
def test_bad_arguments_raise_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
