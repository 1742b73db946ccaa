"""spattn.compat.xformers.attention_patterns against xformers' own formulas, rewritten here with torch the
way xformers computes them (cdist distances, the Swin anchor grid, tril, kron, max_pool2d), over many
sizes; the quick_* layouts against the SparsityConfig transcription in test_layouts; bad arguments."""

import itertools
import math

import pytest
import torch

from spattn.compat.xformers import attention_patterns as ap
from test_layouts import reference_bigbird, reference_fixed, reference_longformer, reference_variable

# ---- xformers' formulas ----------------------------------------------------------------------------------


def _grid(*sizes):
    return torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")


def xformers_distance(*sizes, p=2.0, weights=None):
    """xformers' local_nd_distance, in float64 without the matrix-multiply shortcut: xformers' float32
    cdist is only approximately right at exact ties, which the comparison would otherwise trip on."""
    weights = weights or (1,) * len(sizes)
    grid = torch.stack([axis.flatten() * w for axis, w in zip(_grid(*sizes), weights)], dim=1).double()
    return torch.cdist(grid, grid, p=p, compute_mode="donot_use_mm_for_euclid_dist")


def xformers_swin(H, W, window_size, shift_size):
    i, j = _grid(H, W)
    i, j = i + 0.5, j + 0.5
    extra = int(shift_size % window_size != 0)
    ii, jj = _grid(H // window_size + extra, W // window_size + extra)
    s = (-shift_size) % window_size
    offset = window_size / 2 - s
    ii, jj = ii * window_size + offset, jj * window_size + offset
    inputs = torch.stack([i.flatten(), j.flatten()], 1).double()
    anchors = torch.stack([ii.flatten(), jj.flatten()], 1).double()
    anchor_id = torch.cdist(inputs, anchors, p=2, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
    return anchor_id[:, None] == anchor_id[None, :]


def xformers_dilated(H, W, k):
    d_h = xformers_distance(H, W, p=1, weights=(1, 0))
    d_w = xformers_distance(H, W, p=1, weights=(0, 1))
    return (d_h.floor() % k == 0) & (d_w.floor() % k == 0)


def xformers_pattern_to_layout(mask, block_size):
    squeeze = mask.ndim == 2
    mask = mask.unsqueeze(0) if squeeze else mask
    layout = torch.nn.functional.max_pool2d(mask.to(torch.float), kernel_size=block_size, stride=block_size)
    layout = layout.to(torch.long)
    return layout.squeeze(0) if squeeze else layout


def check_dense(result, expected):
    assert result.dtype == torch.bool and result.shape == expected.shape
    assert torch.equal(result, expected)


# ---- token-level patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize("window_size", [1, 2, 3, 4, 6])
def test_swin_attention_pattern(window_size):
    for H, W in itertools.product([window_size, 2 * window_size, 3 * window_size], repeat=2):
        if H * W > 400:
            continue
        for shift_size in range(window_size):
            check_dense(ap.swin_attention_pattern(H, W, window_size, shift_size),
                        xformers_swin(H, W, window_size, shift_size))


def test_local_1d_pattern():
    for attn_size, window_size in itertools.product([0, 1, 2, 5, 16, 33], [1, 3, 5, 9, 41]):
        expected = xformers_distance(attn_size, p=1.0) < window_size // 2 + 1
        check_dense(ap.local_1d_pattern(attn_size, window_size), expected)


@pytest.mark.parametrize("attn_size", [0, 1, 2, 7, 64])
def test_causal_1d_pattern(attn_size):
    check_dense(ap.causal_1d_pattern(attn_size), torch.tril(torch.ones(attn_size, attn_size, dtype=torch.bool)))


@pytest.mark.parametrize("p", [0.0, 1.0, 2.0, 3.0, math.inf])
def test_local_2d_pattern(p):
    for (H, W), distance in itertools.product([(1, 1), (1, 9), (4, 4), (5, 7), (12, 9)],
                                              [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.2, 100.0]):
        check_dense(ap.local_2d_pattern(H, W, distance, p), xformers_distance(H, W, p=p) < distance)
    # xformers' default p.
    check_dense(ap.local_2d_pattern(6, 5, 2.5), xformers_distance(6, 5, p=2.0) < 2.5)


@pytest.mark.parametrize("H,W", [(1, 1), (1, 7), (6, 1), (4, 4), (5, 9), (13, 11)])
def test_axial_and_dilated_2d_pattern(H, W):
    check_dense(ap.axial_2d_pattern(H, W), xformers_distance(H, W, p=0) < 2)
    check_dense(ap.dilated_2d_pattern(H, W), xformers_dilated(H, W, 2))
    for k in [1, 3, 4, 20]:
        check_dense(ap.dilated_2d_pattern(H, W, k), xformers_dilated(H, W, k))


@pytest.mark.parametrize("n", [0, 1, 5, 40])
def test_global_token_pattern(n):
    generator = torch.Generator().manual_seed(n)
    for fraction in [0.0, 0.1, 0.5, 1.0]:
        flags = torch.rand(n, generator=generator) < fraction
        check_dense(ap.global_token_pattern(flags), flags[None, :] | flags[:, None])


def test_random_pattern():
    mask = ap.random_pattern(300, 0.7, seed=1)
    assert mask.dtype == torch.bool and mask.shape == (300, 300)
    # Kept with probability 1 - sparsity = 0.3: 27,000 of 90,000, standard deviation ~137.
    assert abs(int(mask.sum()) - 27_000) < 1_000
    assert torch.equal(ap.random_pattern(300, 0.7, seed=1), mask)
    assert not torch.equal(ap.random_pattern(300, 0.7, seed=2), mask)
    # Without a seed, torch's global generator decides, as for xformers' torch.rand.
    torch.manual_seed(5)
    first = ap.random_pattern(50, 0.5)
    torch.manual_seed(5)
    assert torch.equal(ap.random_pattern(50, 0.5), first)
    assert ap.random_pattern(0, 0.5).shape == (0, 0)


# ---- block layouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [1, 2, 5])
def test_layout_to_pattern(block_size):
    generator = torch.Generator().manual_seed(block_size)
    layout = (torch.rand(3, 4, 6, generator=generator) < 0.4).long()
    expected = torch.kron(layout, torch.ones(block_size, block_size)).bool()
    check_dense(ap.layout_to_pattern(layout, block_size), expected)  # [heads, nb, nb]
    check_dense(ap.layout_to_pattern(layout[1], block_size), expected[1])  # [nb, nb]
    check_dense(ap.layout_to_pattern(layout.bool(), block_size), expected)
    check_dense(ap.layout_to_pattern(layout[None], block_size), expected[None])  # more leading dims
    assert ap.layout_to_pattern(layout[:0], block_size).shape == (0, 4 * block_size, 6 * block_size)


@pytest.mark.parametrize("block_size", [1, 2, 4, 8])
def test_pattern_to_layout(block_size):
    generator = torch.Generator().manual_seed(block_size)
    mask = torch.rand(2, 16, 24, generator=generator) > 0.98
    for m in (mask, mask[0], mask.long()):
        result = ap.pattern_to_layout(m, block_size)
        expected = xformers_pattern_to_layout(m.bool(), block_size)
        assert result.dtype == torch.long and torch.equal(result, expected)


def test_layout_round_trip():
    layout = ap.quick_fixed_layout(2, 4, 64)
    assert torch.equal(ap.pattern_to_layout(ap.layout_to_pattern(layout, 4), 4), layout)


@pytest.mark.parametrize("seq_len", [48, 64, 80, 208])
def test_quick_layouts(seq_len):
    block_size, heads = 16, 3
    n = seq_len // block_size
    references = {ap.quick_fixed_layout: reference_fixed(n), ap.quick_variable_layout: reference_variable(n),
                  ap.quick_bslongformer_layout: reference_longformer(n)}
    for quick, reference in references.items():
        layout = quick(heads, block_size, seq_len)
        assert layout.dtype == torch.int64 and layout.shape == (heads, n, n)
        assert torch.equal(layout, reference.long().expand(heads, n, n))
    bird = ap.quick_bigbird_layout(heads, block_size, seq_len, seed=4)
    assert bird.dtype == torch.int64 and bird.shape == (heads, n, n)
    assert (bird >= reference_bigbird(n).long()).all()  # plus one random block per row
    assert all(torch.equal(bird[h], bird[0]) for h in range(heads))  # one layout shared by all heads
    assert torch.equal(ap.quick_bigbird_layout(heads, block_size, seq_len, seed=4), bird)
    torch.manual_seed(0)
    first = ap.quick_bigbird_layout(heads, block_size, seq_len)
    torch.manual_seed(0)
    assert torch.equal(ap.quick_bigbird_layout(heads, block_size, seq_len), first)


def test_quick_layouts_are_writable_copies():
    layout = ap.quick_fixed_layout(2, 16, 64)
    layout[0].zero_()
    assert layout[1].any()


# ---- bad arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call,error,name", [
    (lambda: ap.swin_attention_pattern(6, 8, 4), ValueError, "window_size"),
    (lambda: ap.swin_attention_pattern(8, 8, 4, 4), ValueError, "shift_size"),
    (lambda: ap.swin_attention_pattern(8, 8, 4, -1), ValueError, "shift_size"),
    (lambda: ap.swin_attention_pattern(8, 8, 0), ValueError, "window_size"),
    (lambda: ap.swin_attention_pattern(8.0, 8, 4), TypeError, "H"),
    (lambda: ap.swin_attention_pattern(0, 8, 4), ValueError, "H"),
    (lambda: ap.local_1d_pattern(8, 4), ValueError, "window_size"),
    (lambda: ap.local_1d_pattern(8, 0), ValueError, "window_size"),
    (lambda: ap.local_1d_pattern(-1, 3), ValueError, "attn_size"),
    (lambda: ap.local_1d_pattern("8", 3), TypeError, "attn_size"),
    (lambda: ap.causal_1d_pattern(-2), ValueError, "attn_size"),
    (lambda: ap.local_2d_pattern(4, 4, "2"), TypeError, "distance"),
    (lambda: ap.local_2d_pattern(4, 4, 2, p=-1.0), ValueError, "p"),
    (lambda: ap.local_2d_pattern(-4, 4, 2), ValueError, "H"),
    (lambda: ap.axial_2d_pattern(4, -1), ValueError, "W"),
    (lambda: ap.dilated_2d_pattern(4, 4, 0), ValueError, "k"),
    (lambda: ap.global_token_pattern(torch.ones(4, dtype=torch.long)), TypeError, "attention_query_mask"),
    (lambda: ap.global_token_pattern(torch.ones(2, 2, dtype=torch.bool)), ValueError, "attention_query_mask"),
    (lambda: ap.global_token_pattern([True, False]), TypeError, "attention_query_mask"),
    (lambda: ap.random_pattern(4, 1.0), ValueError, "sparsity"),
    (lambda: ap.random_pattern(4, 0.0), ValueError, "sparsity"),
    (lambda: ap.random_pattern(4, float("nan")), ValueError, "sparsity"),
    (lambda: ap.random_pattern(4, 0.5, seed=-1), ValueError, "seed"),
    (lambda: ap.layout_to_pattern(torch.ones(4), 2), ValueError, "layout"),
    (lambda: ap.layout_to_pattern(torch.ones(2, 2), 2), TypeError, "layout"),
    (lambda: ap.layout_to_pattern(torch.full((2, 2), 3), 2), ValueError, "layout"),
    (lambda: ap.layout_to_pattern(torch.ones(2, 2, dtype=torch.bool), 0), ValueError, "block_size"),
    (lambda: ap.pattern_to_layout(torch.ones(6, 6, dtype=torch.bool), 4), ValueError, "block_size"),
    (lambda: ap.pattern_to_layout(torch.ones(6, dtype=torch.bool), 2), ValueError, "mask"),
    (lambda: ap.pattern_to_layout(torch.ones(4, 4), 2), TypeError, "mask"),
    (lambda: ap.pattern_to_layout(torch.full((4, 4), 2), 2), ValueError, "mask"),
    (lambda: ap.quick_fixed_layout(2, 16, 100), ValueError, "seq_len"),
    (lambda: ap.quick_fixed_layout(0, 16, 64), ValueError, "num_heads"),
    (lambda: ap.quick_variable_layout(2, 0, 64), ValueError, "block_size"),
    (lambda: ap.quick_bslongformer_layout(2, 16, 32), ValueError, "num_sliding_window_blocks"),
    (lambda: ap.quick_bigbird_layout(2, 16, 32), ValueError, "num_sliding_window_blocks"),
])
def test_bad_arguments_name_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_stay_on_the_input_device():
    flags = torch.tensor([True, False, False, True], device="cuda")
    assert ap.global_token_pattern(flags).device.type == "cuda"
    layout = ap.quick_fixed_layout(2, 2, 8).cuda()
    mask = ap.layout_to_pattern(layout, 2)
    assert mask.device.type == "cuda" and torch.equal(mask.cpu(), ap.layout_to_pattern(layout.cpu(), 2))
    back = ap.pattern_to_layout(mask, 2)
    assert back.device.type == "cuda" and torch.equal(back.cpu(), layout.cpu())
