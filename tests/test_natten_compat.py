"""spattn.compat.natten (na1d/na2d/na3d) and NeighborhoodAttention1D/2D/3D against float64 dense references
written here from NATTEN 0.21's definition: each query's key set from its per-axis window start and length
(the form of NATTEN's kernels' get_win_start; tests/test_neighborhood.py transcribes its flex mask instead),
masked softmax over the scaled scores, grouped heads by repetition, additional keys as extra columns."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import spattn
from spattn.compat import natten
from spattn.compat.natten import _dense_attention, _merge_attentions

NA = {1: natten.na1d, 2: natten.na2d, 3: natten.na3d}


# ---- reference -------------------------------------------------------------------------------------------
def _window(size: int, kernel: int, stride: int, dilation: int, causal: bool, x: int) -> list[int]:
    """The coordinates a query at x attends to along one axis (NATTEN 0.21): in x's dilation group, the
    window of its stride group's leader, clipped so that it stays inside the group (causal: ending at x)."""
    group = list(range(x % dilation, size, dilation))
    position, length = x // dilation, len(group)
    first_of_stride_group = position - position % stride
    if causal:
        leader = min(first_of_stride_group + stride - 1, length - 1)
        start = max(leader - kernel + 1, 0)
        return group[start:position + 1]
    leader = min(first_of_stride_group + stride // 2, length - 1)
    start = leader - kernel // 2
    start = max(0, min(start, length - kernel))
    return group[start:start + kernel]


def reference_mask(spatial, kernel_size, stride, dilation, is_causal) -> torch.Tensor:
    """[N, N] bool over row-major tokens: the key set of every query, coordinate by coordinate."""
    axes = list(zip(spatial, kernel_size, stride, dilation, is_causal))
    coordinates = list(itertools.product(*(range(size) for size in spatial)))
    index = {c: i for i, c in enumerate(coordinates)}
    mask = torch.zeros(len(coordinates), len(coordinates), dtype=torch.bool)
    for query in coordinates:
        windows = [_window(*axis, x) for axis, x in zip(axes, query)]
        for key in itertools.product(*windows):
            mask[index[query], index[key]] = True
    return mask


def _per_axis(value, n):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def reference_attention(query, key, value, mask, scale=None, additional_keys=None, additional_values=None):
    """float64 ``(out [B, *spatial, H, Dv], lse [B, *spatial, H])``, heads-last; mask [N, N]."""
    spatial, heads, head_dim = tuple(query.shape[1:-2]), query.shape[-2], query.shape[-1]
    scale = head_dim ** -0.5 if scale is None else scale

    def heads_first(t):
        return t.double().flatten(1, -3).transpose(1, 2)

    group = heads // key.shape[-2]
    q = heads_first(query)
    k, v = (heads_first(t).repeat_interleave(group, dim=1) for t in (key, value))
    scores = (scale * q @ k.transpose(-1, -2)).masked_fill(~mask, -math.inf)
    if additional_keys is not None:
        extra_k, extra_v = (heads_first(t).repeat_interleave(group, dim=1)
                            for t in (additional_keys, additional_values))
        scores = torch.cat([scores, scale * q @ extra_k.transpose(-1, -2)], dim=-1)
        v = torch.cat([v, extra_v], dim=-2)
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.softmax(scores, dim=-1) @ v
    batch = query.shape[0]
    return (out.transpose(1, 2).reshape(batch, *spatial, heads, v.shape[-1]),
            lse.transpose(1, 2).reshape(batch, *spatial, heads))


def _inputs(spatial, heads=2, heads_kv=None, head_dim=5, value_dim=None, batch=2, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    heads_kv = heads if heads_kv is None else heads_kv
    value_dim = head_dim if value_dim is None else value_dim

    def tensor(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()

    return (tensor(batch, *spatial, heads, head_dim), tensor(batch, *spatial, heads_kv, head_dim),
            tensor(batch, *spatial, heads_kv, value_dim))


def _compare_forward_and_backward(actual, expected, inputs, atol=1e-9, rtol=1e-7):
    """actual and expected are tuples of outputs of the same inputs; compares them and the gradients of
    a random weighting of all of them."""
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e.to(a.dtype), atol=atol, rtol=rtol)
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(e.shape, generator=generator, dtype=torch.float64) for e in expected]
    actual_grads = torch.autograd.grad(sum((a.double() * w).sum() for a, w in zip(actual, weights)), inputs)
    expected_grads = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)), inputs)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e.to(a.dtype), atol=atol, rtol=rtol)


