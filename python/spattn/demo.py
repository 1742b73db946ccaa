"""The Swin showcase: a timm Swin Transformer and its spattn conversion side by side — equal outputs,
speed, memory, and pictures of the pattern. `spattn demo` and bench/swin.py both run it."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import _benchmark


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class SwinComparison:
    model: str
    batch_size: int
    device: str
    dtype: str
    image_size: tuple[int, int]
    max_abs_difference: float = float("nan")
    median_abs_difference: float = float("nan")
    # candidate -> seconds per call (medians), and candidate -> peak MiB of forward+backward
    forward: dict[str, float] = field(default_factory=dict)
    forward_backward: dict[str, float] = field(default_factory=dict)
    peak_memory: dict[str, float] = field(default_factory=dict)


def _timm_models(name: str, pretrained: bool, device: torch.device):
    import timm
    from timm.models import swin_transformer

    import spattn.timm

    torch.manual_seed(0)
    baseline = timm.create_model(name, pretrained=pretrained).to(device)
    converted = spattn.timm.convert(copy.deepcopy(baseline))
    fused = copy.deepcopy(baseline)
    for module in fused.modules():
        if isinstance(module, swin_transformer.WindowAttention):
            module.fused_attn = True  # timm's own fastest path: SDPA over the windows
    return {"timm": baseline, "timm fused": fused, "spattn": converted}


def _free_attention(self, x: torch.Tensor) -> torch.Tensor:
    # Everything of SwinTransformerBlock._attn but the attention itself: the qkv and output projections.
    attn = self.attn
    channels = x.shape[-1]
    return attn.proj(attn.qkv(x)[..., 2 * channels:])


def attention_free_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a timm Swin (V1) whose blocks skip attention but keep both projections: a floor for the
    time any attention implementation can reach, as every other layer runs unchanged."""
    from timm.models import swin_transformer

    floor = copy.deepcopy(model)
    for module in floor.modules():
        if isinstance(module, swin_transformer.SwinTransformerBlock):
            module._attn = _free_attention.__get__(module)
    return floor


def compare_swin(model: str = "swin_tiny_patch4_window7_224", batch_size: int = 8, device: str = "cpu",
                 dtype: str = "float32", rounds: int = 5, pretrained: bool = False, measure_memory: bool = True,
                 floor: bool = False, log=_log) -> SwinComparison:
    """Builds ``model`` (random weights unless ``pretrained``), converts a copy, and compares outputs, time
    of forward and forward+backward (alternating medians) and peak memory of forward+backward. With
    ``floor``, also times :func:`attention_free_copy` ("no attention"): the model with attention for free."""
    device = torch.device(device)
    log(f"building {model} and its spattn conversion on {device}")
    models = _timm_models(model, pretrained, device)
    if floor:
        models["no attention"] = attention_free_copy(models["timm"])
    config = models["timm"].pretrained_cfg
    image_size = tuple(config.get("input_size", (3, 224, 224))[1:])
    result = SwinComparison(model, batch_size, str(device), dtype, image_size)
    images = torch.randn(batch_size, 3, *image_size, device=device, generator=None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    log("checking that the outputs are equal")
    with torch.no_grad(), autocast:
        for m in models.values():
            m.eval()
        expected, actual = models["timm"](images).float(), models["spattn"](images).float()
    difference = (actual - expected).abs()
    result.max_abs_difference, result.median_abs_difference = difference.max().item(), difference.median().item()
    log(f"max |difference| {result.max_abs_difference:.2e}, median {result.median_abs_difference:.2e}")

    def forward(m):
        def run():
            with torch.no_grad(), autocast:
                m(images)
        return run

    def forward_backward(m):
        def run():
            with autocast:
                out = m(images)
            out.float().sum().backward()
        return run

    log(f"timing forward ({rounds} alternating rounds)")
    result.forward = _benchmark.median_times({n: forward(m) for n, m in models.items()}, rounds=rounds,
                                             device=device, progress=log)
    for m in models.values():
        m.train()
    log(f"timing forward+backward ({rounds} alternating rounds)")
    result.forward_backward = _benchmark.median_times({n: forward_backward(m) for n, m in models.items()},
                                                      rounds=rounds, device=device, progress=log)
    if measure_memory:
        log("measuring peak memory of forward+backward")
        for name, m in models.items():
            if device.type == "cuda":
                m.zero_grad(set_to_none=True)
                result.peak_memory[name] = _benchmark.cuda_peak_memory(forward_backward(m), device)
            elif name in ("timm", "spattn"):
                spec = {"model": model, "batch_size": batch_size, "image_size": list(image_size),
                        "converted": name == "spattn", "backward": True, "threads": torch.get_num_threads()}
                result.peak_memory[name] = _benchmark.process_peak_memory(spec)
    return result


def format_table(result: SwinComparison) -> str:
    """A Markdown table of times, memory and the spattn/timm ratios."""
    names = list(result.forward)
    header = "| | " + " | ".join(names) + " | spattn / timm | spattn / timm fused |"
    lines = [header, "|" + "---|" * (len(names) + 3)]

    def row(label, values, unit, scale):
        cells = [f"{values[n] * scale:.1f}" if n in values else "–" for n in names]
        ratio = lambda base: f"{values['spattn'] / values[base]:.2f}" if base in values and "spattn" in values else "–"  # noqa: E731
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + f" | {ratio('timm')} | {ratio('timm fused')} |")

    row("forward", result.forward, "ms", 1e3)
    row("forward+backward", result.forward_backward, "ms", 1e3)
    if result.peak_memory:
        label = "peak memory, forward+backward" + (" (process RSS above the model)" if result.device == "cpu" else "")
        row(label, result.peak_memory, "MiB", 1.0)
    return "\n".join(lines)


