"""FlexAttention's score_mod, taken exactly when it adds a term to the score: ``score + f(b, h, q_idx, kv_idx)``.

spattn adds a bias to the scaled scores on the pattern, which is what such a score_mod does to FlexAttention's
(scaled) score. :func:`bias_of_score_mod` calls the score_mod once, with a stand-in for the score that only
allows adding or subtracting a term (any other use raises a ValueError naming score_mod: it is never
approximated) and with the pattern's entries as broadcastable index tensors, so the term it returns is the
bias itself: ``[nnz]``, ``[H, nnz]`` or ``[B, H, nnz]`` according to what it reads, with autograd to the
tensors it captures (a learnable relative-position table gets exact gradients).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from ...pattern import Pattern

__all__ = ["bias_of_score_mod"]

_ADD = {torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__, Tensor.__iadd__}
_SUBTRACT = {torch.sub, torch.subtract, Tensor.sub, Tensor.subtract, Tensor.__sub__, Tensor.__isub__}


def _not_additive(use: str) -> ValueError:
    return ValueError(f"score_mod must return score + f(b, h, q_idx, kv_idx) (or score - f, or score itself), but "
                      f"it uses the score in {use}: spattn applies additive score_mods exactly as a bias and does "
                      f"not approximate others (express masking with a mask_mod in create_block_mask)")


class _Score:
    """Stands for the score while score_mod runs; holds the sum of the terms added to it so far."""

    __slots__ = ("term", "dtype", "device")

    def __init__(self, term, dtype: torch.dtype, device: torch.device):
        self.term = term  # None (nothing added yet), a tensor or a real number
        self.dtype = dtype
        self.device = device

    def _plus(self, other, sign: int) -> "_Score":
        if isinstance(other, _Score):
            raise _not_additive("a sum or difference of two scores")
        if not isinstance(other, (Tensor, numbers.Real)) or isinstance(other, bool):
            raise _not_additive(f"an operation with {type(other).__name__}")
        other = other if sign > 0 else -other
        return _Score(other if self.term is None else self.term + other, self.dtype, self.device)

    def __add__(self, other):
        return self._plus(other, 1)

    __radd__ = __add__
    __iadd__ = __add__

    def __sub__(self, other):
        return self._plus(other, -1)

    __isub__ = __sub__

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        alpha = kwargs.pop("alpha", 1)
        name = getattr(func, "__name__", repr(func))
        if kwargs or len(args) != 2:
            raise _not_additive(f"{name} with these arguments")
        first, second = args
        if func is Tensor.__rsub__:  # second - first
            first, second, func = second, first, Tensor.sub
        if func in _ADD and isinstance(first, _Score):
            return first._plus(second * alpha if alpha != 1 else second, 1)
        if func in _ADD and isinstance(second, _Score) and alpha == 1:
            return second._plus(first, 1)
        if func in _SUBTRACT and isinstance(first, _Score):
            return first._plus(second * alpha if alpha != 1 else second, -1)
        raise _not_additive(name)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            # Python's and torch.compile's introspection (__dict__, __array__, ...): not a use of the score.
            raise AttributeError(name)
        raise _not_additive(f"score.{name}")


def _refuse(operator: str):
    def refuse(self, *args):
        raise _not_additive(operator)
    return refuse


for _operator in ("__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__",
                  "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__rsub__",
                  "__neg__", "__pos__", "__abs__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
                  "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__invert__", "__bool__", "__float__",
                  "__int__", "__index__", "__getitem__", "__iter__", "__len__", "__imul__", "__itruediv__"):
    setattr(_Score, _operator, _refuse(_operator.strip("_")))
_Score.__hash__ = object.__hash__


def entry_rows(pattern: Pattern) -> Tensor:
    """The row (query index) of every entry of ``pattern``, ``[nnz]``, on its device."""
    rows = torch.arange(pattern.shape[0], device=pattern.device)
    return torch.repeat_interleave(rows, pattern.row_lengths())


def bias_of_score_mod(score_mod: Callable, pattern: Pattern, batch: int, heads: int, dtype: torch.dtype) -> \
        Tensor | None:
    """The bias (added to the scaled scores) equal to ``score_mod``, None when it returns the score unchanged.

    ``[nnz]``, ``[heads, nnz]`` or ``[batch, heads, nnz]`` in CSR order according to whether the term reads
    ``h`` and ``b`` (int32 index tensors ``[batch, 1, 1]``, ``[1, heads, 1]``, ``q_idx`` and ``kv_idx``
    ``[1, 1, nnz]``), of ``dtype``, with autograd to the tensors score_mod captures.
    """
    device = pattern.device
    b = torch.arange(batch, dtype=torch.int32, device=device).view(batch, 1, 1)
    h = torch.arange(heads, dtype=torch.int32, device=device).view(1, heads, 1)
    q_idx = entry_rows(pattern).to(torch.int32).view(1, 1, -1)
    kv_idx = pattern.col_indices.to(torch.int32).view(1, 1, -1)
    result = score_mod(_Score(None, dtype, device), b, h, q_idx, kv_idx)
    if not isinstance(result, _Score):
        raise ValueError(f"score_mod must return the score plus a term, score + f(b, h, q_idx, kv_idx); it returned "
                         f"a {type(result).__name__} computed without the score, which spattn cannot apply as a bias")
    term = result.term
    if term is None:
        return None
    term = torch.as_tensor(term, device=device)
    full_shape = (batch, heads, pattern.nnz)
    try:
        if term.ndim > 3 or torch.broadcast_shapes(term.shape, full_shape) != full_shape:
            raise RuntimeError
    except RuntimeError:
        raise ValueError(f"score_mod: its term f(b, h, q_idx, kv_idx) has shape {tuple(term.shape)}, which does not "
                         f"broadcast to (b, h, entries) = {full_shape}: it must be elementwise in its arguments") \
            from None
    if not (term.is_floating_point() or term.dtype in (torch.int32, torch.int64, torch.bool)):
        raise TypeError(f"score_mod: its term must be real, got dtype {term.dtype}")
    term = term.reshape((1,) * (3 - term.ndim) + tuple(term.shape)).to(dtype)
    if term.shape[0] > 1:
        return term.expand(full_shape)
    if term.shape[1] > 1:
        return term[0].expand(full_shape[1:])
    return term[0, 0].expand(full_shape[2:])
