"""Swin stage-1 attention on the CPU: spattn's fused kernel against the ways torch can do the same.

Shape: 56 x 56 tokens, window 7, head dim 32, 3 heads, batch 8, shift 0 and 3. Methods:
  spattn     spattn.scaled_dot_product_attention over spattn.patterns.swin (one fused kernel; Swin's rows
             share their columns window by window, so the execution plan's grouped kernels run)
  spattn-rows  the same op without the plan: the row-by-row kernels every pattern can use
  windows    (a) what timm does: roll, partition into 49-token windows, dense
             torch.nn.functional.scaled_dot_product_attention per window (with Swin's region mask when
             shifted), reverse the partition, roll back
  sdpa-only  (a) without the layout work: the same scaled_dot_product_attention calls on tensors that are
             already [B * windows, H, 49, D] (a kernel-to-kernel comparison; no reference output)
  dense      (b) dense scaled_dot_product_attention over all N x N pairs with the pattern as a boolean mask
  sampled    (c) torch.sparse.sampled_addmm on the pattern, then a dense softmax and matmul (where it runs)
Reports the median time (torch.utils.benchmark) and the peak memory (growth of the resident set, with
glibc returning freed blocks to the system) of the forward pass and of forward + backward, prints a table
and saves bench/out/kernels.png.

    python bench/kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from pathlib import Path

# Peak memory is read from the resident set, so freed blocks must go back to the system at once: fix
# glibc's mmap threshold (it otherwise grows and keeps freed tensors of up to 32 MiB in the heap).
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.benchmark as benchmark  # noqa: E402

import spattn  # noqa: E402

HEIGHT = WIDTH = 56
WINDOW = 7
HEAD_DIM = 32
HEADS = 3
BATCH = 8
OUT = Path(__file__).resolve().parent / "out"


# ---- the methods: each maps q, k, v [B, H, N, D] in token order to [B, H, N, D] -------------------------
def spattn_attention(pattern, shift):
    return lambda q, k, v: spattn.scaled_dot_product_attention(q, k, v, pattern)


def spattn_row_by_row(pattern, shift):
    csr = (pattern.row_offsets, pattern.col_indices)
    transposed, permutation = pattern.transposed()  # for the backward, as the functional API passes it
    transposed = (transposed.row_offsets, transposed.col_indices, permutation)
    return lambda q, k, v: spattn.ops.attention_forward(q, k, v, None, *csr, HEAD_DIM ** -0.5, *transposed)[0]


def swin_region_mask(shift):
    """timm's attention mask for shifted windows: [windows, 49, 49] bool, True = may attend."""
    regions = torch.zeros(HEIGHT, WIDTH, dtype=torch.long)
    label = 0
    for rows in (slice(0, -WINDOW), slice(-WINDOW, -shift), slice(-shift, None)):
        for cols in (slice(0, -WINDOW), slice(-WINDOW, -shift), slice(-shift, None)):
            regions[rows, cols] = label
            label += 1
    windows = partition(regions.view(1, 1, HEIGHT, WIDTH, 1)).view(-1, WINDOW * WINDOW)
    return windows[:, :, None] == windows[:, None, :]


