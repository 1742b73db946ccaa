"""The CPU attention paths that avoid work: strided q/k/v (views of one fused projection, no copies), out
written in [B, N, H, Dv] order, and the execution plan's grouped kernels (rows sharing their columns run as
dense problems), with the plan's schedule passed through the ops to the backward. Every path against the
float64 reference, and the paths against each other."""

from __future__ import annotations

import pytest
import torch

import reference
import spattn
from spattn import ops

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-5, atol=2e-5),
             torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}


def grouped_pattern(n_rows: int, n_cols: int, seed: int) -> spattn.Pattern:
    """Rows in groups sharing their columns, scattered over the rows: some groups own their columns (like
    Swin windows), some overlap, one group is empty, and a few rows have columns of their own."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(6, n_cols, generator=generator) < 0.4
    owned = torch.arange(n_cols // 2)
    templates[:, : n_cols // 2] = False
    templates[owned % 3, owned] = True  # templates 0-2 split the first half of the columns disjointly
    templates[5] = False
    mask = templates[torch.randint(0, 6, (n_rows,), generator=generator)]
    irregular = torch.rand(n_rows, generator=generator) < 0.1
    mask[irregular] = torch.rand(int(irregular.sum()), n_cols, generator=generator) < 0.3
    return spattn.Pattern.from_dense(mask)


PATTERNS = {
    "swin_shifted": lambda: spattn.patterns.swin(14, 21, 7, shift_size=3),
    "swin_odd_window": lambda: spattn.patterns.swin(10, 15, 5, shift_size=2),
    "grouped": lambda: grouped_pattern(90, 70, seed=1),
    "grouped_wide": lambda: grouped_pattern(40, 300, seed=2),
    "random": lambda: spattn.patterns.random(33, 29, 0.3, seed=3),
}


def fused_projection(batch, tokens, heads, head_dim, dtype, seed):
    """q, k, v as timm makes them: views of one [B, N, 3, H, D] projection (strided, not contiguous)."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3, heads, head_dim, generator=generator, dtype=torch.float64).to(dtype)
    qkv.requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return qkv, (q, k, v)


def strided_operands(batch, n_q, n_k, heads, head_dim, dtype, seed):
    """q a view of a [B, Nq, H, D + 3] tensor, k and v views of one [B, Nk, 2, H, D] projection."""
    generator = torch.Generator().manual_seed(seed)
    q_source = torch.randn(batch, n_q, heads, head_dim + 3, generator=generator, dtype=torch.float64).to(dtype)
    kv = torch.randn(batch, n_k, 2, heads, head_dim, generator=generator, dtype=torch.float64).to(dtype)
    q = q_source.requires_grad_()[..., :head_dim].transpose(1, 2)
    k, v = kv.requires_grad_().permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


@pytest.mark.parametrize("kind", sorted(PATTERNS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 7])
def test_strided_inputs_match_the_reference(kind, dtype, head_dim):
    pattern = PATTERNS[kind]()
    heads = 3
    q, k, v = strided_operands(2, *pattern.shape, heads, head_dim, dtype, seed=head_dim)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    bias = torch.randn(heads, pattern.nnz, dtype=torch.float64).to(dtype).requires_grad_()
    out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
    assert out.transpose(1, 2).is_contiguous()  # written in [B, N, H, Dv] order: the usual reshape is a view

    copies = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    expected = reference.attention(*copies[:3], pattern, copies[3])
    torch.testing.assert_close(out.double(), expected, **TOLERANCE[dtype])
    grad = torch.randn(out.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, (q, k, v, bias), grad.to(dtype))
    want = torch.autograd.grad(expected, copies, grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, **TOLERANCE[dtype])


