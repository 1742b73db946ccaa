"""GPU benchmarks of spattn on the Swin Transformer shapes (swin_base at 224: stages of 56x56 / 28x28 / 14x14 /
7x7 tokens, window 7, heads 4 / 8 / 16 / 32, head dim 32, batch 64, bfloat16), one method per invocation so
that a slow or failing method costs only itself:

    python bench/gpu_bench.py attention --method spattn      # fused forward (the path scaled_dot_product_attention
                                                              # takes: grouped for Swin), forward+backward; the
                                                              # generic fused kernel as spattn_generic
    python bench/gpu_bench.py attention --method window_sdpa  # SDPA on [B*nW, H, 49, 32] (the dense ideal)
    python bench/gpu_bench.py attention --method dense_mask   # SDPA on [B, H, N, 32] with an N x N bool mask
    python bench/gpu_bench.py attention --method flex         # FlexAttention with a block mask, compiled
    python bench/gpu_bench.py attention --method cusparse     # cuSPARSE SDDMM + torch softmax + cuSPARSE SpMM (fp32)
    python bench/gpu_bench.py attention --method spattn_fp16  # spattn in float16, with and without bias: stage 1
                                                              # only, beside the bfloat16 rows of --method spattn
    python bench/gpu_bench.py bandwidth                       # the card's copy bandwidth
    python bench/gpu_bench.py timm                            # converted swin_base vs timm
    python bench/gpu_bench.py table                           # the summary of everything measured

Each measurement is appended as one JSON line to $SPATTN_BENCH_RESULTS (default: $OUT/bench_results.jsonl,
else /tmp/spattn_bench_results.jsonl). Times are medians over CUDA-event-timed runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

STAGES = [(56, 4), (28, 8), (14, 16), (7, 32)]  # (tokens per side, heads)
BATCH, HEAD_DIM, WINDOW = 64, 32, 7
DTYPE = torch.bfloat16
CUDA = torch.device("cuda")


def results_path() -> str:
    if os.environ.get("SPATTN_BENCH_RESULTS"):
        return os.environ["SPATTN_BENCH_RESULTS"]
    if os.environ.get("OUT"):
        return os.path.join(os.environ["OUT"], "bench_results.jsonl")
    return "/tmp/spattn_bench_results.jsonl"


def record(**entry) -> None:
    print(json.dumps(entry), flush=True)
    with open(results_path(), "a") as f:
        f.write(json.dumps(entry) + "\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def median_ms(fn, warmup: int = 3, iterations: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def swin_pattern(side: int, shift: bool):
    import spattn
    return spattn.patterns.swin(side, side, WINDOW, shift_size=WINDOW // 2 if shift else 0).to(CUDA)


def qkv(side: int, heads: int, dtype=DTYPE, requires_grad=False):
    n = side * side
    generator = torch.Generator(device=CUDA).manual_seed(0)
    return [torch.randn(BATCH, heads, n, HEAD_DIM, device=CUDA, dtype=dtype, generator=generator)
            .requires_grad_(requires_grad) for _ in range(3)]


def fused_forward_bytes(side: int, heads: int, nnz: int, bias_heads: int = 0) -> int:
    """What the fused forward must move at least: q, k, v read, out written, lse written, the pattern and
    the bias read once."""
    n = side * side
    element = torch.finfo(DTYPE).bits // 8
    dense = BATCH * heads * n * HEAD_DIM * element
    return 4 * dense + BATCH * heads * n * 4 + (n + 1 + nnz) * 8 + bias_heads * nnz * element


# ---- attention methods -----------------------------------------------------------------------------------
def bench_spattn(side, heads, shift):
    import spattn
    pattern = swin_pattern(side, shift)
    q, k, v = qkv(side, heads, requires_grad=True)
    bias = (0.1 * torch.randn(heads, pattern.nnz, device=CUDA, dtype=DTYPE)).requires_grad_()
    grad = torch.randn_like(q)
    rows = []
    for with_bias in (False, True):
        b = bias if with_bias else None
        name = "spattn+bias" if with_bias else "spattn"
        with torch.no_grad():
            forward = median_ms(lambda: spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b))

        def step():
            out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b)
            out.backward(grad)
        both = median_ms(step)
        moved = fused_forward_bytes(side, heads, pattern.nnz, heads if with_bias else 0)
        rows.append(dict(method=name, forward_ms=forward, forward_backward_ms=both, bytes=moved,
                         gbps=moved / forward / 1e6))
    with torch.no_grad():
        # The generic fused kernel (every row reads its keys from global memory), for comparison with the
        # path scaled_dot_product_attention takes (the grouped kernel when the pattern's plan pays off).
        from spattn import functional
        n = side * side
        q3, k3, v3 = (t.detach().reshape(BATCH * heads, n, HEAD_DIM) for t in (q, k, v))
        csr = (pattern.row_offsets, pattern.col_indices)
        generic = lambda: torch.ops.spattn.attention_forward(q3, k3, v3, None, *csr, HEAD_DIM ** -0.5)[0]  # noqa: E731
        selected = spattn.scaled_dot_product_attention(q, k, v, pattern).reshape(BATCH * heads, n, HEAD_DIM)
        forward = median_ms(generic)
        moved = fused_forward_bytes(side, heads, pattern.nnz)
        rows[0]["grouped"] = functional._grouped_plan(pattern, q3, v3) is not None
        rows[0]["max_abs_diff_vs_generic"] = (selected.float() - generic().float()).abs().max().item()
        rows.append(dict(method="spattn_generic", forward_ms=forward, bytes=moved, gbps=moved / forward / 1e6))
        # The unfused path on the same kernels (scores stored): SDDMM, sparse softmax, SpMM.
        def unfused():
            s = spattn.sddmm(q, k, pattern)
            return spattn.spmm(spattn.sparse_softmax(s * HEAD_DIM ** -0.5, pattern), v, pattern)
        rows.append(dict(method="spattn_unfused", forward_ms=median_ms(unfused)))
    return rows


def window_partition(x, side):
    """[B, H, N, D] on a side x side grid -> [B * nW, H, 49, D]."""
    b, h, _, d = x.shape
    w = side // WINDOW
    x = x.view(b, h, w, WINDOW, w, WINDOW, d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(b * w * w, h, WINDOW * WINDOW, d)


def bench_window_sdpa(side, heads, shift):
    q, k, v = (window_partition(t, side).contiguous().detach().requires_grad_() for t in qkv(side, heads))
    # Shifted windows need timm's region mask; its contents do not change the cost, its presence does.
    mask = None
    if shift:
        n_windows = (side // WINDOW) ** 2
        mask = torch.ones(BATCH * n_windows, 1, WINDOW * WINDOW, WINDOW * WINDOW, device=CUDA, dtype=torch.bool)
    grad = torch.randn_like(q)
    with torch.no_grad():
        forward = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def step():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad)
    return [dict(method="window_sdpa", forward_ms=forward, forward_backward_ms=median_ms(step))]


def bench_dense_mask(side, heads, shift):
    pattern = swin_pattern(side, shift)
    mask = pattern.to_dense()
    q, k, v = qkv(side, heads, requires_grad=True)
    grad = torch.randn_like(q)
    with torch.no_grad():
        forward = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), iterations=5)

    def step():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).backward(grad)
    return [dict(method="dense_mask_sdpa", forward_ms=forward, forward_backward_ms=median_ms(step, iterations=5))]


_flex_compiled = None


def bench_flex(side, heads, shift):
    global _flex_compiled
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _flex_compiled is None:
        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    pattern = swin_pattern(side, shift)
    dense = pattern.to_dense()

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[q_idx, kv_idx]
    n = side * side
    block_mask = create_block_mask(mask_mod, None, None, n, n, device=CUDA)
    q, k, v = qkv(side, heads, requires_grad=True)
    grad = torch.randn_like(q)
    with torch.no_grad():
        forward = median_ms(lambda: _flex_compiled(q, k, v, block_mask=block_mask))

    def step():
        _flex_compiled(q, k, v, block_mask=block_mask).backward(grad)
    return [dict(method="flex_attention", forward_ms=forward, forward_backward_ms=median_ms(step))]


def bench_cusparse(side, heads, shift):
    from spattn import _C, ops_cuda
    if not _C.build_info()["cusparse"]:
        raise RuntimeError("spattn was built without cuSPARSE")
    pattern = swin_pattern(side, shift)
    n = side * side
    lengths = pattern.row_lengths()
    uniform = bool((lengths == lengths[0]).all())
    row_of_entry = torch.repeat_interleave(torch.arange(n, device=CUDA), lengths)
    q, k, v = (t.float().reshape(BATCH * heads, n, HEAD_DIM) for t in qkv(side, heads))
    ro, ci = pattern.row_offsets, pattern.col_indices
    index = row_of_entry.expand(BATCH * heads, -1)

    def softmax_on_values(scores):
        """Row softmax of [batch, nnz] values with torch ops: a reshape when rows have equal lengths (Swin
        without shift), else segment max / exp / segment sum (shifted windows split into regions)."""
        if uniform:
            return scores.view(scores.shape[0], n, -1).softmax(-1).view_as(scores)
        maximum = scores.new_full((scores.shape[0], n), float("-inf")).scatter_reduce(1, index, scores, "amax")
        weights = (scores - maximum.gather(1, index)).exp()
        total = scores.new_zeros((scores.shape[0], n)).scatter_add(1, index, weights)
        return weights / total.gather(1, index)

    def forward():
        scores = ops_cuda.cusparse_sddmm(q, k, ro, ci) * HEAD_DIM ** -0.5
        return ops_cuda.cusparse_spmm(softmax_on_values(scores), v, ro, ci)
    # The same computation on the fused kernel, in float32, as a check that the baseline computes attention.
    expected = torch.ops.spattn.attention_forward(q, k, v, None, ro, ci, HEAD_DIM ** -0.5)[0]
    error = (forward() - expected).abs().max().item()
    if not error < 1e-3:
        raise RuntimeError(f"cuSPARSE path differs from the fused kernel by {error}")
    return [dict(method="cusparse_fp32", forward_ms=median_ms(forward))]


# ---- float16 beside bfloat16 (issue 13): stage 1 only ----------------------------------------------------
def bench_spattn_fp16(side, heads, shift):
    """spattn's fused forward and forward+backward in float16, without and with a [heads, nnz] bias: rows
    spattn_fp16 and spattn_fp16+bias, to read beside bfloat16's spattn and spattn+bias."""
    import spattn
    pattern = swin_pattern(side, shift)
    q, k, v = qkv(side, heads, dtype=torch.float16, requires_grad=True)
    bias = (0.1 * torch.randn(heads, pattern.nnz, device=CUDA, dtype=torch.float16)).requires_grad_()
    grad = torch.randn_like(q)
    rows = []
    for b, name in ((None, "spattn_fp16"), (bias, "spattn_fp16+bias")):
        with torch.no_grad():
            forward = median_ms(lambda: spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b))

        def step():
            spattn.scaled_dot_product_attention(q, k, v, pattern, bias=b).backward(grad)
        moved = fused_forward_bytes(side, heads, pattern.nnz, heads if b is not None else 0)  # fp16: bf16's size
        rows.append(dict(method=name, dtype="float16", forward_ms=forward, forward_backward_ms=median_ms(step),
                         bytes=moved, gbps=moved / forward / 1e6))
    return rows


