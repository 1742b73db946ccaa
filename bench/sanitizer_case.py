"""A tiny case that runs every spattn CUDA kernel once (fused attention forward/backward on the fast and
generic paths, with bias and empty rows, grouped-query attention with a gradient reaching lse; SDDMM, softmax,
SpMM and their backward; the cuSPARSE path), for compute-sanitizer:
`compute-sanitizer --tool memcheck python bench/sanitizer_case.py`. Kept small so it runs in seconds under the
sanitizer."""

import torch

import spattn
from spattn import _C, ops_cuda

ops = torch.ops.spattn
cuda = torch.device("cuda")
torch.manual_seed(0)

mask = spattn.patterns.random(24, 20, 0.3, seed=1).to_dense()
mask[3] = False  # an empty row
irregular = spattn.Pattern.from_dense(mask)
swin = spattn.patterns.swin(8, 8, 4, shift_size=2)

for pattern in (irregular, swin):
    p = pattern.to(cuda)
    t, permutation = p.transposed()
    ro, ci, tro, tci = p.row_offsets, p.col_indices, t.row_offsets, t.col_indices
    n_q, n_k = p.shape
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for d, dv in ((32, 32), (64, 64), (128, 128), (24, 40), (300, 8)):
            q = torch.randn(9, n_q, d, device=cuda, dtype=dtype)
            k = torch.randn(9, n_k, d, device=cuda, dtype=dtype)
            v = torch.randn(9, n_k, dv, device=cuda, dtype=dtype)
            for bias in (None, torch.randn(2, p.nnz, device=cuda, dtype=dtype)):
                out, lse = ops.attention_forward(q, k, v, bias, ro, ci, 0.2)
                ops.attention_backward(torch.randn_like(out), q, k, v, bias, out, lse, ro, ci, tro, tci, permutation,
                                       0.2, bias is not None)
        a = torch.randn(3, n_q, 16, device=cuda, dtype=dtype)
        b = torch.randn(3, n_k, 16, device=cuda, dtype=dtype)
        values = ops.sddmm(a, b, ro, ci)
        ops.sddmm_backward(values, a, b, ro, ci, tro, tci, permutation)
        probabilities = ops.sparse_softmax(values, ro, ci)
        ops.sparse_softmax_backward(values, probabilities, ro, ci)
        out = ops.spmm(probabilities, b, ro, ci)
        ops.spmm_backward(out, probabilities, b, ro, ci, tro, tci, permutation)
    if _C.build_info()["cusparse"]:
        a = torch.randn(3, n_q, 16, device=cuda)
        b = torch.randn(3, n_k, 16, device=cuda)
        values = ops_cuda.cusparse_sddmm(a, b, ro, ci)
        ops_cuda.cusparse_spmm(values, b, ro, ci)

# The grouped forward and backward (execution plan; tensor cores for float16 / bfloat16 with its schedule):
# single-tile groups (Swin windows and regions sharing steps), groups wider than a 64-column tile, a group
# longer than a 64-row step, columns shared between groups (the column pass over unowned columns), singleton
# and empty rows; cp.async and element-wise gathers, more than 48 KiB of shared memory, and the generic
# fallback past 128.
wide_mask = torch.zeros(90, 150, dtype=torch.bool)
wide_mask[:10, :130] = True
wide_mask[10:15, 5:70] = True
wide_mask[15:19] = spattn.patterns.random(4, 150, 0.3, seed=2).to_dense()
wide_mask[20:90, 140:150] = True  # 70 rows: two chunks
wide = spattn.Pattern.from_dense(wide_mask)  # row 19 is empty
for pattern, dtype, dims in ((swin, torch.float32, ((32, 32), (24, 40), (128, 128))),
                             (swin, torch.bfloat16, ((32, 32), (300, 8))),
                             (wide, torch.float16, ((32, 32), (24, 40), (17, 9))),
                             (swin, torch.float16, ((128, 64),)),
                             (wide, torch.float32, ((128, 128),)),
                             (irregular, torch.bfloat16, ((64, 64),))):
    p = pattern.to(cuda)
    group_offsets, group_rows = p.plan()
    steps, unowned_columns = p.plan_schedule()
    t, permutation = p.transposed()
    transposed = (t.row_offsets, t.col_indices, permutation)
    n_q, n_k = p.shape
    for d, dv in dims:
        q = torch.randn(3, n_q, d, device=cuda, dtype=dtype)
        k = torch.randn(3, n_k, d, device=cuda, dtype=dtype)
        v = torch.randn(3, n_k, dv, device=cuda, dtype=dtype)
        for bias in (None, torch.randn(2, p.nnz, device=cuda, dtype=dtype)):
            # With the plan's schedule (the register-resident tensor-core kernels for float16 / bfloat16) and
            # without (the SIMT kernels).
            for schedule in ((steps, unowned_columns), (None, None)):
                out, lse = ops.attention_forward_grouped(q, k, v, bias, p.row_offsets, p.col_indices, group_offsets,
                                                         group_rows, 0.2, *transposed, *schedule)
                ops.attention_backward(torch.randn_like(out), q, k, v, bias, out, lse, p.row_offsets, p.col_indices,
                                       *transposed, 0.2, bias is not None, group_offsets, group_rows, *schedule)