@pytest.mark.parametrize("kind", sorted(PATTERNS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_and_row_kernels_agree(kind, dtype):
    """The plan's dense path and the row-by-row path give the same results up to rounding, forward and
    backward, including the log-sum-exp (float32 accumulation in both)."""
    pattern = PATTERNS[kind]()
    n_rows, n_cols = pattern.shape
    generator = torch.Generator().manual_seed(5)
    make = lambda *shape: torch.randn(*shape, generator=generator).to(dtype).requires_grad_()  # noqa: E731
    q, k, v = make(2, 4, n_rows, 32), make(2, 4, n_cols, 32), make(2, 4, n_cols, 32)
    bias = make(4, pattern.nnz)
    csr = (pattern.row_offsets, pattern.col_indices)
    grouped_out, grouped_lse = ops.attention_forward_grouped(q, k, v, bias, *csr, *pattern.plan(), 0.3)
    row_out, row_lse = ops.attention_forward(q, k, v, bias, *csr, 0.3)
    torch.testing.assert_close(grouped_out, row_out, **TOLERANCE[dtype])
    torch.testing.assert_close(grouped_lse, row_lse, **TOLERANCE[torch.float32])
    grad = torch.randn(row_out.shape, generator=generator).to(dtype)
    grouped_grads = torch.autograd.grad(grouped_out, (q, k, v, bias), grad)
    row_grads = torch.autograd.grad(row_out, (q, k, v, bias), grad)
    for got, want in zip(grouped_grads, row_grads):
        torch.testing.assert_close(got, want, **TOLERANCE[dtype])


def test_plan_is_used_through_the_functional_api():
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3)
    q = torch.randn(1, 2, 196, 16)
    seen = []
    original = ops.attention_forward_grouped

    def spy(*args):
        seen.append(args)
        return original(*args)
    ops.attention_forward_grouped = spy
    try:
        spattn.scaled_dot_product_attention(q, q, q, pattern)
    finally:
        ops.attention_forward_grouped = original
    assert len(seen) == 1


def test_schedule_reaches_the_grouped_op_and_its_backward(monkeypatch):
    """The functional API passes the plan's schedule (Pattern.plan_schedule()) to the grouped op, whose
    autograd hands it to the backward op with the plan (the CUDA tensor-core backward needs it; the CPU
    kernels ignore it)."""
    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3)
    steps, unowned_columns = pattern.plan_schedule()
    forward_calls, backward_calls = [], []
    forward, backward = ops.attention_forward_grouped, ops.attention_backward
    monkeypatch.setattr(ops, "attention_forward_grouped", lambda *a: forward_calls.append(a) or forward(*a))
    monkeypatch.setattr(ops, "attention_backward", lambda *a: backward_calls.append(a) or backward(*a))
    qkv, (q, k, v) = fused_projection(2, 196, 2, 16, torch.float64, seed=3)
    out = spattn.scaled_dot_product_attention(q, k, v, pattern)
    out.square().sum().backward()
    assert len(forward_calls) == 1 and len(backward_calls) == 1
    assert forward_calls[0][-2] is steps and forward_calls[0][-1] is unowned_columns
    *_, group_offsets, group_rows, given_steps, given_unowned, _grad_lse = backward_calls[0]
    assert group_offsets is pattern.plan()[0] and group_rows is pattern.plan()[1]
    assert given_steps is steps and given_unowned is unowned_columns
    # Without a backward pass coming (no transpose passed), the schedule still lands in its own slots.
    with torch.no_grad():
        spattn.scaled_dot_product_attention(q, k, v, pattern)
    assert forward_calls[1][9:12] == (None, None, None) and forward_calls[1][12] is steps


