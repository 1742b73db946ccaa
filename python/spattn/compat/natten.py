"""NATTEN 0.21's functional neighborhood attention on spattn: :func:`na1d`, :func:`na2d`, :func:`na3d`.

Same arguments and semantics as ``natten.na1d/na2d/na3d``: heads-last tensors ``[B, *spatial, H, D]``,
per-axis ``kernel_size``, ``stride``, ``dilation`` and ``is_causal`` (one value or a tuple per axis), even
kernel sizes, ``stride <= kernel_size`` (``stride == kernel_size`` is blocked window attention), grouped-query
attention (key/value with fewer heads, dividing the query's), and ``additional_keys``/``additional_values``
that every query attends to besides its neighborhood. The window rule is NATTEN's (written out in
``cpp/include/spattn/neighborhood.hpp``); the pattern is built once per geometry in C++ and cached. Under
``torch.compile`` (``fullgraph=True`` included) the cached pattern is read as a constant: call once eagerly
at each input size first, since tracing cannot build one.

What NATTEN refuses is refused, with a ValueError naming the argument (TypeError for a value of the wrong
type): ``kernel_size < 2``, ``stride < 1`` or ``stride > kernel_size``, ``dilation < 1``,
``kernel_size * dilation`` larger than the input along an axis, a tuple of the wrong length, tensors whose
ranks, batch, token layout, head counts or head dims disagree, and ``additional_keys`` without
``additional_values`` (or the reverse). Only the CPU/CUDA spattn kernels run: NATTEN's ``backend``, tile
shape and ``torch_compile`` options have no counterpart and are not accepted.

Query, key and value are read in place (``[B, *spatial, H, D]`` viewed as ``[B, H, N, D]``, no copy) and the
output is returned in the heads-last layout without a copy. Additional keys/values are not concatenated to
the neighborhood's: as NATTEN does, their attention is computed apart (dense over the ``N_add`` extra tokens:
``B * H * N * N_add`` scores) and merged exactly with the neighborhood's through both log-sum-exps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional import scaled_dot_product_attention
from ..neighborhood_attention import _axis_arguments, _heads_first, _heads_last, _neighborhood_layout

__all__ = ["na1d", "na2d", "na3d"]

# NATTEN refuses a kernel of one token (natten/utils/checks.py, check_kernel_size_arg: all >= 2).
_NATTEN_MINIMUM_KERNEL = 2


def _check_tensor(tensor, name: str, rank: int, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != rank:
        raise ValueError(f"{name} must be a {rank}-D tensor {layout}, got shape {tuple(tensor.shape)}")


def _check_same_dtype_and_device(query: Tensor, **tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        if tensor.dtype != query.dtype or tensor.device != query.device:
            raise ValueError(f"{name} must have query's dtype and device ({query.dtype} on {query.device}), got "
                             f"{tensor.dtype} on {tensor.device}")


def _check_query_key_value(na_dim: int, query, key, value) -> None:
    spatial = ", ".join(["X"] if na_dim == 1 else ["X", "Y"] if na_dim == 2 else ["X", "Y", "Z"])
    for name, tensor, dim in (("query", query, "D"), ("key", key, "D"), ("value", value, "Dv")):
        heads = "H" if name == "query" else "H_kv"
        _check_tensor(tensor, name, na_dim + 3, f"[B, {spatial}, {heads}, {dim}] for na{na_dim}d")
    _check_same_dtype_and_device(query, key=key, value=value)
    for name, tensor in (("key", key), ("value", value)):
        if tensor.shape[:-2] != query.shape[:-2]:
            raise ValueError(f"{name}: batch and token layout {tuple(tensor.shape[:-2])} must match query's "
                             f"{tuple(query.shape[:-2])}")
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(f"key: head dim {key.shape[-1]} must match query's {query.shape[-1]}")
    if value.shape[-2] != key.shape[-2]:
        raise ValueError(f"value: {value.shape[-2]} heads, key has {key.shape[-2]}; they must match")
    if query.shape[-2] % key.shape[-2] != 0:
        raise ValueError(f"key: its {key.shape[-2]} heads must divide query's {query.shape[-2]} (grouped-query "
                         f"attention)")


def _check_additional(query: Tensor, key: Tensor, value: Tensor, additional_keys, additional_values) -> None:
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be both tensors or both None")
    if additional_keys is None:
        return
    _check_tensor(additional_keys, "additional_keys", 4, "[B, N_add, H_kv, D]")
    _check_tensor(additional_values, "additional_values", 4, "[B, N_add, H_kv, Dv]")
    _check_same_dtype_and_device(query, additional_keys=additional_keys, additional_values=additional_values)
    for name, tensor, like in (("additional_keys", additional_keys, key),
                               ("additional_values", additional_values, value)):
        if tensor.shape[0] != like.shape[0] or tuple(tensor.shape[2:]) != tuple(like.shape[-2:]):
            what = "key" if like is key else "value"
            raise ValueError(f"{name}: batch {tensor.shape[0]}, heads and head dim {tuple(tensor.shape[2:])} must "
                             f"match {what}'s ({like.shape[0]}, {tuple(like.shape[-2:])})")
    if additional_values.shape[1] != additional_keys.shape[1]:
        raise ValueError(f"additional_values: {additional_values.shape[1]} tokens, additional_keys has "
                         f"{additional_keys.shape[1]}; they must match")


def _dense_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Every query against every key: ``(out [B, H, N, Dv], lse [B, H, N])``, computed and returned (lse
    always, out before the caller casts it) in float32 at least. q ``[B, H, N, D]``; k, v
    ``[B, H_kv, N_add, *]`` with H_kv dividing H (query head h reads kv head h // (H // H_kv), as in
    spattn's grouped-query attention); no key gives lse -inf and out 0."""
    compute = torch.promote_types(q.dtype, torch.float32)
    grouped_q = q.unflatten(1, (k.shape[1], -1)).to(compute)                   # [B, H_kv, G, N, D]
    scores = scale * grouped_q @ k.unsqueeze(2).transpose(-1, -2).to(compute)  # [B, H_kv, G, N, N_add]
    out = torch.softmax(scores, dim=-1) @ v.unsqueeze(2).to(compute)
    return out.flatten(1, 2), torch.logsumexp(scores, dim=-1).flatten(1, 2)


