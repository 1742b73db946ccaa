"""spattn: attention over any sparsity pattern stored as CSR.

Swin's shifted windows, local, axial, dilated, global-token, block (BigBird) and random attention are all
one :class:`Pattern` and one set of kernels.
"""

from __future__ import annotations

import os as _os

from ._core import _C
from . import layouts, patterns
from .pattern import Pattern
from .functional import scaled_dot_product_attention, sddmm, sparse_softmax, spmm
from .modules import SparseAttention
from . import ops_cuda  # noqa: F401  (registers the CUDA kernels of the ops)
from . import timm
from . import torchvision
from . import transformers
from .neighborhood_attention import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__version__ = _C.__version__

__all__ = ["Pattern", "patterns", "layouts", "scaled_dot_product_attention", "sddmm", "sparse_softmax", "spmm",
           "SparseAttention", "NeighborhoodAttention1D", "NeighborhoodAttention2D",
           "NeighborhoodAttention3D", "timm", "torchvision", "transformers", "build_info",
           "cmake_dir", "__version__"]


def build_info() -> dict:
    """What this build contains: ``version``, ``cuda`` (kernels compiled in), ``cuda_archs``,
    ``cuda_version``, ``cusparse`` (the cuSPARSE path compiled in), ``openmp``, ``compiler``; and what this
    machine offers now: ``cusparse_loadable``, ``cusparse_load_error`` (why not, or ``""``) and
    ``cusparse_version`` (libcusparse is loaded on first use; 0 when it cannot be), ``cuda_devices`` (0
    without a driver)."""
    info = dict(_C.build_info())
    info["cuda_devices"] = _C.cuda_device_count()
    return info


def cmake_dir() -> str:
    """The folder holding ``spattnConfig.cmake``: pass it to CMake as ``spattn_DIR``."""
    # Next to the compiled module: in an editable install the .py files stay in the source tree.
    here = _os.path.dirname(_os.path.abspath(_C.__file__))
    for libdir in ("lib", "lib64"):
        candidate = _os.path.join(here, libdir, "cmake", "spattn")
        if _os.path.exists(_os.path.join(candidate, "spattnConfig.cmake")):
            return candidate
    raise FileNotFoundError("spattn's CMake package is not installed next to the Python package "
                            f"(looked in {here}/lib*/cmake/spattn)")
