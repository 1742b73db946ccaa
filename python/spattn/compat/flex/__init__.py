"""FlexAttention's API (``torch.nn.attention.flex_attention``) on top of spattn: code written for FlexAttention
runs by changing its import::

    from spattn.compat.flex import create_block_mask, flex_attention

``create_block_mask`` returns an element-exact :class:`~spattn.Pattern` (any Pattern may serve as a
block_mask), and a score_mod that adds a term to the score becomes a bias on the pattern, evaluated once per
call, with exact gradients for the tensors it captures. Other score_mods are refused, never approximated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...functional import scaled_dot_product_attention
from ...pattern import Pattern
from .block_mask import and_masks, create_block_mask, noop_mask, or_masks
from .score_mod import bias_of_score_mod

__all__ = ["create_block_mask", "flex_attention", "and_masks", "or_masks", "noop_mask"]


def _full_pattern(n_rows: int, n_cols: int, device: torch.device) -> Pattern:
    """Every query attends to every key (FlexAttention without a block_mask): ``n_rows * n_cols`` entries."""
    row_offsets = torch.arange(0, n_rows * n_cols + 1, max(n_cols, 1)) if n_cols else torch.zeros(n_rows + 1)
    col_indices = torch.arange(n_cols).repeat(n_rows)
    return Pattern.from_csr(row_offsets.long(), col_indices, (n_rows, n_cols)).to(device)


def _aux_types() -> tuple[type | None, type | None]:
    """torch's ``(AuxRequest, AuxOutput)`` (torch >= 2.9; older versions have neither), imported only when a
    caller passes return_aux: torch's flex_attention module takes a while to import."""
    from torch.nn.attention import flex_attention as torch_flex_attention
    return getattr(torch_flex_attention, "AuxRequest", None), getattr(torch_flex_attention, "AuxOutput", None)


def flex_attention(query: Tensor, key: Tensor, value: Tensor, score_mod: Callable | None = None,
                   block_mask: Pattern | None = None, scale: float | None = None, enable_gqa: bool = False,
                   return_lse: bool = False, kernel_options: dict | None = None, *, return_aux=None) -> \
        Tensor | tuple[Tensor, Tensor] | tuple[Tensor, object]:
    """FlexAttention on a spattn pattern: ``softmax(score_mod(scale * q k^T)) v`` over the entries of block_mask.

    query ``[B, Hq, Nq, D]``, key ``[B, Hkv, Nk, D]``, value ``[B, Hkv, Nk, Dv]`` (``Hkv = Hq`` unless
    ``enable_gqa``, where ``Hkv`` divides ``Hq``); block_mask: any Pattern of shape ``(Nq, Nk)`` (from
    :func:`create_block_mask`, a generator in :mod:`spattn.patterns`, ...) or None for every key.
    score_mod ``(score, b, h, q_idx, kv_idx)`` must be ``score + f(b, h, q_idx, kv_idx)`` (or ``score - f``):
    f is evaluated once on the pattern's entries into a bias (per batch element only when f reads b), and
    autograd reaches the tensors it captures; other score_mods raise ValueError. scale defaults to
    ``1 / sqrt(D)``. Returns ``[B, Hq, Nq, Dv]``, and with ``return_lse`` also the natural-log log-sum-exp
    ``[B, Hq, Nq]``; queries without keys give 0 (and an LSE of -inf), as in FlexAttention.
    ``return_aux=AuxRequest(lse=True)`` (torch's newer spelling) returns ``(out, AuxOutput(lse=lse))``; its
    ``max_scores`` is refused. kernel_options (tuning of torch's kernels) is accepted for drop-in
    compatibility and changes nothing.
    """
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != 4:
            raise ValueError(f"{name} must be 4-D [B, H, N, D], got shape {tuple(tensor.shape)}")
    if score_mod is not None and not callable(score_mod):
        raise TypeError(f"score_mod must be None or a callable score_mod(score, b, h, q_idx, kv_idx), got "
                        f"{type(score_mod).__name__}")
    if kernel_options is not None and not isinstance(kernel_options, dict):
        raise TypeError(f"kernel_options must be None or a dict, got {type(kernel_options).__name__}")
    for name, flag in (("enable_gqa", enable_gqa), ("return_lse", return_lse)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if return_aux is not None:
        aux_request, aux_output = _aux_types()
        if aux_request is None or not isinstance(return_aux, aux_request):
            raise TypeError(f"return_aux must be None or a torch.nn.attention.flex_attention.AuxRequest, got "
                            f"{type(return_aux).__name__}")
        if return_aux.max_scores:
            raise ValueError("return_aux: max_scores is not available from spattn (request lse only)")
        if return_lse:
            raise ValueError("return_lse: pass either return_lse=True or return_aux, not both")
    if not enable_gqa and key.shape[1] != query.shape[1]:
        raise ValueError(f"key: {key.shape[1]} heads must match query's {query.shape[1]} (pass enable_gqa=True for "
                         f"grouped-query attention)")
    n_queries, n_keys = query.shape[2], key.shape[2]
    if block_mask is None:
        block_mask = _full_pattern(n_queries, n_keys, query.device)
    elif not isinstance(block_mask, Pattern):
        raise TypeError(f"block_mask must be a spattn.Pattern or None, got {type(block_mask).__name__} (build it "
                        f"with spattn.compat.flex.create_block_mask)")
    elif block_mask.shape != (n_queries, n_keys):
        raise ValueError(f"block_mask: shape {block_mask.shape} does not match (query.shape[2], key.shape[2]) = "
                         f"({n_queries}, {n_keys})")
    block_mask = block_mask.to(query.device)
    bias = None
    if score_mod is not None:
        bias = bias_of_score_mod(score_mod, block_mask, query.shape[0], query.shape[1], query.dtype)
    if return_aux is None:
        return scaled_dot_product_attention(query, key, value, block_mask, bias=bias, scale=scale,
                                            enable_gqa=enable_gqa, return_lse=return_lse)
    out, lse = scaled_dot_product_attention(query, key, value, block_mask, bias=bias, scale=scale,
                                            enable_gqa=enable_gqa, return_lse=True)
    return out, aux_output(lse=lse if return_aux.lse else None)
