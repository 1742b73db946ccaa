"""Neighborhood attention patterns, their relative-position-bias index and NeighborhoodAttention2D against
references written here from the definition: loops over coordinates, dense float64 attention."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

import spattn
from spattn.neighborhood_attention import NeighborhoodAttention2D


# ---- reference -------------------------------------------------------------------------------------------
def _axis_matrix(size: int, kernel: int, dilation: int, causal: bool, stride: int = 1) -> torch.Tensor:
    """[size, size] bool: may a query at coordinate x attend to coordinate y along this axis. NATTEN 0.21's
    flex mask (src/natten/backends/flex.py), transcribed: positions count members of the dilation group, and
    each stride group's leader (its centre, or its last query when causal) places the window."""
    allowed = torch.zeros(size, size, dtype=torch.bool)
    for x in range(size):
        group = list(range(x % dilation, size, dilation))
        length, position = len(group), x // dilation
        for member, y in enumerate(group):
            if causal:
                leader = min(position // stride * stride + stride - 1, length - 1)
                allowed[x, y] = position - member >= 0 and leader - member < kernel
            else:
                left, right = kernel // 2, kernel // 2 + kernel % 2 - 1
                leader = min(position // stride * stride + stride // 2, length - 1)
                centre = min(max(leader, left), length - 1 - right)
                allowed[x, y] = 0 <= centre - member <= left or 0 <= member - centre <= right
    return allowed


def _per_axis(value, ndim):
    return list(value) if isinstance(value, (tuple, list)) else [value] * ndim


def reference_mask(shape, kernel_size, dilation=1, causal=False, stride=1) -> torch.Tensor:
    """[N, N] bool: the product of the per-axis windows, tokens numbered row-major."""
    ndim = len(shape)
    kernels, dilations, causals, strides = (_per_axis(v, ndim) for v in (kernel_size, dilation, causal, stride))
    mask = torch.ones(1, 1)
    for size, kernel, dil, cau, step in zip(shape, kernels, dilations, causals, strides):
        mask = torch.kron(mask, _axis_matrix(size, kernel, dil, cau, step).double())
    return mask > 0


def reference_bias_index(pattern, shape, kernel_size, dilation=1) -> list[int]:
    """Each entry's (key - query) // dilation + k - 1 per axis, combined row-major, entry by entry."""
    ndim = len(shape)
    kernels, dilations = _per_axis(kernel_size, ndim), _per_axis(dilation, ndim)

    def coordinates(token):
        coords = []
        for size in reversed(shape):
            token, x = divmod(token, size)
            coords.append(x)
        return coords[::-1]

    offsets, columns = pattern.row_offsets.tolist(), pattern.col_indices.tolist()
    result = []
    for query in range(pattern.shape[0]):
        xq = coordinates(query)
        for key in columns[offsets[query]:offsets[query + 1]]:
            xk = coordinates(key)
            index = 0
            for a in range(ndim):
                delta = xk[a] - xq[a]
                assert delta % dilations[a] == 0
                index = index * (2 * kernels[a] - 1) + delta // dilations[a] + kernels[a] - 1
            result.append(index)
    return result


def _cases():
    for size in (1, 4, 7, 10):
        for kernel in range(1, size + 1):
            for dilation in range(1, size // kernel + 1):
                for causal in (False, True):
                    yield (size,), kernel, dilation, causal
    for shape in ((6, 6), (5, 9), (12, 4), (8, 7)):
        for kernel, dilation, causal in itertools.product((1, 2, 3, 4), (1, 2), (False, True)):
            if kernel * dilation <= min(shape):
                yield shape, kernel, dilation, causal
    yield (9, 10), (3, 5), (3, 2), (True, False)
    yield (7, 12), (2, 3), (1, 4), (False, True)
    yield (4, 5, 6), 3, 1, False
    yield (4, 5, 6), (2, 3, 3), (2, 1, 2), (True, False, True)
    yield (3, 8, 5), (3, 4, 2), (1, 2, 2), False
    yield (6, 4, 4), (2, 2, 2), (3, 1, 2), (False, False, True)


CASES = list(_cases())


def _case_id(case):
    shape, kernel, dilation, causal = case
    return f"shape={shape}-k={kernel}-d={dilation}-causal={causal}"


# ---- patterns --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_neighborhood_matches_reference(case):
    shape, kernel, dilation, causal = case
    pattern = spattn.patterns.neighborhood(shape, kernel, dilation, causal)
    tokens = math.prod(shape)
    assert pattern.shape == (tokens, tokens)
    assert torch.equal(pattern.to_dense(), reference_mask(shape, kernel, dilation, causal))
    # The generator's output is valid CSR (sorted, unique, in range).
    spattn.Pattern.from_csr(pattern.row_offsets, pattern.col_indices, pattern.shape)


def _stride_cases():
    for size in (5, 8, 11):
        for kernel in range(2, size + 1):
            for stride in range(2, kernel + 1):
                for dilation in range(1, size // kernel + 1):
                    for causal in (False, True):
                        yield (size,), kernel, dilation, causal, stride
    yield (9, 10), (4, 3), (2, 1), (True, False), (3, 2)
    yield (8, 12), 4, 1, False, 4
    yield (4, 6, 7), (2, 3, 4), (2, 1, 1), (False, True, False), (2, 3, 3)


STRIDE_CASES = list(_stride_cases())


def _stride_case_id(case):
    return _case_id(case[:4]) + f"-s={case[4]}"


@pytest.mark.parametrize("case", STRIDE_CASES, ids=_stride_case_id)
def test_neighborhood_with_stride_matches_reference(case):
    shape, kernel, dilation, causal, stride = case
    pattern = spattn.patterns.neighborhood(shape, kernel, dilation, causal, stride=stride)
    assert torch.equal(pattern.to_dense(), reference_mask(shape, kernel, dilation, causal, stride))
    spattn.Pattern.from_csr(pattern.row_offsets, pattern.col_indices, pattern.shape)
    index = spattn.patterns.neighborhood_bias_index(shape, kernel, dilation, causal, stride=stride)
    assert index.tolist() == reference_bias_index(pattern, shape, kernel, dilation)


def test_stride_equal_to_kernel_is_window_attention():
    """Blocks of kernel_size tokens per axis attend to themselves: Swin's windows without a shift."""
    blocked = spattn.patterns.neighborhood((12, 9), (4, 3), stride=(4, 3))
    assert blocked.equal(spattn.patterns.swin(12, 9, (4, 3)))


@pytest.mark.parametrize("case", [c for c in CASES if not any(_per_axis(c[3], len(c[0])))], ids=_case_id)
def test_every_query_of_a_non_causal_pattern_has_the_whole_kernel(case):
    shape, kernel, dilation, _ = case
    pattern = spattn.patterns.neighborhood(shape, kernel, dilation)
    expected = math.prod(_per_axis(kernel, len(shape)))
    assert torch.all(pattern.row_lengths() == expected)


@pytest.mark.parametrize("case", CASES[::3], ids=_case_id)
def test_bias_index_matches_brute_force(case):
    shape, kernel, dilation, causal = case
    pattern = spattn.patterns.neighborhood(shape, kernel, dilation, causal)
    index = spattn.patterns.neighborhood_bias_index(shape, kernel, dilation, causal)
    assert index.dtype == torch.int64 and index.shape == (pattern.nnz,)
    assert index.tolist() == reference_bias_index(pattern, shape, kernel, dilation)
    table_size = math.prod(2 * k - 1 for k in _per_axis(kernel, len(shape)))
    assert int(index.min()) >= 0 and int(index.max()) < table_size


def test_bias_index_uses_the_whole_table_without_causality():
    index = spattn.patterns.neighborhood_bias_index((9, 11), (3, 5), dilation=2)
    assert sorted(set(index.tolist())) == list(range(5 * 9))


def test_arguments_accept_tuples_lists_and_torch_sizes():
    expected = spattn.patterns.neighborhood((6, 8), (3, 3), (2, 2), (False, False))
    for shape in ([6, 8], torch.Size([6, 8])):
        assert spattn.patterns.neighborhood(shape, [3, 3], 2, False).equal(expected)
    assert spattn.patterns.neighborhood((6, 8), torch.tensor(3), 2).equal(expected)


@pytest.mark.parametrize("call, error, name", [
    (lambda: spattn.patterns.neighborhood(5, 3), TypeError, "shape"),
    (lambda: spattn.patterns.neighborhood((), 3), ValueError, "shape"),
    (lambda: spattn.patterns.neighborhood((4, 4, 4, 4), 3), ValueError, "shape"),
    (lambda: spattn.patterns.neighborhood((4.0, 4), 3), TypeError, "shape[0]"),
    (lambda: spattn.patterns.neighborhood((4, 0), 1), ValueError, "shape[1]"),
    (lambda: spattn.patterns.neighborhood((8, 8), 0), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((8, 8), 2.5), TypeError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((8, 8), (3, 3, 3)), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((8, 8), (3, -3)), ValueError, "kernel_size[1]"),
    (lambda: spattn.patterns.neighborhood((8, 8), 9), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, 0), ValueError, "dilation"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, "2"), TypeError, "dilation"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, (1,)), ValueError, "dilation"),
    # 11 tokens, dilation 3: groups of 4, 4 and 3 tokens; a kernel of 4 misses the smallest.
    (lambda: spattn.patterns.neighborhood((11,), 4, 3), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((11,), 4, 3, True), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, 1, 1), TypeError, "causal"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, 1, (True,)), ValueError, "causal"),
    (lambda: spattn.patterns.neighborhood((2**40, 2**40), 1), ValueError, "too large"),
    (lambda: spattn.patterns.neighborhood((2**30,), 2**12), ValueError, "entries"),
    (lambda: spattn.patterns.neighborhood_bias_index((8, 8), 3, 5), ValueError, "kernel_size"),
    (lambda: spattn.patterns.neighborhood_bias_index("8", 3), TypeError, "shape"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, stride=0), ValueError, "stride"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, stride=(1, 4)), ValueError, "stride[1]"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, stride=(1, 2, 3)), ValueError, "stride"),
    (lambda: spattn.patterns.neighborhood((8, 8), 3, stride=1.5), TypeError, "stride"),
])
def test_bad_arguments_raise_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_256x256_kernel_7_builds_well_under_a_second():
    spattn.patterns.neighborhood((16, 16), 7)  # warm up
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        pattern = spattn.patterns.neighborhood((256, 256), 7)
        best = min(best, time.perf_counter() - start)
    assert pattern.nnz == 256 * 256 * 49
    assert best < 0.5, f"building took {best:.3f} s"


