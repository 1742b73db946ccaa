"""The originals vs spattn on whole Swin models: forward and forward+backward (alternating medians in one
process) and peak memory, for timm's swin_tiny and swin_base by default, or any `spattn demo --model` spec
(timm:NAME, torchvision:NAME, a bare timm NAME) with --models SPEC:BATCH ... Writes bench/out/swin.md and
bench/out/swin.png.

    python bench/swin.py [--device cpu|cuda] [--dtype float32|bfloat16] [--rounds 5] [--floor]
    python bench/swin.py --floor --rounds 3 --models torchvision:swin_t:8 torchvision:swin3d_t:1
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from spattn import demo

CPU_RUNS = [("swin_tiny_patch4_window7_224", 8), ("swin_base_patch4_window7_224", 4)]


def machine_description(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None, help="model:batch pairs, the model a spattn demo spec "
                        "(torchvision:swin_t:8; default: timm tiny:8 base:4 on CPU, tiny:64 base:64 on GPU)")
    parser.add_argument("--floor", action="store_true", help="also time the model with attention for free (its "
                        "blocks keep only the qkv and output projections): the floor no attention can go below")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out"))
    args = parser.parse_args()
    if args.models:
        runs = [(m.rpartition(":")[0], int(m.rpartition(":")[2])) for m in args.models]
    elif args.device == "cuda":
        runs = [("swin_tiny_patch4_window7_224", 64), ("swin_base_patch4_window7_224", 64)]
    else:
        runs = CPU_RUNS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [demo.compare_swin(name, batch, args.device, args.dtype, rounds=args.rounds, floor=args.floor)
               for name, batch in runs]
    report = [f"Machine: {machine_description(args.device)}, {args.dtype}", ""]
    for result in results:
        report += [f"**{result.model}**, batch {result.batch_size}: outputs differ by at most "
                   f"{result.max_abs_difference:.1e}", "", demo.format_table(result), ""]
        if demo.format_floor(result):
            report += [demo.format_floor(result), ""]
    text = "\n".join(report)
    (out / "swin.md").write_text(text)
    demo.plot_comparison(results, out / "swin.png")
    print(text)
    print(f"wrote {out / 'swin.md'} and {out / 'swin.png'}")


if __name__ == "__main__":
    main()
