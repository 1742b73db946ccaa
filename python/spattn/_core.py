"""Loads the compiled module. torch is imported first: it loads the CUDA libraries (cuSPARSE among
them) that libspattn links against, from the same nvidia wheels."""

import torch  # noqa: F401  (import order matters, see above)

from . import _C  # noqa: E402

__all__ = ["_C"]