# ---- NeighborhoodAttention2D -----------------------------------------------------------------------------
def _dense_neighborhood_attention(module: NeighborhoodAttention2D, x: torch.Tensor) -> torch.Tensor:
    """The module's computation with a dense [N, N] mask and bias built from coordinates."""
    batch, height, width, channels = x.shape
    heads, head_dim = module.num_heads, channels // module.num_heads
    (kernel_h, kernel_w), (dilation_h, dilation_w) = module.kernel_size, module.dilation
    mask = reference_mask((height, width), module.kernel_size, module.dilation)
    qkv = module.qkv(x).reshape(batch, height * width, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scores = (q @ k.transpose(-1, -2)) * head_dim ** -0.5
    if module.rpb is not None:
        bias = torch.zeros(heads, height * width, height * width, dtype=x.dtype)
        for query, key in mask.nonzero().tolist():
            delta_h = (key // width - query // width) // dilation_h + kernel_h - 1
            delta_w = (key % width - query % width) // dilation_w + kernel_w - 1
            bias[:, query, key] = module.rpb[:, delta_h * (2 * kernel_w - 1) + delta_w]
        scores = scores + bias
    probabilities = scores.masked_fill(~mask, -math.inf).softmax(-1)
    out = (probabilities @ v).transpose(1, 2).reshape(batch, height, width, channels)
    return module.proj(out)


@pytest.mark.parametrize("grid, kernel_size, dilation, rpb", [
    ((7, 7), 3, 1, True),
    ((6, 9), (3, 5), (2, 1), True),
    ((8, 5), 5, 1, False),
])
def test_neighborhood_attention_2d_matches_dense_reference(grid, kernel_size, dilation, rpb):
    torch.manual_seed(0)
    module = NeighborhoodAttention2D(16, 4, kernel_size, dilation, rpb=rpb).double()
    if rpb:
        with torch.no_grad():
            module.rpb.normal_(0.0, 1.0)  # clearly non-zero, so a wrong gather cannot hide
    x = torch.randn(2, *grid, 16, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    expected = _dense_neighborhood_attention(module, x)
    torch.testing.assert_close(out, expected)

    grad = torch.randn_like(out)
    parameters = [x] + list(module.parameters())
    actual_grads = torch.autograd.grad(out, parameters, grad)
    expected_grads = torch.autograd.grad(expected, parameters, grad)
    for actual, wanted in zip(actual_grads, expected_grads):
        torch.testing.assert_close(actual, wanted)


def test_neighborhood_attention_2d_caches_the_pattern_per_size():
    module = NeighborhoodAttention2D(8, 2, 3)
    first = module.layout(6, 6, "cpu")
    assert module.layout(6, 6, "cpu")[0] is first[0]
    assert module.layout(6, 7, "cpu")[0].shape == (42, 42)
    assert module(torch.randn(1, 5, 4, 8)).shape == (1, 5, 4, 8)
    assert "rpb" in dict(module.named_parameters())
    assert module.rpb.shape == (2, 25)


def test_neighborhood_attention_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="num_heads"):
        NeighborhoodAttention2D(10, 3, 3)
    with pytest.raises(ValueError, match="kernel_size"):
        NeighborhoodAttention2D(8, 2, 0)
    with pytest.raises(TypeError, match="rpb"):
        NeighborhoodAttention2D(8, 2, 3, rpb=1)
    module = NeighborhoodAttention2D(8, 2, 3)
    with pytest.raises(ValueError, match="x must be"):
        module(torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        module(torch.randn(1, 2, 6, 8))


@pytest.mark.skipif(not torch.cuda.is_available() or not spattn.build_info()["cuda"],
                    reason="needs a CUDA device and a CUDA build")
def test_neighborhood_attention_2d_on_cuda_matches_cpu():
    import spattn.ops_cuda  # noqa: F401  (registers the CUDA kernels of the spattn ops)

    torch.manual_seed(0)
    module = NeighborhoodAttention2D(32, 4, 5, dilation=2)
    with torch.no_grad():
        module.rpb.normal_(0.0, 1.0)
    x = torch.randn(2, 14, 11, 32)
    expected = module(x)
    pattern, bias_index = module.layout(14, 11, "cuda")
    assert pattern.device.type == "cuda" and bias_index.device.type == "cuda"
    torch.testing.assert_close(module.cuda()(x.cuda()).cpu(), expected, rtol=2e-4, atol=2e-4)
