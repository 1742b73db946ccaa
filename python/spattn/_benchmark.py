"""Timing and memory measurement shared by `spattn demo` and the scripts in bench/.

Times are medians of runs that alternate between the candidates (A, B, A, B, ...), so that a machine
getting slower or faster during the run affects every candidate alike. Peak memory is measured on the GPU
with the CUDA allocator's statistics, and on the CPU as the peak resident size of a fresh process that
runs only the measured work.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Callable

import torch
from torch.utils import benchmark


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(candidates: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1,
                 device: torch.device | str = "cpu", progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Median seconds per call of each candidate, measured in ``rounds`` alternating rounds after ``warmup``
    calls each (torch.utils.benchmark.Timer, which synchronises CUDA)."""
    device = torch.device(device)
    for name, fn in candidates.items():
        for _ in range(warmup):
            fn()
        _synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(rounds):
        for name, fn in candidates.items():
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
            samples[name].append(timer.timeit(1).median)
        if progress is not None:
            progress(f"round {round_index + 1}/{rounds}: " +
                     ", ".join(f"{name} {samples[name][-1] * 1e3:.1f} ms" for name in candidates))
    return {name: statistics.median(values) for name, values in samples.items()}


def cuda_peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated while ``fn`` runs, above what was allocated before, in MiB."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def process_peak_memory(spec: dict) -> float:
    """Peak resident memory (MiB) of a fresh Python process that builds a timm model as ``spec`` says
    (see spattn._memory_probe) and runs it: setup is the same for every candidate, so differences are the
    models' own."""
    result = subprocess.run([sys.executable, "-m", "spattn._memory_probe", json.dumps(spec)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"memory probe failed for {spec}:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])