def _merge_attentions(out_a: Tensor, lse_a: Tensor, out_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    """Two attentions of the same queries over disjoint key sets -> the attention over their union:
    ``out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b)``, ``lse = log(e^lse_a + e^lse_b)``
    (NATTEN's merge_attentions), computed stably and differentiable in all four inputs. out ``[..., Dv]``,
    lse ``[...]`` (-inf where a part has no key; a query with none in either part gets out 0, lse -inf).
    The result has out_a's dtype, lse lse_a's."""
    # Shifting by the larger lse keeps the exponentials in range; the shift cancels, so it carries no gradient.
    # Where both are -inf it is 0 instead, so that both weights are exp(-inf) = 0 rather than NaN.
    top = torch.maximum(lse_a, lse_b).detach()
    top = torch.where(top == float("-inf"), torch.zeros_like(top), top)
    weight_a, weight_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    total = weight_a + weight_b
    lse = top + torch.log(total)
    total = torch.where(total > 0, total, torch.ones_like(total))
    compute = lse_a.dtype
    out = (weight_a.unsqueeze(-1) * out_a.to(compute) + weight_b.unsqueeze(-1) * out_b.to(compute)) \
        / total.unsqueeze(-1)
    return out.to(out_a.dtype), lse


def _neighborhood_attention(na_dim: int, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                            additional_keys, additional_values, return_lse):
    _check_query_key_value(na_dim, query, key, value)
    kernel_size, stride, dilation, is_causal = _axis_arguments(na_dim, kernel_size, stride, dilation, is_causal,
                                                               minimum_kernel=_NATTEN_MINIMUM_KERNEL)
    _check_additional(query, key, value, additional_keys, additional_values)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__} {return_lse!r}")
    spatial = tuple(query.shape[1:1 + na_dim])
    # The core checks the geometry against the input (kernel_size * dilation <= size, stride <= kernel_size).
    pattern, _ = _neighborhood_layout(spatial, kernel_size, stride, dilation, is_causal, query.device,
                                      with_bias_index=False)

    q, k, v = (_heads_first(t, na_dim) for t in (query, key, value))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    merge = additional_keys is not None
    result = scaled_dot_product_attention(q, k, v, pattern, scale=scale, enable_gqa=k.shape[1] != q.shape[1],
                                          return_lse=return_lse or merge)
    out, lse = result if return_lse or merge else (result, None)
    if merge:
        extra_out, extra_lse = _dense_attention(q, _heads_first(additional_keys, 1),
                                                _heads_first(additional_values, 1), scale)
        out, lse = _merge_attentions(out, lse, extra_out, extra_lse)
    out = _heads_last(out, spatial)
    return (out, _heads_last(lse, spatial)) if return_lse else out


_DOC = """{n}-D neighborhood attention (NATTEN 0.21's ``natten.na{n}d``), heads-last.

    query ``[B, {spatial}, H, D]``; key ``[B, {spatial}, H_kv, D]``; value ``[B, {spatial}, H_kv, Dv]``
    (H_kv divides H: query head h reads kv head ``h // (H // H_kv)``). ``kernel_size``, ``stride``,
    ``dilation`` (ints) and ``is_causal`` (bool) are one value or a tuple of {n}, one per axis;
    ``kernel_size >= 2`` (even sizes allowed), ``1 <= stride <= kernel_size``,
    ``kernel_size * dilation <= size`` per axis. ``scale`` defaults to ``D ** -0.5``.
    ``additional_keys [B, N_add, H_kv, D]`` and ``additional_values [B, N_add, H_kv, Dv]`` (both or neither)
    are attended by every query besides its neighborhood.

    Returns out ``[B, {spatial}, H, Dv]``, and with ``return_lse`` also the log-sum-exp of each query's
    scaled scores, ``[B, {spatial}, H]`` (float32; float64 for float64 inputs). Differentiable in query,
    key, value and the additional keys/values. Bad arguments raise ValueError/TypeError naming them.
    """


def na1d(query: Tensor, key: Tensor, value: Tensor, kernel_size, stride=1, dilation=1, is_causal=False,
         scale: float | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False):
    return _neighborhood_attention(1, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                                   additional_keys, additional_values, return_lse)


def na2d(query: Tensor, key: Tensor, value: Tensor, kernel_size, stride=1, dilation=1, is_causal=False,
         scale: float | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False):
    return _neighborhood_attention(2, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                                   additional_keys, additional_values, return_lse)


def na3d(query: Tensor, key: Tensor, value: Tensor, kernel_size, stride=1, dilation=1, is_causal=False,
         scale: float | None = None, additional_keys: Tensor | None = None, additional_values: Tensor | None = None,
         return_lse: bool = False):
    return _neighborhood_attention(3, query, key, value, kernel_size, stride, dilation, is_causal, scale,
                                   additional_keys, additional_values, return_lse)


na1d.__doc__ = _DOC.format(n=1, spatial="X")
na2d.__doc__ = _DOC.format(n=2, spatial="X, Y")
na3d.__doc__ = _DOC.format(n=3, spatial="X, Y, Z")
