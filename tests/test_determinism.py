"""Determinism and thread safety on the CPU: the same call gives bitwise-equal results run to run, forward and
backward, and the same bits with 1 or 2 OpenMP threads (every output element has one writer and a fixed
order of summation, no atomics); concurrent calls from several Python threads, sharing patterns or not, give
the results of serial calls. (The GPU's deterministic mode is tested in test_cuda.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import spattn
from spattn import patterns


def problem(seed: int, pattern, dtype=torch.float32, heads=4, dim=32):
    """Inputs big enough for the kernels to go parallel (their threshold is 2**15 multiply-adds)."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = pattern.shape
    make = lambda n: torch.randn(2, heads, n, dim, generator=generator, dtype=torch.float64).to(dtype)  # noqa: E731
    bias = torch.randn(heads, pattern.nnz, generator=generator, dtype=torch.float64).to(dtype)
    return make(rows), make(cols), make(cols), bias, make(rows)


def forward_backward(pattern, q, k, v, bias, grad_out, fused=True):
    leaves = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    if fused:
        out = spattn.scaled_dot_product_attention(*leaves[:3], pattern, bias=leaves[3])
    else:
        scores = spattn.sddmm(leaves[0], leaves[1], pattern) * q.shape[-1] ** -0.5 + leaves[3]
        out = spattn.spmm(spattn.sparse_softmax(scores, pattern), leaves[2], pattern)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out)]


def assert_bitwise_equal(first: list, second: list) -> None:
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


PATTERN = patterns.local_1d(256, 33) | patterns.random(256, 256, 0.05, seed=3)  # row by row
SWIN = patterns.swin(28, 28, 7, shift_size=3)  # the execution plan's grouped kernels
PATTERNS = {"rows": PATTERN, "swin": SWIN}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_repeated_calls_are_bitwise_equal(kind, dtype, fused):
    pattern = PATTERNS[kind]
    inputs = problem(0, pattern, dtype)
    first = forward_backward(pattern, *inputs, fused=fused)
    for _ in range(3):
        assert_bitwise_equal(forward_backward(pattern, *inputs, fused=fused), first)


CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_determinism import PATTERNS, forward_backward, problem
results = [forward_backward(pattern, *problem(1, pattern, dtype), fused=fused) for pattern in PATTERNS.values()
           for dtype in (torch.float32, torch.float64, torch.bfloat16) for fused in (True, False)]
torch.save(results, sys.argv[1])
"""


def test_one_and_two_openmp_threads_give_the_same_bits(tmp_path: Path):
    results = {}
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.pt"
        environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent)), str(path)],
                       env=environment, check=True, timeout=300)
        results[threads] = torch.load(path)
    assert len(results[1]) == 12
    for one_thread, two_threads in zip(results[1], results[2]):
        assert_bitwise_equal(one_thread, two_threads)


def test_concurrent_python_threads_give_the_serial_results():
    # Threads 0 and 1 share one pattern object (and its cached transpose, built concurrently on first use);
    # threads 2 and 3 each use their own pattern, built inside the thread.
    shared = patterns.local_1d(128, 17) | patterns.random(128, 128, 0.05, seed=4)
    own_seeds = {2: 5, 3: 6}

    def pattern_for(index):
        return shared if index < 2 else patterns.random(128, 96, 0.1, seed=own_seeds[index])

    expected = {}
    for index in range(4):
        pattern = pattern_for(index)
        expected[index] = [forward_backward(pattern, *problem(10 + index, pattern), fused=fused)
                           for fused in (True, False)]
    # Fresh pattern objects, so that the threads race on building the cached transpose themselves.
    shared = patterns.local_1d(128, 17) | patterns.random(128, 128, 0.05, seed=4)
    failures, barrier = [], threading.Barrier(4)

    def worker(index):
        try:
            pattern = pattern_for(index)
            inputs = problem(10 + index, pattern)
            barrier.wait()
            for _ in range(5):
                for fused, wanted in zip((True, False), expected[index]):
                    assert_bitwise_equal(forward_backward(pattern, *inputs, fused=fused), wanted)
        except Exception as error:  # reported by the main thread
            failures.append((index, repr(error)))

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not failures, failures