METHODS = {"spattn": bench_spattn, "window_sdpa": bench_window_sdpa, "dense_mask": bench_dense_mask,
           "flex": bench_flex, "cusparse": bench_cusparse, "spattn_fp16": bench_spattn_fp16}
STAGE_SIDES = {"spattn_fp16": (56,)}  # methods measured on some stages only


def run_attention(method: str) -> int:
    failures = 0
    for side, heads in STAGES:
        if side not in STAGE_SIDES.get(method, (side,)):
            continue
        for shift in (False, True):
            stage = f"{side}x{side} h{heads} {'shift' if shift else 'noshift'}"
            log(f"{method}: {stage}")
            try:
                for row in METHODS[method](side, heads, shift):
                    record(kind="attention", stage=stage, side=side, heads=heads, shift=shift, **row)
            except Exception as error:  # one shape failing must not hide the others
                failures += 1
                log(f"{method}: {stage} FAILED: {type(error).__name__}: {error}")
                record(kind="attention", stage=stage, side=side, heads=heads, shift=shift, method=method,
                       error=f"{type(error).__name__}: {error}"[:300])
            torch.cuda.empty_cache()
    return 1 if failures else 0


# ---- bandwidth -------------------------------------------------------------------------------------------
def run_bandwidth() -> int:
    size = 2 << 30
    source = torch.empty(size, dtype=torch.uint8, device=CUDA)
    target = torch.empty_like(source)
    ms = median_ms(lambda: target.copy_(source), warmup=2, iterations=10)
    record(kind="bandwidth", copy_gbps=2 * size / ms / 1e6, device=torch.cuda.get_device_name())
    return 0