# The tensor-core kernels on strided operands: q, k, v views of one [B, N, 3, H, D] projection (cp.async
# gathers), and of one with an odd head dim (element-wise gathers); out in [B, N, H, Dv] order.
p = swin.to(cuda)
steps, unowned_columns = p.plan_schedule()
t, permutation = p.transposed()
for dtype, d in ((torch.bfloat16, 32), (torch.float16, 20)):
    qkv = torch.randn(2, p.shape[0], 3, 4, d, device=cuda, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    bias = torch.randn(4, p.nnz, device=cuda, dtype=dtype)
    out, lse = ops.attention_forward_grouped(q, k, v, bias, p.row_offsets, p.col_indices, *p.plan(), 0.2,
                                             t.row_offsets, t.col_indices, permutation, steps, unowned_columns)
    ops.attention_backward(torch.randn_like(out), q, k, v, bias, out, lse, p.row_offsets, p.col_indices,
                           t.row_offsets, t.col_indices, permutation, 0.2, True, *p.plan(), steps, unowned_columns)

# Grouped-query attention (k and v with half of q's heads), a bias per problem with its gradient and a gradient
# reaching lse: the row and grouped kernels, and the backward's column pass over k/v problems and, after the
# tensor-core kernel, the sum of its per-query-head partials.
for pattern, dtype in ((swin, torch.float16), (wide, torch.bfloat16), (irregular, torch.float32)):
    p = pattern.to(cuda)
    t, permutation = p.transposed()
    n_q, n_k = p.shape
    q = torch.randn(2, 4, n_q, 32, device=cuda, dtype=dtype)
    k, v = (torch.randn(2, 2, n_k, 32, device=cuda, dtype=dtype) for _ in range(2))
    bias = torch.randn(8, p.nnz, device=cuda, dtype=dtype)
    for schedule in (p.plan_schedule(), (None, None)):
        out, lse = ops.attention_forward_grouped(q, k, v, bias, p.row_offsets, p.col_indices, *p.plan(), 0.2,
                                                 t.row_offsets, t.col_indices, permutation, *schedule)
        ops.attention_backward(torch.randn_like(out), q, k, v, bias, out, lse, p.row_offsets, p.col_indices,
                               t.row_offsets, t.col_indices, permutation, 0.2, True, *p.plan(), *schedule,
                               grad_lse=torch.randn_like(lse))
    out, lse = ops.attention_forward(q, k, v, bias, p.row_offsets, p.col_indices, 0.2)
    ops.attention_backward(torch.randn_like(out), q, k, v, bias, out, lse, p.row_offsets, p.col_indices,
                           t.row_offsets, t.col_indices, permutation, 0.2, True, grad_lse=torch.randn_like(lse))
torch.cuda.synchronize()
print("sanitizer case: every kernel ran")
