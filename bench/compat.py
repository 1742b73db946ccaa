"""spattn against torch's FlexAttention and dense masked SDPA on the CPU, on the problems people bring from
FlexAttention and NATTEN. One run; progress printed; medians of alternating rounds (spattn._benchmark).

Problems (float32):
  sliding-1d      1-D sliding window: N = 4096 tokens, |q - k| <= 128 (257 keys), B = 1, H = 8, D = 64
  neighborhood-2d 2-D neighborhood attention (NATTEN semantics): 56 x 56 grid, kernel 7, B = 1, H = 4, D = 32
Methods:
  spattn   spattn.scaled_dot_product_attention over the pattern (for sliding-1d the pattern comes from
           spattn.compat.flex.create_block_mask of the same mask_mod FlexAttention gets; for neighborhood-2d
           from spattn.patterns.neighborhood, checked equal to that mask_mod's pattern)
  flex     torch.compile(torch.nn.attention.flex_attention) with torch's create_block_mask (CPU inference:
           torch's FlexAttention has no backward on the CPU)
  sdpa     torch.nn.functional.scaled_dot_product_attention with the pattern as a dense [N, N] bool mask
Forward under torch.no_grad(); forward + backward where the method has one. Outputs are checked against
each other before timing. Also times spattn.compat.flex.create_block_mask of the sliding window over 65,536
tokens. Writes bench/results/compat_cpu.md (the table) and bench/results/compat_cpu.png.

    python bench/compat.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import flex_attention as torch_flex

import spattn
from spattn._benchmark import median_times
from spattn.compat import flex

RESULTS = Path(__file__).resolve().parent / "results"
SEQUENCE, WINDOW_RADIUS = 4096, 128
GRID, KERNEL = 56, 7


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx).abs() <= WINDOW_RADIUS


def neighborhood_2d(b, h, q_idx, kv_idx):
    """NATTEN's neighborhood on a GRID x GRID grid (row-major tokens): the KERNEL x KERNEL window around the
    query, shifted inwards at the borders."""
    def window_start(coordinate):
        return (coordinate - KERNEL // 2).clamp(0, GRID - KERNEL)
    q_row, q_col, k_row, k_col = q_idx // GRID, q_idx % GRID, kv_idx // GRID, kv_idx % GRID
    row_start, col_start = window_start(q_row), window_start(q_col)
    return ((k_row >= row_start) & (k_row < row_start + KERNEL) &
            (k_col >= col_start) & (k_col < col_start + KERNEL))


def long_build_seconds(tokens: int = 65536) -> float:
    """Seconds spattn.compat.flex.create_block_mask takes for the sliding window over ``tokens`` tokens (its
    mask_mod evaluated on all tokens^2 pairs, a tile at a time)."""
    started = time.perf_counter()
    pattern = flex.create_block_mask(sliding_window, None, None, tokens, tokens, device="cpu")
    seconds = time.perf_counter() - started
    print(f"create_block_mask, sliding window over {tokens} tokens: {seconds:.1f} s, nnz {pattern.nnz}")
    assert pattern.equal(spattn.patterns.local_1d(tokens, 2 * WINDOW_RADIUS + 1))
    return seconds


def problems():
    """(name, description, mask_mod, spattn pattern, (B, H, N, D)), with the spattn patterns checked equal to
    what the mask_mods say."""
    started = time.perf_counter()
    sliding = flex.create_block_mask(sliding_window, None, None, SEQUENCE, SEQUENCE, device="cpu")
    print(f"spattn.compat.flex.create_block_mask, {SEQUENCE} tokens: {time.perf_counter() - started:.2f} s")
    assert sliding.equal(spattn.patterns.local_1d(SEQUENCE, 2 * WINDOW_RADIUS + 1))
    neighborhood = spattn.patterns.neighborhood((GRID, GRID), KERNEL)
    assert neighborhood.equal(flex.create_block_mask(neighborhood_2d, None, None, GRID**2, GRID**2, device="cpu"))
    return [("sliding-1d", f"1-D sliding window, N={SEQUENCE}, window {2 * WINDOW_RADIUS + 1}, B=1 H=8 D=64",
             sliding_window, sliding, (1, 8, SEQUENCE, 64)),
            ("neighborhood-2d", f"2-D neighborhood {GRID}x{GRID}, kernel {KERNEL}, B=1 H=4 D=32",
             neighborhood_2d, neighborhood, (1, 4, GRID**2, 32))]


def methods(mask_mod, pattern, shape):
    """name -> attention(q, k, v) for each method, and the names that have a backward."""
    n = shape[2]
    torch_block_mask = torch_flex.create_block_mask(mask_mod, None, None, n, n, device="cpu")
    compiled_flex = torch.compile(torch_flex.flex_attention)
    dense_mask = pattern.to_dense()
    pattern.prepare()
    return {
        "spattn": lambda q, k, v: spattn.scaled_dot_product_attention(q, k, v, pattern),
        "flex": lambda q, k, v: compiled_flex(q, k, v, block_mask=torch_block_mask),
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask),
    }, ("spattn", "sdpa")


def measure(rounds: int) -> list[dict]:
    rows = []
    for name, description, mask_mod, pattern, shape in problems():
        print(f"\n== {name}: {description}, nnz {pattern.nnz} ({pattern.density:.2%})")
        generator = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(*shape, generator=generator) for _ in range(3))
        candidates, with_backward = methods(mask_mod, pattern, shape)
        with torch.no_grad():
            started = time.perf_counter()
            outputs = {method: attention(q, k, v) for method, attention in candidates.items()}
            print(f"first calls (flex compiles): {time.perf_counter() - started:.1f} s")
        for method, out in outputs.items():
            if method == "sdpa":
                continue
            error = (out - outputs["sdpa"]).abs().max().item()
            print(f"max |{method} - sdpa| = {error:.2e}")
            assert error < 1e-4, (method, error)

        def forward(attention):
            def run():
                with torch.no_grad():
                    attention(q, k, v)
            return run

        def forward_backward(attention):
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            grad_out = torch.randn(*shape)
            return lambda: attention(*leaves).backward(grad_out)

        print("forward:")
        forward_times = median_times({m: forward(a) for m, a in candidates.items()}, rounds=rounds,
                                     progress=print)
        print("forward + backward:")
        backward_times = median_times({m: forward_backward(candidates[m]) for m in with_backward},
                                      rounds=rounds, progress=print)
        for method in candidates:
            rows.append({"problem": name, "description": description, "method": method,
                         "forward_ms": forward_times[method] * 1e3,
                         "forward_backward_ms": backward_times[method] * 1e3 if method in backward_times else None})
    return rows


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                 platform.processor())
    return (f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def table(rows: list[dict]) -> str:
    def ms(value):
        return "n/a" if value is None else f"{value:.1f}"

    def ratio(value, reference):
        return "n/a" if value is None or reference is None else f"{value / reference:.1f}x"
    lines = ["| problem | method | forward (ms) | vs spattn | forward + backward (ms) | vs spattn |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        base = next(r for r in rows if r["problem"] == row["problem"] and r["method"] == "spattn")
        lines.append(f"| {row['problem']} | {row['method']} | {ms(row['forward_ms'])} | "
                     f"{ratio(row['forward_ms'], base['forward_ms'])} | {ms(row['forward_backward_ms'])} | "
                     f"{ratio(row['forward_backward_ms'], base['forward_backward_ms'])} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    problem_names = list(dict.fromkeys(r["problem"] for r in rows))
    method_names = list(dict.fromkeys(r["method"] for r in rows))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, label in zip(axes, ("forward_ms", "forward_backward_ms"), ("forward", "forward + backward")):
        width = 0.8 / len(method_names)
        measured = [r[key] for r in rows if r[key] is not None]
        bottom = min(measured) / 2  # bars start below the smallest time; "n/a" sits there
        for index, method in enumerate(method_names):
            values = [next(r[key] for r in rows if r["problem"] == p and r["method"] == method) or 0.0
                      for p in problem_names]
            positions = [p + (index - (len(method_names) - 1) / 2) * width for p in range(len(problem_names))]
            bars = axis.bar(positions, values, width, label=method)
            for bar, value in zip(bars, values):
                axis.annotate("n/a" if value == 0.0 else f"{value:.0f}", (bar.get_x() + width / 2, max(value, bottom)),
                              ha="center", va="bottom", fontsize=8)
        axis.set_xticks(range(len(problem_names)), problem_names)
        axis.set_yscale("log")
        axis.set_ylim(bottom, max(measured) * 3)
        axis.set_ylabel("median ms (log scale)")
        axis.set_title(label)
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per method (median reported)")
    arguments = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    started = time.perf_counter()
    build_seconds = long_build_seconds()
    rows = measure(arguments.rounds)
    where = machine()
    text = (f"Measured on {where}.\n\n{table(rows)}\n\nspattn.compat.flex.create_block_mask of the sliding window "
            f"over 65,536 tokens: {build_seconds:.1f} s.\n")
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compat_cpu.md").write_text(text)
    plot(rows, RESULTS / "compat_cpu.png", f"spattn vs FlexAttention (compiled) vs dense SDPA, CPU: {where}")
    print(f"wrote {RESULTS / 'compat_cpu.md'} and compat_cpu.png in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