# ---- timm ------------------------------------------------------------------------------------------------
def run_timm() -> int:
    import timm
    import spattn
    if not hasattr(spattn, "timm"):
        import spattn.timm  # noqa: F401
    torch.manual_seed(0)
    # Kept on the CPU; each variant is copied to the card only while it is measured, so that peak memory
    # counts one model.
    base = timm.create_model("swin_base_patch4_window7_224", pretrained=False)
    x = torch.randn(BATCH, 3, 224, 224, device=CUDA)

    def set_fused(model, fused):
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused
        return model
    variants = [("timm", lambda m: set_fused(m, False)),
                ("timm_fused_attn", lambda m: set_fused(m, True)),
                ("spattn", spattn.timm.convert)]
    reference = None
    failures = 0
    for name, make in variants:
        log(f"timm: {name}")
        model = make(copy.deepcopy(base)).to(CUDA)
        try:
            model.eval()  # no drop path: every variant computes the same function
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x).float()
                forward = median_ms(lambda: model(x), warmup=2, iterations=5)
            if reference is None:
                reference = logits
            difference = (logits - reference).abs().max().item()

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(x).float().square().mean()
                loss.backward()
            step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()  # after the first step: weights and gradients are resident
            both = median_ms(step, warmup=1, iterations=5)
            peak = torch.cuda.max_memory_allocated() / 2**30
            record(kind="timm", method=name, forward_ms=forward, forward_backward_ms=both, peak_gib=peak,
                   max_abs_diff_vs_timm=difference)
        except Exception as error:
            failures += 1
            log(f"timm: {name} FAILED: {type(error).__name__}: {error}")
            record(kind="timm", method=name, error=f"{type(error).__name__}: {error}"[:300])
        model.cpu()  # frees its memory on the card for the next variant
        torch.cuda.empty_cache()
    return 1 if failures else 0