@pytest.mark.parametrize("with_schedule", [False, True])
def test_opcheck_grouped_ops_with_the_schedule(with_schedule):
    """The grouped forward and the backward with their optional schedule inputs (steps, unowned_columns)."""
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    qkv, (q, k, v) = fused_projection(2, 64, 2, 8, torch.float64, seed=2)
    bias = torch.randn(2, pattern.nnz, dtype=torch.float64, requires_grad=True)
    csr = (pattern.row_offsets, pattern.col_indices)
    transposed_pattern, permutation = pattern.transposed()
    transposed = (transposed_pattern.row_offsets, transposed_pattern.col_indices, permutation)
    schedule = pattern.plan_schedule() if with_schedule else (None, None)
    plan = pattern.plan()
    torch.library.opcheck(ops.attention_forward_grouped, (q, k, v, bias, *csr, *plan, 0.5, *transposed, *schedule))
    out, lse = ops.attention_forward_grouped(q, k, v, bias, *csr, *plan, 0.5, *transposed, *schedule)
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    detached = [t.detach() for t in (q, k, v, bias, out)]
    torch.library.opcheck(ops.attention_backward, (grad_out, *detached[:4], detached[4], lse.detach(), *csr,
                                                   *transposed, 0.5, True, *plan, *schedule))


def test_tensor_core_shared_bytes_binding():
    """Answers for both kernels of a CUDA build (no device needed); refuses bad arguments naming them."""
    if not spattn._C.build_info()["cuda"]:
        with pytest.raises(ValueError, match="without CUDA"):
            spattn._C.cuda_tensor_core_shared_bytes("forward", 32, 32, 2)
        return
    forward, backward = (spattn._C.cuda_tensor_core_shared_bytes(kernel, 32, 32, 2)
                         for kernel in ("forward", "backward"))
    # Two stages of q, k, v (64 rows of 40 elements) and bias runs (64 x 72), at least; the backward adds out, dO.
    assert 2 * (3 * 64 * 40 * 2 + 64 * 72 * 2) <= forward < backward <= 227 * 1024
    assert spattn._C.cuda_tensor_core_shared_bytes("forward", 128, 128, 2) > forward
    with pytest.raises(ValueError, match="kernel"):
        spattn._C.cuda_tensor_core_shared_bytes("sideways", 32, 32, 2)
    with pytest.raises(ValueError, match="storage_bytes"):
        spattn._C.cuda_tensor_core_shared_bytes("forward", 32, 32, 4)
    with pytest.raises(ValueError, match="head_dim"):
        spattn._C.cuda_tensor_core_shared_bytes("backward", -1, 32, 2)


@pytest.mark.parametrize("plan", [False, True])
@pytest.mark.parametrize("with_transpose", [False, True])
def test_opcheck_strided_attention(plan, with_transpose):
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    qkv, (q, k, v) = fused_projection(2, 64, 2, 8, torch.float64, seed=0)
    bias = torch.randn(2, pattern.nnz, dtype=torch.float64, requires_grad=True)
    csr = (pattern.row_offsets, pattern.col_indices)
    transposed_pattern, permutation = pattern.transposed()
    transposed = (transposed_pattern.row_offsets, transposed_pattern.col_indices, permutation) if with_transpose \
        else ()
    if plan:
        torch.library.opcheck(ops.attention_forward_grouped, (q, k, v, bias, *csr, *pattern.plan(), 0.5, *transposed))
    else:
        torch.library.opcheck(ops.attention_forward, (q, k, v, bias, *csr, 0.5, *transposed))


def test_torch_compile_fullgraph_with_strided_inputs():
    torch._dynamo.reset()
    pattern = spattn.patterns.swin(8, 8, 4, shift_size=2)
    qkv, _ = fused_projection(2, 64, 2, 8, torch.float32, seed=1)
    bias = torch.randn(2, pattern.nnz, requires_grad=True)

    def loss(qkv, bias):
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
        return out.transpose(1, 2).reshape(2, 64, -1).square().sum()

    eager = torch.autograd.grad(loss(qkv, bias), (qkv, bias))
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True)(qkv, bias), (qkv, bias))
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- bad input at the binding: strided outputs and plans -------------------------------------------------
def _binding_call(out=None, group_offsets=None, group_rows=None):
    pattern = spattn.patterns.swin(8, 8, 4)
    q = torch.randn(1, 2, 64, 4)
    out = torch.empty(1, 2, 64, 4) if out is None else out
    lse = torch.empty(1, 2, 64)
    spattn._C.cpu_attention_forward(q, q, q, None, pattern.row_offsets, pattern.col_indices, group_offsets,
                                    group_rows, 1.0, out, lse)


