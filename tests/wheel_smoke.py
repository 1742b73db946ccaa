"""Run by test_wheel.py with the python of a fresh virtual environment that holds the built wheel beside a
CPU-only torch and no NVIDIA library: imports spattn, runs CPU attention forward and backward, and prints
what it found as JSON (test_wheel.py asserts on it)."""

import ctypes
import importlib.metadata
import json
import os

import torch

import spattn


def mapped_libraries() -> list[str]:
    """The shared libraries this process has loaded so far."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if ".so" in line.split()[-1]})


def nvidia_libraries() -> list[str]:
    names = ("libcuda.", "libcudart", "libcusparse", "libnvJitLink", "libcublas")
    return [path for path in mapped_libraries() if os.path.basename(path).startswith(names)]


# CPU work first, before build_info() (which tries to load cuSPARSE, and the driver to count devices).
generator = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(2, 3, 49, 13, dtype=torch.float64, generator=generator, requires_grad=True) for _ in range(3))
pattern = spattn.patterns.swin(7, 7, window_size=4, shift_size=2)
spattn.scaled_dot_product_attention(q, k, v, pattern).sum().backward()
libraries_after_cpu_work = nvidia_libraries()

try:
    spattn.sddmm(q.float().detach(), k.float().detach(), pattern, backend="cusparse")
    cusparse_on_cpu = "no error"
except ValueError as error:
    cusparse_on_cpu = f"ValueError: {error}"


def driver_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


print(json.dumps({
    "spattn_file": spattn.__file__,
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "metadata_version": importlib.metadata.version("spattn"),
    "version": spattn.__version__,
    "cmake_dir": spattn.cmake_dir(),
    "build_info": spattn.build_info(),
    "nvidia_libraries_after_cpu_work": libraries_after_cpu_work,
    "nvidia_libraries_at_exit": nvidia_libraries(),
    "driver_loadable": driver_loadable(),
    "cusparse_on_cpu": cusparse_on_cpu,
}, indent=2))