def partition(x):
    """[B, H, height, width, D] -> [B * windows, H, 49, D]."""
    b, h, _, _, d = x.shape
    x = x.view(b, h, HEIGHT // WINDOW, WINDOW, WIDTH // WINDOW, WINDOW, d).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(-1, h, WINDOW * WINDOW, d)


def unpartition(x, batch):
    """[B * windows, H, 49, D] -> [B, H, N, D]."""
    _, h, _, d = x.shape
    x = x.view(batch, HEIGHT // WINDOW, WIDTH // WINDOW, h, WINDOW, WINDOW, d).permute(0, 3, 1, 4, 2, 5, 6)
    return x.reshape(batch, h, HEIGHT * WIDTH, d)


def windows_attention(pattern, shift):
    mask = swin_region_mask(shift)[:, None] if shift else None  # [windows, 1, 49, 49]

    def run(q, k, v):
        batch = q.shape[0]

        def to_windows(x):
            x = x.view(batch, HEADS, HEIGHT, WIDTH, HEAD_DIM)
            if shift:
                x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
            return partition(x)

        qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
        attn_mask = None if mask is None else mask.repeat(batch, 1, 1, 1)
        out = unpartition(F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask), batch)
        if shift:
            out = torch.roll(out.view(batch, HEADS, HEIGHT, WIDTH, HEAD_DIM), shifts=(shift, shift), dims=(2, 3))
        return out.reshape(batch, HEADS, HEIGHT * WIDTH, HEAD_DIM)
    return run


def window_kernel_only(pattern, shift):
    mask = swin_region_mask(shift)[:, None] if shift else None

    def run(q, k, v):
        # q [B, H, N, D] holds B * windows * H * 49 * D numbers: read as windows without moving anything.
        windows = q.shape[0] * (HEIGHT // WINDOW) * (WIDTH // WINDOW)
        qw, kw, vw = (x.view(windows, HEADS, WINDOW * WINDOW, HEAD_DIM) for x in (q, k, v))
        attn_mask = None if mask is None else mask.repeat(q.shape[0], 1, 1, 1)
        return F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask).view(q.shape)
    return run


def dense_attention(pattern, shift):
    mask = pattern.to_dense()
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def sampled_attention(pattern, shift):
    mask = pattern.to_dense()
    n = HEIGHT * WIDTH
    problems = BATCH * HEADS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sparse CSR tensor support is in beta state"
        csr = torch.sparse_csr_tensor(pattern.row_offsets.expand(problems, -1).contiguous(),
                                      pattern.col_indices.expand(problems, -1).contiguous(),
                                      torch.zeros(problems, pattern.nnz), (problems, n, n))

    def run(q, k, v):
        scores = torch.sparse.sampled_addmm(csr, q.reshape(problems, n, HEAD_DIM) * HEAD_DIM ** -0.5,
                                            k.reshape(problems, n, HEAD_DIM).transpose(1, 2))
        dense = scores.to_dense().masked_fill(~mask, float("-inf"))
        return (torch.softmax(dense, dim=-1) @ v.reshape(problems, n, HEAD_DIM)).view(q.shape)
    return run


METHODS = {"spattn": spattn_attention, "spattn-rows": spattn_row_by_row, "windows": windows_attention,
           "sdpa-only": window_kernel_only, "dense": dense_attention, "sampled": sampled_attention}
WITHOUT_REFERENCE = {"sdpa-only"}


# ---- measurement -----------------------------------------------------------------------------------------
def resident_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_memory_mib(step):
    """Growth of the resident set while `step` runs once (the kernel resets the high-water mark)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = resident_kib("VmRSS")
    step()
    return (resident_kib("VmHWM") - before) / 1024


def measure(method, pattern, shift, backward, min_run_time):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(BATCH, HEADS, HEIGHT * WIDTH, HEAD_DIM, generator=generator).requires_grad_(backward)
               for _ in range(3))
    grad = torch.randn(BATCH, HEADS, HEIGHT * WIDTH, HEAD_DIM, generator=generator)
    attention = METHODS[method](pattern, shift)

    def step():
        out = attention(q, k, v)
        if backward:
            out.backward(grad)
            for t in (q, k, v):
                t.grad = None
        return out

    try:
        with torch.set_grad_enabled(backward):
            reference = step().detach()
            memory = peak_memory_mib(step)
            # Timer runs on one thread unless told otherwise.
            timer = benchmark.Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads())
            seconds = timer.blocked_autorange(min_run_time=min_run_time).median
    except (RuntimeError, NotImplementedError) as error:
        return None, None, None, f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
    return seconds, memory, reference, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads for torch and spattn (default: torch's)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    torch.set_num_threads(args.threads)  # spattn's OpenMP kernels follow torch's setting (one runtime)
    min_run_time = 0.3 if args.quick else 1.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, spattn {spattn.__version__}, "
          f"openmp {spattn.build_info()['openmp']}")
    print(f"Swin stage 1: {HEIGHT}x{WIDTH} tokens, window {WINDOW}, head dim {HEAD_DIM}, {HEADS} heads, "
          f"batch {BATCH}, float32\n")

    rows = []
    for shift in (0, 3):
        pattern = spattn.patterns.swin(HEIGHT, WIDTH, WINDOW, shift)
        outputs = {}
        for method in methods:
            for backward in (False, True):
                seconds, memory, output, error = measure(method, pattern, shift, backward, min_run_time)
                if not backward and output is not None:
                    outputs[method] = output
                rows.append(dict(shift=shift, method=method, mode="fwd+bwd" if backward else "fwd",
                                 ms=None if seconds is None else seconds * 1e3, mib=memory, error=error))
                print(f"  shift {shift} {method:8s} {rows[-1]['mode']:8s} "
                      + (f"{seconds * 1e3:9.2f} ms {memory:8.1f} MiB" if error is None else error), flush=True)
        for method, output in outputs.items():
            if method != "spattn" and "spattn" in outputs and method not in WITHOUT_REFERENCE:
                difference = (output - outputs["spattn"]).abs().max().item()
                print(f"  shift {shift}: max |{method} - spattn| = {difference:.2e}")
    print_table(rows)
    plot(rows)


def print_table(rows):
    print("\n| shift | method | fwd ms | fwd MiB | fwd+bwd ms | fwd+bwd MiB | fwd vs spattn | fwd+bwd vs spattn |")
    print("|---|---|---|---|---|---|---|---|")
    lookup = {(r["shift"], r["method"], r["mode"]): r for r in rows}
    for shift in sorted({r["shift"] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = []
            for mode in ("fwd", "fwd+bwd"):
                r = lookup[(shift, method, mode)]
                cells += ["n/a", "n/a"] if r["ms"] is None else [f"{r['ms']:.1f}", f"{r['mib']:.0f}"]
            ratios = []
            for mode in ("fwd", "fwd+bwd"):
                r, base = lookup[(shift, method, mode)], lookup.get((shift, "spattn", mode))
                ratios.append("n/a" if r["ms"] is None or base is None or base["ms"] is None
                              else f"{r['ms'] / base['ms']:.2f}x")
            print(f"| {shift} | {method} | " + " | ".join(cells + ratios) + " |")
    errors = [r for r in rows if r["error"]]
    for r in errors:
        print(f"  ({r['method']} {r['mode']} shift {r['shift']}: {r['error']})")


def plot(rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    groups = [(shift, mode) for shift in (0, 3) for mode in ("fwd", "fwd+bwd")]
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / len(methods)
    for axis, key, label in ((axes[0], "ms", "median time (ms, log)"), (axes[1], "mib", "peak memory (MiB, log)")):
        for index, method in enumerate(methods):
            values = []
            for shift, mode in groups:
                match = [r for r in rows if (r["shift"], r["method"], r["mode"]) == (shift, method, mode)]
                values.append(match[0][key] if match and match[0][key] is not None else 0.0)
            positions = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
            measured = [(x, v) for x, v in zip(positions, values) if v > 0]  # methods that failed: no bar
            bars = axis.bar([x for x, _ in measured], [v for _, v in measured], width, label=method,
                            color=f"C{index}")
            for bar, (_, value) in zip(bars, measured):
                axis.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center",
                              va="bottom", fontsize=7)
        axis.set_yscale("log")
        axis.set_xticks(range(len(groups)), [f"shift {s}\n{m}" for s, m in groups])
        axis.set_ylabel(label)
    axes[0].legend()
    figure.suptitle(f"Swin stage 1 attention on the CPU ({torch.get_num_threads()} threads): "
                    f"{BATCH}x{HEADS} heads, {HEIGHT}x{WIDTH} tokens, window {WINDOW}, head dim {HEAD_DIM}")
    figure.tight_layout()
    path = OUT / "kernels.png"
    figure.savefig(path, dpi=120)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