def test_binding_refuses_an_overlapping_out():
    with pytest.raises(ValueError, match="out must not overlap"):
        _binding_call(out=torch.empty(1, 1, 64, 4).expand(1, 2, 64, 4))


@pytest.mark.parametrize("case, message", [
    ("rows_not_a_permutation", "group_rows must be a permutation"),
    ("rows_of_another_plan", "does not have the columns"),
    ("offsets_past_the_end", "group_offsets must"),
    ("offsets_without_rows", "given together"),
])
def test_binding_refuses_a_plan_that_is_not_the_patterns(case, message):
    group_offsets, group_rows = spattn.patterns.swin(8, 8, 4).plan()
    if case == "rows_not_a_permutation":
        group_rows = group_rows.clone()
        group_rows[1] = group_rows[0]
    elif case == "rows_of_another_plan":
        group_rows = torch.arange(64)
    elif case == "offsets_past_the_end":
        group_offsets = group_offsets.clone()
        group_offsets[1] = 1000
    else:
        group_rows = None
    with pytest.raises(ValueError, match=message):
        _binding_call(group_offsets=group_offsets, group_rows=group_rows)


def test_torch_compile_uses_a_plan_and_transpose_built_before_tracing():
    """Tracing cannot build a plan or a transpose, but a pattern prepared before (Swin layouts and
    SparseAttention prepare theirs) gets the grouped kernel in the compiled graph, and its transpose and the
    plan's schedule go in as inputs of the forward op, so the backward does not recompute the transpose
    (spattn::transpose_pattern) and gets the schedule; results equal eager's."""

    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3).prepare()
    q = torch.randn(1, 2, 196, 16, requires_grad=True)

    def loss(q):
        return spattn.scaled_dot_product_attention(q, q, q, pattern).square().sum()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(q)
    calls = [node for graph in explanation.graphs for node in graph.graph.nodes
             if node.target == torch.ops.spattn.attention_forward_grouped.default]
    assert explanation.graph_count == 1 and len(calls) == 1
    # q, k, v, bias, CSR, plan, scale, transpose, schedule
    assert len(calls[0].args) == 14 and not calls[0].kwargs
    assert all(arg is not None for arg in calls[0].args[9:])
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    torch.testing.assert_close(torch.autograd.grad(compiled(q), q)[0], torch.autograd.grad(loss(q), q)[0],
                               rtol=1e-5, atol=1e-5)


def test_torch_compile_building_blocks_get_the_transpose_as_inputs():
    """sddmm and spmm carry a prepared pattern's transpose into the graph too (their backward reduces over
    it), instead of their backward recomputing it."""

    pattern = spattn.patterns.swin(14, 14, 7, shift_size=3).prepare()
    a = torch.randn(2, 196, 8, requires_grad=True)

    def loss(a):
        weights = spattn.sparse_softmax(spattn.sddmm(a, a, pattern), pattern)
        return spattn.spmm(weights, a, pattern).square().sum()

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(a)
    nodes = {node.target: node for graph in explanation.graphs for node in graph.graph.nodes}
    assert explanation.graph_count == 1
    for op in (torch.ops.spattn.sddmm.default, torch.ops.spattn.spmm.default):
        assert len(nodes[op].args) + len(nodes[op].kwargs) == 7  # two operands, the CSR, the transpose
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    torch.testing.assert_close(torch.autograd.grad(compiled(a), a)[0], torch.autograd.grad(loss(a), a)[0],
                               rtol=1e-5, atol=1e-5)