def format_floor(result: SwinComparison) -> str | None:
    """One sentence on the attention-free floor, when the comparison timed it (``floor=True``)."""
    if "no attention" not in result.forward:
        return None
    floor = {kind: getattr(result, kind)["no attention"] / getattr(result, kind)["timm"]
             for kind in ("forward", "forward_backward")}
    return (f"With attention for free the model would take {floor['forward']:.2f}x timm's forward and "
            f"{floor['forward_backward']:.2f}x its forward+backward: no attention can do better.")


def plot_comparison(results: list[SwinComparison], path: Path) -> None:
    """Bar charts of time (forward, forward+backward) and memory for each model, one figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("forward", "forward (ms)", 1e3), ("forward_backward", "forward+backward (ms)", 1e3),
               ("peak_memory", "peak memory fwd+bwd (MiB)", 1.0)]
    fig, axes = plt.subplots(len(results), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(results)),
                             squeeze=False)
    colors = {"timm": "#7f7f7f", "timm fused": "#bcbd22", "spattn": "#1f77b4", "no attention": "#d9d9d9"}
    for r, result in enumerate(results):
        for c, (attribute, title, scale) in enumerate(metrics):
            values = getattr(result, attribute)
            ax = axes[r][c]
            names = list(values)
            bars = ax.bar(names, [values[n] * scale for n in names], color=[colors.get(n, "C0") for n in names])
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
            ax.set_title(f"{result.model}, batch {result.batch_size}\n{title}", fontsize=9)
            ax.tick_params(labelsize=8)
    fig.suptitle(f"timm vs spattn on {results[0].device} ({results[0].dtype}), medians", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_pattern_pictures(out: Path, log=_log) -> list[Path]:
    """The Swin pattern unshifted and shifted, and each query's attention map, on an 8 x 8 grid with
    4 x 4 windows (the pictures of the Swin paper)."""
    from . import patterns, plot

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "swin_pattern.png", out / "swin_attention_maps_unshifted.png",
             out / "swin_attention_maps_shifted.png"]
    plot.plot_swin(8, 8, 4, 2, path=paths[0])
    plot.plot_pattern(patterns.swin(8, 8, 4, 0), grid=(8, 8), path=paths[1])
    plot.plot_pattern(patterns.swin(8, 8, 4, 2), grid=(8, 8), path=paths[2])
    for p in paths:
        log(f"wrote {p}")
    return paths