# (spatial, kernel_size, stride, dilation, is_causal, head_dim, value_dim)
CASES = [
    ((9,), 3, 1, 1, False, 5, 5),
    ((10,), 4, 1, 2, False, 3, 7),      # even kernel, dilation, Dv != D
    ((11,), 5, 3, 2, True, 7, 7),       # causal with stride and dilation
    ((12,), 4, 4, 1, False, 5, 5),      # blocked
    ((7, 9), 3, 1, 1, False, 5, 5),
    ((7, 9), (2, 4), (2, 3), (3, 2), (False, True), 3, 6),
    ((8, 6), (4, 3), (4, 3), 1, (True, False), 9, 4),
    ((5, 10), (5, 4), (1, 4), (1, 2), False, 1, 1),
    ((4, 5, 6), 3, 1, 1, False, 5, 5),
    ((4, 6, 5), (2, 3, 4), (2, 2, 3), (2, 1, 1), (False, True, False), 3, 5),
    ((6, 4, 7), (3, 2, 3), (3, 1, 2), (2, 2, 1), (True, True, True), 7, 2),
]


def _case_id(case):
    spatial, kernel, stride, dilation, causal, head_dim, value_dim = case
    return f"{spatial}-k{kernel}-s{stride}-d{dilation}-c{causal}-D{head_dim}-Dv{value_dim}"


# ---- na1d / na2d / na3d ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_na_matches_dense_reference_forward_and_backward(case):
    spatial, kernel, stride, dilation, causal, head_dim, value_dim = case
    n = len(spatial)
    query, key, value = _inputs(spatial, head_dim=head_dim, value_dim=value_dim)
    out = NA[n](query, key, value, kernel, stride, dilation, causal)
    assert out.shape == (*query.shape[:-1], value_dim)
    mask = reference_mask(spatial, *(_per_axis(a, n) for a in (kernel, stride, dilation, causal)))
    expected, _ = reference_attention(query, key, value, mask)
    _compare_forward_and_backward((out,), (expected,), (query, key, value))


def test_defaults_and_explicit_scale():
    query, key, value = _inputs((6, 7))
    mask = reference_mask((6, 7), (3, 3), (1, 1), (1, 1), (False, False))
    torch.testing.assert_close(natten.na2d(query, key, value, 3, scale=0.3),
                               reference_attention(query, key, value, mask, scale=0.3)[0])
    torch.testing.assert_close(natten.na2d(query, key, value, (3, 3), (1, 1), (1, 1), (False, False)),
                               natten.na2d(query, key, value, 3))


