"""`spattn demo`: the Swin showcase (see spattn.demo)."""

from __future__ import annotations

from pathlib import Path

import torch


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo", help="a Swin (timm, torchvision) vs its spattn conversion: equal outputs, speed, memory, pictures")
    parser.add_argument("--model", default=None,
                        help="timm:NAME, torchvision:NAME (swin_t/s/b, swin_v2_t/s/b, video swin3d_t/s/b), "
                             "transformers:swin or transformers:swinv2 (random weights) or a bare "
                             "timm NAME (default: swin_tiny_patch4_window7_224 on CPU, swin_base_patch4_window7_224 "
                             "on GPU)")
    parser.add_argument("--size", default=None,
                        help="input size HxW (TxHxW for video), e.g. 200x264 (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 8 on CPU, 32 on GPU (video: 1 on CPU, 4 on GPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="bfloat16 runs under autocast")
    parser.add_argument("--out", default="spattn-demo", help="folder for the pictures (default: ./spattn-demo)")
    parser.add_argument("--pretrained", action="store_true", help="load pretrained weights (needs network access)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (default: 5)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--floor", action="store_true",
                        help="also time the original with attention for free: the floor no attention can go below")
    parser.set_defaults(run=run)


def _parse_size(text: str | None, dims: int) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        size = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != dims or min(size) < 1:
        raise SystemExit(f"spattn demo: --size must be {'x'.join(['N'] * dims)} with positive sizes, got {text!r}")
    return size


def run(args) -> int:
    from . import demo

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("spattn demo: --device cuda, but no CUDA device is available")
    model = args.model or ("swin_base_patch4_window7_224" if device == "cuda" else "swin_tiny_patch4_window7_224")
    video = model.rpartition(":")[2].startswith("swin3d")
    batch_size = args.batch_size or ((4 if video else 32) if device == "cuda" else (1 if video else 8))
    if batch_size < 1 or args.rounds < 1:
        raise SystemExit("spattn demo: --batch-size and --rounds must be >= 1")
    size = _parse_size(args.size, 3 if video else 2)
    out = Path(args.out)
    demo.draw_pattern_pictures(out, video=video)
    result = demo.compare_swin(model, batch_size, device, args.dtype, rounds=args.rounds,
                               pretrained=args.pretrained, measure_memory=not args.no_memory, floor=args.floor,
                               size=size)
    table = demo.format_table(result)
    demo.plot_comparison([result], out / "swin_timing.png")
    (out / "swin_table.md").write_text(table + "\n")
    print()
    kind = "clip" if video else "image"
    print(f"{model}, batch {batch_size}, {device}, {args.dtype}, {kind} {'x'.join(map(str, result.image_size))}")
    print(f"output difference: max {result.max_abs_difference:.2e}, median {result.median_abs_difference:.2e}")
    print(table)
    if demo.format_floor(result):
        print(demo.format_floor(result))
    print(f"\npictures and table in {out}/")
    return 0
