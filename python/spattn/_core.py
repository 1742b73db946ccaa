"""Loads the compiled module. It needs no library beyond the system's at load time (the CUDA runtime is
linked statically, the driver and cuSPARSE are loaded on first use), so it imports beside a CPU-only torch
too. torch is still imported first: its wheels ship their own libgomp.so.1, and whichever copy is loaded
first serves both, so torch must get the one it was built with (spattn needs only old OpenMP symbols)."""

import torch  # noqa: F401  (import order matters, see above)

from . import _C  # noqa: E402

__all__ = ["_C"]