@pytest.mark.parametrize("spatial, kernel", [((12,), (4,)), ((8, 9), (4, 3)), ((4, 6, 4), (2, 3, 2))])
def test_stride_equal_to_kernel_is_window_attention(spatial, kernel):
    """Blocked attention: partition the grid into kernel-sized windows and run dense attention in each."""
    n = len(spatial)
    query, key, value = _inputs(spatial, head_dim=3)
    out = NA[n](query, key, value, kernel, stride=kernel)

    def partition(t):  # [B, *spatial, H, D] -> [B * windows, prod(kernel), H, D]
        blocks = t.reshape(t.shape[0], *itertools.chain(*((s // k, k) for s, k in zip(spatial, kernel))),
                           *t.shape[-2:])
        order = [0, *range(1, 2 * n, 2), *range(2, 2 * n + 1, 2), 2 * n + 1, 2 * n + 2]
        return blocks.permute(order).reshape(-1, math.prod(kernel), *t.shape[-2:])

    q, k, v = (partition(t.double()).transpose(1, 2) for t in (query, key, value))
    windows = torch.softmax(q @ k.transpose(-1, -2) * 3 ** -0.5, dim=-1) @ v
    blocks = [s // kk for s, kk in zip(spatial, kernel)]
    expected = windows.transpose(1, 2).reshape(query.shape[0], *blocks, *kernel, *query.shape[-2:])
    inverse = [0, *itertools.chain(*((1 + i, 1 + n + i) for i in range(n))), 2 * n + 1, 2 * n + 2]
    expected = expected.permute(inverse).reshape(query.shape)
    _compare_forward_and_backward((out,), (expected,), (query, key, value))


@pytest.mark.parametrize("heads, heads_kv", [(4, 2), (6, 1), (3, 3)])
def test_grouped_query_attention(heads, heads_kv):
    spatial = (5, 6)
    query, key, value = _inputs(spatial, heads=heads, heads_kv=heads_kv, head_dim=3, value_dim=5)
    out = natten.na2d(query, key, value, (3, 2), stride=(2, 1), is_causal=(False, True))
    mask = reference_mask(spatial, (3, 2), (2, 1), (1, 1), (False, True))
    expected, _ = reference_attention(query, key, value, mask)
    _compare_forward_and_backward((out,), (expected,), (query, key, value))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_return_lse_is_heads_last_and_differentiable(n):
    spatial = {1: (9,), 2: (5, 6), 3: (3, 4, 5)}[n]
    query, key, value = _inputs(spatial, head_dim=3)
    out, lse = NA[n](query, key, value, 3, stride=2, is_causal=True, return_lse=True)
    assert lse.shape == query.shape[:-1] and lse.dtype == torch.float64
    mask = reference_mask(spatial, *(_per_axis(a, n) for a in (3, 2, 1, True)))
    _compare_forward_and_backward((out, lse), reference_attention(query, key, value, mask), (query, key, value))


def test_lse_of_float32_inputs_is_float32():
    query, key, value = (t.detach().float() for t in _inputs((10,)))
    out, lse = natten.na1d(query, key, value, 3, return_lse=True)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    mask = reference_mask((10,), (3,), (1,), (1,), (False,))
    expected_out, expected_lse = reference_attention(query, key, value, mask)
    torch.testing.assert_close(out, expected_out.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, expected_lse.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n, heads_kv, extra", [(1, 2, 3), (2, 2, 1), (3, 2, 4), (2, 1, 5)])
def test_additional_keys_and_values(n, heads_kv, extra):
    """Every query attends to its neighborhood and to the extra tokens (Nk = N + N_add != Nq); gradients
    reach the additional keys and values too."""
    spatial = {1: (8,), 2: (5, 6), 3: (3, 4, 5)}[n]
    query, key, value = _inputs(spatial, heads=2, heads_kv=heads_kv, head_dim=3, value_dim=4)
    generator = torch.Generator().manual_seed(3)
    extra_k = torch.randn(2, extra, heads_kv, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    extra_v = torch.randn(2, extra, heads_kv, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    out, lse = NA[n](query, key, value, 2, stride=2, dilation=1, is_causal=(n == 2), additional_keys=extra_k,
                     additional_values=extra_v, return_lse=True)
    mask = reference_mask(spatial, *(_per_axis(a, n) for a in (2, 2, 1, n == 2)))
    expected = reference_attention(query, key, value, mask, None, extra_k, extra_v)
    _compare_forward_and_backward((out, lse), expected, (query, key, value, extra_k, extra_v))
    # Without return_lse the output is the same.
    torch.testing.assert_close(NA[n](query, key, value, 2, 2, 1, n == 2, None, extra_k, extra_v), out)


def test_merge_with_empty_rows_and_rectangular_patterns():
    """The merge is exact where one part has no keys for a query (spattn's lse -inf, out 0): a random
    pattern with empty rows and Nq != Nk, merged with dense attention over extra keys, equals dense attention
    over the union; a query empty in both parts gets 0 and lse -inf, without NaN in values or gradients."""
    generator = torch.Generator().manual_seed(4)
    q = torch.randn(2, 3, 7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 9, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 9, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    extra_k = torch.randn(2, 3, 2, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    extra_v = torch.randn(2, 3, 2, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(7, 9, generator=generator) < 0.4
    mask[[1, 4]] = False
    pattern = spattn.Pattern.from_dense(mask)
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, scale=0.5, return_lse=True)
    extra_out, extra_lse = _dense_attention(q, extra_k, extra_v, 0.5)
    merged = _merge_attentions(out, lse, extra_out, extra_lse)
    scores = torch.cat([(0.5 * q @ k.transpose(-1, -2)).masked_fill(~mask, -math.inf),
                        0.5 * q @ extra_k.transpose(-1, -2)], dim=-1)
    expected = (torch.softmax(scores, -1) @ torch.cat([v, extra_v], -2), torch.logsumexp(scores, -1))
    _compare_forward_and_backward(merged, expected, (q, k, v, extra_k, extra_v))

    # No extra keys at all: the rows empty in the pattern stay empty.
    no_k, no_v = extra_k[:, :, :0], extra_v[:, :, :0]
    out, lse = spattn.scaled_dot_product_attention(q, k, v, pattern, scale=0.5, return_lse=True)
    merged_out, merged_lse = _merge_attentions(out, lse, *_dense_attention(q, no_k, no_v, 0.5))
    torch.testing.assert_close(merged_out, out)
    torch.testing.assert_close(merged_lse, lse)
    assert torch.all(merged_out[:, :, [1, 4]] == 0) and torch.all(merged_lse[:, :, [1, 4]] == -math.inf)
    grads = torch.autograd.grad(merged_out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


def test_heads_last_tensors_are_read_and_returned_without_copies(monkeypatch):
    """q/k/v reach spattn as [B, H, N, D] views of the caller's memory, and the output spattn returns is
    handed back heads-last as a view of the same memory."""
    import spattn.compat.natten as module

    seen = {}
    original = module.scaled_dot_product_attention

    def spy(q, k, v, pattern, **options):
        seen["inputs"] = (q.data_ptr(), k.data_ptr(), v.data_ptr())
        result = original(q, k, v, pattern, **options)
        seen["out"] = (result[0] if isinstance(result, tuple) else result).data_ptr()
        return result

    monkeypatch.setattr(module, "scaled_dot_product_attention", spy)
    # q, k, v sliced out of one fused projection: strided, not contiguous.
    qkv = torch.randn(2, 6, 7, 3, 4, 5)
    query, key, value = qkv.unbind(-3)
    out = natten.na2d(query, key, value, 3)
    assert seen["inputs"] == (query.data_ptr(), key.data_ptr(), value.data_ptr())
    assert out.data_ptr() == seen["out"] and out.is_contiguous() and out.shape == (2, 6, 7, 4, 5)


def test_torch_compile_fullgraph_matches_eager():
    """Grouped heads, additional keys and the lse under torch.compile(fullgraph=True), after an eager call at
    this size (which builds the pattern the compiled graph reads as a constant)."""
    query, key, value = (t.detach().float().requires_grad_() for t in _inputs((6, 5), heads=4, heads_kv=2))
    extra_k, extra_v = (torch.randn(2, 3, 2, 5, requires_grad=True) for _ in range(2))
    inputs = (query, key, value, extra_k, extra_v)

    def loss(q, k, v, additional_keys, additional_values):
        out, lse = natten.na2d(q, k, v, (3, 2), stride=(1, 2), is_causal=(True, False),
                               additional_keys=additional_keys, additional_values=additional_values, return_lse=True)
        return out.square().sum() + lse.sum()

    eager = torch.autograd.grad(loss(*inputs), inputs)
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(*inputs), inputs)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b)


def test_bfloat16_matches_the_reference_loosely():
    query, key, value = (t.detach().to(torch.bfloat16) for t in _inputs((4, 5, 6), head_dim=8))
    out = natten.na3d(query, key, value, (2, 3, 3), stride=(1, 2, 1))
    mask = reference_mask((4, 5, 6), (2, 3, 3), (1, 2, 1), (1, 1, 1), (False,) * 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), reference_attention(query, key, value, mask)[0], atol=3e-2, rtol=3e-2)


def _bad_calls():
    q, k, v = (t.detach() for t in _inputs((6, 6)))
    q1, k1, v1 = (t.detach() for t in _inputs((8,)))
    extra = torch.randn(2, 3, 2, 5, dtype=torch.float64)
    return [
        # what NATTEN's checks refuse (natten/utils/checks.py)
        (lambda: natten.na2d(q, k, v, 1), ValueError, "kernel_size"),
        (lambda: natten.na2d(q, k, v, (3, 1)), ValueError, r"kernel_size\[1\]"),
        (lambda: natten.na2d(q, k, v, (3, 3, 3)), ValueError, "kernel_size"),
        (lambda: natten.na2d(q, k, v, 7), ValueError, "kernel_size"),
        (lambda: natten.na2d(q, k, v, 3, dilation=3), ValueError, "kernel_size"),
        (lambda: natten.na2d(q, k, v, 3, dilation=0), ValueError, "dilation"),
        (lambda: natten.na2d(q, k, v, 3, stride=4), ValueError, "stride"),
        (lambda: natten.na2d(q, k, v, 3, stride=(1, 0)), ValueError, r"stride\[1\]"),
        (lambda: natten.na2d(q, k, v, 3, is_causal=(True,)), ValueError, "is_causal"),
        (lambda: natten.na2d(q, k, v, 3, is_causal=1), TypeError, "is_causal"),
        (lambda: natten.na2d(q, k, v, 2.5), TypeError, "kernel_size"),
        (lambda: natten.na1d(q, k, v, 3), ValueError, "query"),
        (lambda: natten.na2d(q1, k1, v1, 3), ValueError, "query"),
        (lambda: natten.na2d(q, k1, v, 3), ValueError, "key"),
        (lambda: natten.na2d(q, k[:, :5], v, 3), ValueError, "key"),
        (lambda: natten.na2d(q, k[..., :4], v, 3), ValueError, "key"),
        (lambda: natten.na2d(q, k, v[:1], 3), ValueError, "value"),
        (lambda: natten.na2d(q, k, v[..., :1, :], 3), ValueError, "value"),
        (lambda: natten.na2d(q, k.float(), v, 3), ValueError, "key"),
        (lambda: natten.na2d(q, k, "v", 3), TypeError, "value"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra), ValueError, "additional_values"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_values=extra), ValueError, "additional_keys"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra[0], additional_values=extra), ValueError,
         "additional_keys"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra[:1], additional_values=extra), ValueError,
         "additional_keys"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra, additional_values=extra[:, :2]), ValueError,
         "additional_values"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra[..., :4], additional_values=extra), ValueError,
         "additional_keys"),
        (lambda: natten.na1d(q1, k1, v1, 3, additional_keys=extra.float(), additional_values=extra), ValueError,
         "additional_keys"),
        (lambda: natten.na1d(q1, k1, v1, 3, return_lse=1), TypeError, "return_lse"),
        (lambda: natten.na1d(q1, k1, v1, 3, scale="x"), TypeError, "scale"),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_arguments_raise_naming_the_argument(index):
    call, error, name = _bad_calls()[index]
    with pytest.raises(error, match=name):
        call()


def test_bad_head_counts_raise():
    query, key, value = (t.detach() for t in _inputs((6,), heads=4, heads_kv=3))
    with pytest.raises(ValueError, match="key"):
        natten.na1d(query, key, value, 3)


# ---- NeighborhoodAttention1D/2D/3D -----------------------------------------------------------------------
def _dense_module(module, x):
    """The module's computation with the reference mask and a bias gathered coordinate by coordinate."""
    spatial, n = tuple(x.shape[1:-1]), module.na_dim
    heads, head_dim = module.num_heads, module.head_dim
    qkv = module.qkv(x).reshape(*x.shape[:-1], 3, heads, head_dim)
    query, key, value = qkv.unbind(-3)
    mask = reference_mask(spatial, module.kernel_size, module.stride, module.dilation, module.is_causal)
    q, k, v = (t.flatten(1, -3).transpose(1, 2) for t in (query, key, value))
    scores = q @ k.transpose(-1, -2) * head_dim ** -0.5
    if module.rpb is not None:
        coordinates = list(itertools.product(*(range(s) for s in spatial)))
        extents = [2 * kk - 1 for kk in module.kernel_size]
        table_index = torch.zeros(len(coordinates), len(coordinates), dtype=torch.long)
        for (i, a), (j, b) in itertools.product(enumerate(coordinates), repeat=2):
            flat = 0
            for axis in range(n):
                offset = (b[axis] - a[axis]) // module.dilation[axis] + module.kernel_size[axis] - 1
                flat = flat * extents[axis] + min(max(offset, 0), extents[axis] - 1)
            table_index[i, j] = flat
        scores = scores + module.rpb[:, table_index]
    out = torch.softmax(scores.masked_fill(~mask, -math.inf), -1) @ v
    return module.proj(out.transpose(1, 2).reshape(x.shape))


@pytest.mark.parametrize("cls, spatial, kwargs", [
    (spattn.NeighborhoodAttention1D, (11,), dict(kernel_size=4, dilation=2)),
    (spattn.NeighborhoodAttention1D, (9,), dict(kernel_size=3, stride=2, is_causal=True, rpb=False)),
    (spattn.NeighborhoodAttention2D, (6, 7), dict(kernel_size=(3, 2), stride=(3, 1), is_causal=(False, True))),
    (spattn.NeighborhoodAttention3D, (4, 5, 6), dict(kernel_size=(2, 3, 3), dilation=(2, 1, 1), stride=(1, 2, 3))),
    (spattn.NeighborhoodAttention3D, (3, 4, 4), dict(kernel_size=2, is_causal=True, rpb=False)),
])
def test_modules_match_dense_reference_forward_and_backward(cls, spatial, kwargs):
    torch.manual_seed(0)
    module = cls(12, 3, **kwargs).double()
    if module.rpb is not None:
        with torch.no_grad():
            module.rpb.normal_(0.0, 1.0)  # clearly non-zero, so a wrong gather cannot hide
    x = torch.randn(2, *spatial, 12, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == x.shape
    parameters = [x] + list(module.parameters())
    _compare_forward_and_backward((out,), (_dense_module(module, x),), parameters)


def test_modules_check_their_input_and_arguments():
    module = spattn.NeighborhoodAttention3D(8, 2, 2)
    assert module.rpb.shape == (2, 27)
    assert module.layout(3, 4, 5, "cpu")[0].shape == (60, 60)
    with pytest.raises(ValueError, match="x must be"):
        module(torch.randn(1, 4, 4, 8))
    with pytest.raises(ValueError, match="x must be"):
        spattn.NeighborhoodAttention1D(8, 2, 3)(torch.randn(1, 6, 6, 8))
    with pytest.raises(ValueError, match="kernel_size"):
        spattn.NeighborhoodAttention1D(8, 2, (3, 3))
    with pytest.raises(ValueError, match="stride"):
        spattn.NeighborhoodAttention1D(8, 2, 3, stride=4)(torch.randn(1, 6, 8))
    with pytest.raises(TypeError, match="is_causal"):
        spattn.NeighborhoodAttention2D(8, 2, 3, is_causal="yes")
    assert "stride=(1, 2)" in repr(spattn.NeighborhoodAttention2D(8, 2, 3, stride=(1, 2)))
