"""Malformed calls to the attention API, the building blocks, the ops and the bindings: each raises
TypeError or ValueError with a message naming the bad argument, before any kernel runs."""

from __future__ import annotations

import re

import pytest
import torch

import spattn
from spattn import ops
from spattn._core import _C

PATTERN = spattn.patterns.random(6, 5, 0.5, seed=1)
NNZ = PATTERN.nnz
T_PATTERN, PERMUTATION = PATTERN.transposed()
CSR = (PATTERN.row_offsets, PATTERN.col_indices)


def q4(n=6, d=4, dtype=torch.float32):
    return torch.randn(2, 3, n, d, dtype=dtype)


def k4(n=5, d=4, dtype=torch.float32):
    return torch.randn(2, 3, n, d, dtype=dtype)


sdpa = spattn.scaled_dot_product_attention

CASES = {
    "q_not_a_tensor": (lambda: sdpa([[1.0]], k4(), k4(), PATTERN), TypeError, "q"),
    "q_integer": (lambda: sdpa(q4().long(), k4(), k4(), PATTERN), TypeError, "q"),
    "k_other_dtype": (lambda: sdpa(q4(), k4(dtype=torch.float64), k4(), PATTERN), TypeError, "k"),
    "q_rank_2": (lambda: sdpa(torch.randn(6, 4), k4(), k4(), PATTERN), ValueError, "q"),
    "ranks_differ": (lambda: sdpa(q4(), k4()[0], k4()[0], PATTERN), ValueError, "k"),
    "k_batch_mismatch": (lambda: sdpa(q4(), k4()[:1], k4(), PATTERN), ValueError, "k"),
    "v_heads_mismatch": (lambda: sdpa(q4(), k4(), k4()[:, :2], PATTERN), ValueError, "v"),
    "head_dim_mismatch": (lambda: sdpa(q4(), k4(d=5), k4(), PATTERN), ValueError, "k"),
    "v_keys_mismatch": (lambda: sdpa(q4(), k4(), k4(n=4), PATTERN), ValueError, "v"),
    "pattern_wrong_shape": (lambda: sdpa(q4(n=7), k4(), k4(), PATTERN), ValueError, "pattern"),
    "pattern_not_a_pattern": (lambda: sdpa(q4(), k4(), k4(), torch.ones(6, 5, dtype=torch.bool)), TypeError,
                              "pattern"),
    "bias_wrong_nnz": (lambda: sdpa(q4(), k4(), k4(), PATTERN, bias=torch.randn(NNZ + 1)), ValueError, "bias"),
    "bias_per_head_with_3d_inputs": (lambda: sdpa(q4()[0], k4()[0], k4()[0], PATTERN, bias=torch.randn(3, NNZ)),
                                     ValueError, "bias"),
    "bias_wrong_heads": (lambda: sdpa(q4(), k4(), k4(), PATTERN, bias=torch.randn(2, NNZ)), ValueError, "bias"),
    "bias_other_dtype": (lambda: sdpa(q4(), k4(), k4(), PATTERN, bias=torch.randn(NNZ, dtype=torch.float64)),
                         TypeError, "bias"),
    "bias_not_a_tensor": (lambda: sdpa(q4(), k4(), k4(), PATTERN, bias=[0.0] * NNZ), TypeError, "bias"),
    "scale_not_a_number": (lambda: sdpa(q4(), k4(), k4(), PATTERN, scale="0.5"), TypeError, "scale"),
    "dropout_p_out_of_range": (lambda: sdpa(q4(), k4(), k4(), PATTERN, dropout_p=1.5), ValueError, "dropout_p"),
    "k_on_another_device": (lambda: sdpa(q4(), k4().to("meta"), k4(), PATTERN), ValueError, "k"),
    "float16_on_cpu": (lambda: sdpa(q4().half(), k4().half(), k4().half(), PATTERN), ValueError, "q"),
    "sddmm_dim_mismatch": (lambda: spattn.sddmm(q4(), k4(d=3), PATTERN), ValueError, "b"),
    "sddmm_pattern_shape": (lambda: spattn.sddmm(q4(n=5), k4(), PATTERN), ValueError, "pattern"),
    "softmax_wrong_nnz": (lambda: spattn.sparse_softmax(torch.randn(2, NNZ - 1), PATTERN), ValueError, "values"),
    "softmax_scalar": (lambda: spattn.sparse_softmax(torch.tensor(1.0), PATTERN), ValueError, "values"),
    "sddmm_unknown_backend": (lambda: spattn.sddmm(q4(), k4(), PATTERN, backend="cublas"), ValueError, "backend"),
    "spmm_cusparse_on_cpu": (lambda: spattn.spmm(torch.randn(2, 3, NNZ), k4(), PATTERN, backend="cusparse"),
                             ValueError, "backend"),
    "spmm_batch_mismatch": (lambda: spattn.spmm(torch.randn(3, NNZ), torch.randn(2, 5, 4), PATTERN), ValueError,
                            "values"),
    "spmm_pattern_columns": (lambda: spattn.spmm(torch.randn(2, NNZ), torch.randn(2, 6, 4), PATTERN), ValueError,
                             "pattern"),
    "module_dim_not_divisible": (lambda: spattn.SparseAttention(10, num_heads=3), ValueError, "dim"),
    "module_without_pattern": (lambda: spattn.SparseAttention(8, num_heads=2)(torch.randn(1, 6, 8)), ValueError,
                               "pattern"),
    # The ops and bindings check sizes themselves: nothing reaches the core with a wrong size.
    "op_row_offsets_too_short": (lambda: ops.sddmm(q4()[0], k4()[0], PATTERN.row_offsets[:-1], PATTERN.col_indices),
                                 ValueError, "row_offsets"),
    "op_col_indices_out_of_range": (lambda: ops.attention_forward(q4()[0], k4(n=3)[0], k4(n=3)[0], None, *CSR, 1.0),
                                    ValueError, "col_indices"),
    "op_bias_wrong_nnz": (lambda: ops.attention_forward(q4()[0], k4()[0], k4()[0], torch.randn(1, NNZ - 1), *CSR,
                                                        1.0), ValueError, "bias"),
    "op_values_wrong_batch": (lambda: ops.spmm(torch.randn(1, NNZ), k4()[0], *CSR), ValueError, "values"),
    "op_permutation_corrupt": (lambda: ops.sddmm_backward(torch.randn(3, NNZ), q4()[0], k4()[0], *CSR,
                                                          T_PATTERN.row_offsets, T_PATTERN.col_indices,
                                                          PERMUTATION.flip(0)), ValueError, "permutation"),
    "op_index_dtype": (lambda: ops.sparse_softmax(torch.randn(2, NNZ), PATTERN.row_offsets.int(), PATTERN.col_indices),
                       ValueError, "row_offsets"),
    "binding_non_contiguous": (lambda: _C.cpu_sddmm(q4()[0].transpose(1, 2), k4()[0], *CSR, torch.empty(3, NNZ)),
                               ValueError, "a"),
    "binding_lse_dtype": (lambda: _C.cpu_attention_forward(q4()[0], k4()[0], k4()[0], None, *CSR, None, None, 1.0,
                                                           torch.empty(3, 6, 4),
                                                           torch.empty(3, 6, dtype=torch.float64)),
                          ValueError, "lse"),
    "binding_workspace_too_small": (lambda: _C.cpu_attention_backward(
        *(torch.zeros(3, 6, 4),) * 2, k4()[0], k4()[0], None, torch.zeros(3, 6, 4), torch.zeros(3, 6), None, *CSR,
        T_PATTERN.row_offsets, T_PATTERN.col_indices, PERMUTATION, None, None, 1.0, torch.empty(3, 6, 4),
        torch.empty(3, 5, 4), torch.empty(3, 5, 4), None, torch.empty(1)), ValueError, "workspace"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_naming_the_argument(name):
    call, error, argument = CASES[name]
    with pytest.raises(error) as raised:
        call()
    assert re.search(rf"\b{argument}\b", str(raised.value)), str(raised.value)
