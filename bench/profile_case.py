"""The case bench/gpu_check.sh profiles with Nsight Compute: Swin stage 1 (batch 64, 4 heads, 56 x 56 tokens,
window 7, shift 3, head dim 32, bfloat16, with a [heads, nnz] bias), one forward and one backward after a
warm-up, between cudaProfilerStart and cudaProfilerStop so that `ncu --profile-from-start off` sees only
the measured pass:

    ncu --clock-control none --profile-from-start off -k regex:attention --launch-count 12 \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \\
        --export /tmp/stage1 python bench/profile_case.py [--dtype fp16] [--no-bias] [--qkv-view]

and, without a GPU, the summary of such a profile (one row per kernel launch: time, DRAM traffic and
throughput, occupancy, the main stall reasons) from its raw CSV:

    ncu --import /tmp/stage1.ncu-rep --page raw --csv > /tmp/stage1.csv
    python bench/profile_case.py --summarize-csv /tmp/stage1.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys

# Run as a script, so bench/ is on the path: kernel names are shortened as the SASS report does.
from sass_report import short_name

BATCH, HEADS, SIDE, WINDOW, SHIFT, HEAD_DIM = 64, 4, 56, 7, 3, 32


def run_case(dtype_name: str, with_bias: bool, qkv_view: bool, forward_only: bool, batch: int = BATCH,
             device_name: str = "cuda") -> int:
    import torch

    on_cuda = device_name == "cuda"
    if on_cuda and not torch.cuda.is_available():
        print("profile_case: no CUDA device")
        return 1
    import spattn
    if on_cuda:
        import spattn.ops_cuda  # noqa: F401  (the CUDA kernels, in case __init__ does not import them)

    cuda = torch.device(device_name)  # "cpu" only to try the case out without a GPU
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    pattern = spattn.patterns.swin(SIDE, SIDE, WINDOW, shift_size=SHIFT).to(cuda)
    n = SIDE * SIDE
    generator = torch.Generator(device=cuda).manual_seed(0)
    if qkv_view:
        # q, k, v as a Swin block has them: views of one [B, N, 3, H, D] projection.
        qkv = torch.randn(batch, n, 3, HEADS, HEAD_DIM, device=cuda, dtype=dtype, generator=generator)
        q, k, v = (qkv[:, :, i].transpose(1, 2).detach().requires_grad_() for i in range(3))
    else:
        q, k, v = (torch.randn(batch, HEADS, n, HEAD_DIM, device=cuda, dtype=dtype, generator=generator)
                   .requires_grad_() for _ in range(3))
    bias = None
    if with_bias:
        bias = (0.1 * torch.randn(HEADS, pattern.nnz, device=cuda, dtype=dtype, generator=generator)).requires_grad_()
    grad = torch.randn(batch, HEADS, n, HEAD_DIM, device=cuda, dtype=dtype, generator=generator)

    def step():
        out = spattn.scaled_dot_product_attention(q, k, v, pattern, bias=bias)
        if not forward_only:
            out.backward(grad)

    step()  # warm-up: the plan, the transpose, first-launch costs
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
    step()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
    print(f"profile_case: Swin stage 1, batch {batch}, {HEADS} heads, {SIDE}x{SIDE} tokens, window {WINDOW}, "
          f"shift {SHIFT}, head dim {HEAD_DIM}, {dtype_name}, {'bias' if with_bias else 'no bias'}, "
          f"{'strided qkv views' if qkv_view else 'contiguous q/k/v'}: "
          f"{'forward' if forward_only else 'forward+backward'} ran once after a warm-up")
    return 0


# ---- the summary of an ncu profile -----------------------------------------------------------------------
_SCALE = {"": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")


def _value(row: dict, units: dict, metric: str, base_unit: str = "") -> float | None:
    """A metric of one CSV row as a float in the base unit (second, byte, byte/second; percentages as they
    are), or None when the profile lacks it."""
    text = (row.get(metric) or "").replace(",", "").strip()
    try:
        value = float(text)
    except ValueError:
        return None
    unit = units.get(metric, "")
    if base_unit and unit.endswith(base_unit):
        prefix = unit[: -len(base_unit)]
        value *= _SCALE.get(prefix[:1], 1.0) if prefix else 1.0
    return value


def summarize(text: str) -> str:
    """One Markdown row per profiled launch from `ncu --import R --page raw --csv` output: the CSV's first
    row names the metrics, its second their units, then one row per launch."""
    rows = list(csv.reader(io.StringIO(text)))
    start = next((i for i, row in enumerate(rows) if row and row[0] == "ID"), None)
    if start is None or len(rows) < start + 2:
        return "no profiled kernels in the ncu output"
    header = rows[start]
    units = dict(zip(header, rows[start + 1]))
    launches = [dict(zip(header, row)) for row in rows[start + 2:] if len(row) == len(header)]
    lines = ["| kernel | grid x block | time (us) | DRAM (MB) | DRAM GB/s | DRAM % peak | SM % peak | "
             "occupancy achieved / theoretical (%) | regs | dyn. smem (KiB) | top stalls (cycles per issue) |",
             "|" + "---|" * 11]
    for launch in launches:
        seconds = _value(launch, units, "gpu__time_duration.sum", "second")
        read = _value(launch, units, "dram__bytes_read.sum", "byte")
        write = _value(launch, units, "dram__bytes_write.sum", "byte")
        moved = (read or 0.0) + (write or 0.0) if read is not None or write is not None else None
        rate = moved / seconds / 1e9 if moved is not None and seconds else None
        # "selected" is the issuing warp's own cycle, not a stall.
        stalls = sorted(((value, match.group(1)) for metric in header if (match := _STALL.match(metric))
                         and match.group(1) != "selected" and (value := _value(launch, units, metric)) is not None),
                        reverse=True)[:3]
        smem = _value(launch, units, "launch__shared_mem_per_block_dynamic", "byte")

        def cell(value, digits=1, scale=1.0):
            return "-" if value is None else f"{value * scale:.{digits}f}"
        lines.append("| " + " | ".join([
            f"`{short_name(launch.get('Kernel Name', '?'))}`",
            f"{launch.get('Grid Size', '?')} x {launch.get('Block Size', '?')}",
            cell(seconds, 1, 1e6), cell(moved, 1, 1e-6), cell(rate, 0),
            cell(next((v for metric in ("gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                                         "dram__throughput.avg.pct_of_peak_sustained_elapsed")
                       if (v := _value(launch, units, metric)) is not None), None)),
            cell(_value(launch, units, "sm__throughput.avg.pct_of_peak_sustained_elapsed")),
            f"{cell(_value(launch, units, 'sm__warps_active.avg.pct_of_peak_sustained_active'))} / "
            f"{cell(_value(launch, units, 'sm__maximum_warps_per_active_cycle_pct'))}",
            cell(_value(launch, units, "launch__registers_per_thread"), 0),
            cell(smem, 1, 1 / 1024),
            ", ".join(f"{name} {value:.1f}" for value, name in stalls) or "-",
        ]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--no-bias", action="store_true", help="without the [heads, nnz] bias")
    parser.add_argument("--qkv-view", action="store_true",
                        help="q, k, v as strided views of one [B, N, 3, H, D] tensor (as a Swin block has them)")
    parser.add_argument("--forward-only", action="store_true")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"default {BATCH}")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: try the case out without a GPU (nothing is profiled)")
    parser.add_argument("--summarize-csv", metavar="CSV",
                        help="print the summary of `ncu --import R --page raw --csv` output instead (no GPU)")
    args = parser.parse_args(argv)
    if args.summarize_csv:
        with open(args.summarize_csv) as f:
            print(summarize(f.read()))
        return 0
    return run_case(args.dtype, not args.no_bias, args.qkv_view, args.forward_only, args.batch, args.device)


if __name__ == "__main__":
    sys.exit(main())