# ---- summary ---------------------------------------------------------------------------------------------
def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def run_table() -> int:
    if not os.path.exists(results_path()):
        print("no results recorded")
        return 1
    entries = [json.loads(line) for line in open(results_path()) if line.strip()]
    copy_gbps = next((e["copy_gbps"] for e in entries if e["kind"] == "bandwidth"), None)
    print("\n==== spattn GPU benchmark (bf16, batch 64, head dim 32, window 7; times are medians in ms) ====")
    if copy_gbps:
        print(f"card copy bandwidth: {copy_gbps:.0f} GB/s")
    attention = [e for e in entries if e["kind"] == "attention"]
    stages = list(dict.fromkeys(e["stage"] for e in attention))
    methods = list(dict.fromkeys(e["method"] for e in attention))
    print(f"\n{'stage':<26}{'method':<18}{'fwd':>9}{'fwd+bwd':>10}{'GB/s':>8}{'% copy':>8}")
    for stage in stages:
        for method in methods:
            for e in (x for x in attention if x["stage"] == stage and x["method"] == method):
                if "error" in e:
                    print(f"{stage:<26}{method:<18}  FAILED {e['error'][:60]}")
                    continue
                share = e.get("gbps") / copy_gbps * 100 if e.get("gbps") and copy_gbps else None
                print(f"{stage:<26}{method:<18}{fmt(e.get('forward_ms'), 3):>9}"
                      f"{fmt(e.get('forward_backward_ms'), 3):>10}{fmt(e.get('gbps'), 0):>8}{fmt(share, 0):>8}")
    timm_rows = [e for e in entries if e["kind"] == "timm"]
    if timm_rows:
        print(f"\n{'swin_base b64 bf16':<22}{'fwd':>9}{'fwd+bwd':>10}{'peak GiB':>10}{'max|diff|':>11}")
        for e in timm_rows:
            if "error" in e:
                print(f"{e['method']:<22}  FAILED {e['error'][:60]}")
                continue
            print(f"{e['method']:<22}{fmt(e['forward_ms']):>9}{fmt(e['forward_backward_ms']):>10}"
                  f"{fmt(e['peak_gib']):>10}{e['max_abs_diff_vs_timm']:>11.2e}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["attention", "bandwidth", "timm", "table"])
    parser.add_argument("--method", choices=sorted(METHODS), default="spattn")
    args = parser.parse_args()
    if args.what == "table":
        return run_table()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    import spattn  # noqa: F401  (registers the ops)
    import spattn.ops_cuda  # noqa: F401  (their CUDA kernels, in case __init__ does not import it yet)
    return {"attention": lambda: run_attention(args.method), "bandwidth": run_bandwidth, "timm": run_timm}[args.what]()


if __name__ == "__main__":
    sys.exit(main())
