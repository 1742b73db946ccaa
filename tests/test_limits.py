"""Size limits: sizes past int32 work (every index and offset is int64), sizes past the supported limits are
refused up front with a ValueError that says why, and sizes that cannot be allocated are refused, not
crashed on.

A pattern with more than 2**31 entries needs 16 GiB for its column indices alone, too much for CI. What is
checked instead: the kernels address operands of more than 2**31 bytes (float32, 2 GiB + a little) and, when
the machine has the memory, of more than 2**31 elements (bfloat16, 4 GiB), reading rows past those offsets;
the size arithmetic of the core in int64 with overflow refused; and the refusals, each timed to be quick."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import torch

import spattn
from spattn import Pattern, patterns
from spattn._core import _C


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---- operands past 2**31 bytes / elements ----------------------------------------------------------------
# (dtype, elements of the big key tensor): float32 just past 2**31 bytes, bfloat16 just past 2**31 elements.
HEAD_DIM = 2**14
BIG = {torch.float32: 2**29 + 2 * HEAD_DIM, torch.bfloat16: 2**31 + 2 * HEAD_DIM}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["2**31-bytes", "2**31-elements"])
def test_kernels_address_operands_past_2_31(dtype):
    cols = BIG[dtype] // HEAD_DIM
    nbytes = cols * HEAD_DIM * dtype.itemsize
    if available_memory() < 2 * nbytes + (1 << 30):
        pytest.skip(f"needs {2 * nbytes / 2**30:.1f} GiB of free memory")
    # Keys: zero except the first and the last rows, whose offsets (last * HEAD_DIM) are past 2**31 bytes or
    # elements. A kernel indexing in 32 bits would read the wrong row (or crash).
    k = torch.zeros(1, cols, HEAD_DIM, dtype=dtype)
    k[0, -1] = 0.25
    k[0, 0] = -0.125
    q = torch.ones(1, 2, HEAD_DIM, dtype=dtype)
    v = torch.tensor([[1.0], [-1.0]], dtype=dtype).repeat(cols // 2 + 1, 1)[:cols].unsqueeze(0)
    v[0, -1] = 3.0
    pattern = Pattern.from_csr([0, 2, 3], [0, cols - 1, cols - 1], (2, cols))
    last = k[0, -1].double().sum().item()  # q . k_last
    first = k[0, 0].double().sum().item()
    scale = 1.0 / HEAD_DIM
    # sddmm: the scores are the two rows' dot products.
    scores = spattn.sddmm(q, k, pattern)
    torch.testing.assert_close(scores[0].double(), torch.tensor([first, last, last], dtype=torch.float64))
    # spmm: rows of the big operand weighted by the values.
    weights = torch.tensor([[0.5, 2.0, 1.0]], dtype=dtype)
    spmm_out = spattn.spmm(weights, k, pattern)
    torch.testing.assert_close(spmm_out[0, :, 0].double(), torch.tensor([0.5 * -0.125 + 2.0 * 0.25, 0.25],
                                                                         dtype=torch.float64))
    # Fused attention: softmax over the two scores of row 0; row 1 sees only the last key.
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, scale=scale)
    p = torch.softmax(torch.tensor([first, last], dtype=torch.float64) * scale, 0)
    expected = torch.tensor([[p[0] * 1.0 + p[1] * 3.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(out[0].double(), expected, rtol=1e-2, atol=1e-2)


# ---- size arithmetic in int64 ----------------------------------------------------------------------------
def test_workspace_size_is_computed_in_64_bits_and_overflow_is_refused():
    assert _C.cpu_attention_backward_workspace_size(2**20, 2**20) == 2**41
    assert _C.cpu_attention_backward_workspace_size(3, 2**31 + 1) == 2 * 3 * (2**31 + 1)
    with pytest.raises(ValueError, match="workspace"):
        _C.cpu_attention_backward_workspace_size(2**40, 2**40)


def test_offsets_past_int32_are_accepted_by_validation():
    # A pattern with 2**31 + 5 entries is 16 GiB; its offsets are checked without it: a wrong last offset
    # past int32 must be reported with its true value, not a wrapped one.
    with pytest.raises(ValueError, match=str(2**31 + 5)):
        Pattern.from_csr([0, 2**31 + 5], [0], (1, 3))


# ---- refusals ----------------------------------------------------------------------------------------------
REFUSED = [
    ("swin-2**31-squared", lambda: patterns.swin(2**31, 2**31, 1), "limit"),
    ("random-2**40-squared", lambda: patterns.random(2**40, 2**40, 0.5), "overflows"),
    ("random-nnz-past-2**40", lambda: patterns.random(2**21, 2**21, 0.5), "limit"),
    ("local_1d-2**40-rows", lambda: patterns.local_1d(2**40, 3), "too large"),
    ("causal_1d-nnz-past-2**40", lambda: patterns.causal_1d(2**21), "limit"),
    ("axial_2d-2**32-squared", lambda: patterns.axial_2d(2**32, 2**32), "4294967296"),
    ("from_coo-2**62-rows", lambda: Pattern.from_coo([0], [0], (2**62, 2)), "limit"),
    ("from_csr-int64-max-rows", lambda: Pattern.from_csr([0], [], (2**63 - 1, 1)), "row_offsets"),
]


@pytest.mark.parametrize("call, message", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_sizes_past_the_limits_are_refused_quickly(call, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        call()
    assert time.perf_counter() - start < 1.0, "refused only after doing (or allocating) the work"


def test_sizes_that_cannot_be_allocated_are_refused_with_a_value_error():
    # Under the 2**40-entry limit yet far past the memory of the process (limited to 6 GiB of address
    # space, in a child process so that the limit cannot hurt this one): ValueError, not MemoryError or a crash.
    script = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from spattn import patterns
        for call in (lambda: patterns.random(2**20, 2**20, 0.9), lambda: patterns.random(2**17, 2**17, 0.5),
                     lambda: patterns.local_1d(2**22, 2**12 + 1), lambda: patterns.axial_2d(2**12, 2**12),
                     lambda: patterns.swin(2**12, 2**12, 2**8)):
            try:
                call()
                print("no error")
            except ValueError as error:
                print("ValueError", error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("ValueError") and "cannot be allocated" in line
                                   for line in lines), result.stdout
