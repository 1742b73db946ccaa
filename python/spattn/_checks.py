"""Argument checks shared by every public function: the right type, or a TypeError/ValueError that
names the argument. Values the core can check (ranges, consistency) are left to the core, whose
spattn::Error arrives as ValueError."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

_INT64_MAX = 2**63 - 1


def as_int(value, name: str, minimum: int | None = None, maximum: int = _INT64_MAX) -> int:
    """A Python/NumPy/0-d tensor integer (not bool) as int, optionally >= minimum; at most ``maximum``
    (int64's largest by default; an unsigned 64-bit seed passes 2**64 - 1)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < -_INT64_MAX or value > max(maximum, _INT64_MAX):
        raise ValueError(f"{name} = {value} does not fit in a 64-bit integer")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def as_float(value, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def as_pair(value, name: str, minimum: int | None = None) -> tuple[int, int]:
    """An int (used for both axes) or a pair of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {len(value)} values: {value!r}")
        return (as_int(value[0], f"{name}[0]", minimum), as_int(value[1], f"{name}[1]", minimum))
    v = as_int(value, name, minimum)
    return (v, v)


def as_shape(value, name: str = "shape") -> tuple[int, int]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (n_rows, n_cols), got {value!r}")
    return (as_int(value[0], f"{name}[0]", 0), as_int(value[1], f"{name}[1]", 0))


def as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        # Index arrays and masks are read on the CPU: a meta tensor has no data to read.
        if value.device.type == "meta":
            raise ValueError(f"{name} must hold data, got a tensor on the meta device")
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}") from error


def as_index_vector(value, name: str) -> torch.Tensor:
    """A 1-D integer array as a contiguous int64 CPU tensor (the core's index type)."""
    tensor = as_tensor(value, name)
    # An empty list arrives as float64 (NumPy's default), yet holds no non-integer.
    if tensor.numel() == 0 and not isinstance(value, torch.Tensor) and tensor.is_floating_point():
        tensor = tensor.to(torch.int64)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{name} must hold integers, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    return tensor.detach().to(device="cpu", dtype=torch.int64).contiguous()


def as_bool_array(value, name: str, ndim: int, allow_01: bool = False) -> torch.Tensor:
    """A bool array of the given rank as a contiguous uint8 CPU tensor (what the core reads).
    allow_01 also accepts integer arrays holding only 0 and 1 (block layouts are written that way)."""
    tensor = as_tensor(value, name)
    if tensor.dtype != torch.bool:
        if not allow_01 or tensor.is_floating_point() or tensor.is_complex():
            raise TypeError(f"{name} must be a bool tensor, got dtype {tensor.dtype}")
        if tensor.numel() and not bool(((tensor == 0) | (tensor == 1)).all()):
            raise ValueError(f"{name} must hold only 0 and 1")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(tensor.shape)}")
    return tensor.detach().to(device="cpu").to(torch.uint8).contiguous()
