"""Loads the compiled module. It needs no other library at load time (the CUDA runtime is linked statically,
the driver and cuSPARSE are loaded on first use), so it imports beside a CPU-only torch as well."""

from . import _C

__all__ = ["_C"]
