"""NaN on the GPU: a query attending to a NaN key (or a softmax row of NaN) gives NaN, as on the CPU and in
the dense reference — never zeros, as if the entry were masked."""

from __future__ import annotations

import pytest
import torch

import spattn.ops_cuda  # registers the CUDA kernels of the spattn ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_whose_only_key_is_nan_gives_nan(dtype):
    pattern = spattn.Pattern.from_csr([0, 1, 2, 2], [0, 1], (3, 2))  # row 2 is empty
    q = torch.ones(1, 3, 8, dtype=dtype, device="cuda")
    k = torch.ones(1, 2, 8, dtype=dtype, device="cuda")
    k[0, 0, 0] = float("nan")
    out = spattn.scaled_dot_product_attention(q, k, k.clone(), pattern)
    assert torch.isnan(out[0, 0]).all()        # attends to the NaN key
    assert torch.isfinite(out[0, 1]).all()     # does not
    assert (out[0, 2] == 0).all()              # attends to nothing


def test_softmax_of_a_nan_row_is_nan():
    pattern = spattn.Pattern.from_csr([0, 1, 3], [0, 0, 1], (2, 2))
    values = torch.tensor([[float("nan"), float("-inf"), float("-inf")]], device="cuda")
    out = spattn.sparse_softmax(values, pattern)
    assert torch.isnan(out[0, 0])
    assert (out[0, 1:] == 0).all()
