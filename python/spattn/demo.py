"""The Swin showcase: a Swin Transformer (timm's or torchvision's, Video Swin included) and its spattn
conversion side by side — equal outputs, speed, memory, and pictures of the pattern. `spattn demo` and
bench/swin.py both run it."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
    image_size: tuple[int, ...]  # (H, W), or (T, H, W) of a video clip
    baseline: str = "timm"  # the original's column
    max_abs_difference: float = float("nan")
    median_abs_difference: float = float("nan")
    # candidate -> seconds per call (medians), and candidate -> peak MiB of forward+backward
    forward: dict[str, float] = field(default_factory=dict)
    forward_backward: dict[str, float] = field(default_factory=dict)
    peak_memory: dict[str, float] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """One model of a source, as the showcase needs it (see :func:`_load_model`).

    model:    the original (random weights unless pretrained), in eval mode, on the device.
    inputs:   an example batch (images [B, 3, H, W], or clips [B, 3, T, H, W] for video models).
    convert:  the source's in-place converter to spattn (``spattn.timm.convert``, ...).
    baseline: the original's column in the tables ("timm", "torchvision", ...).
    variants: other implementations of the original to time beside it: column -> builder from a copy.
    floor:    builder of the attention-free copy from a copy (every layer but attention runs unchanged).
    """

    model: torch.nn.Module
    inputs: torch.Tensor
    convert: Callable[[torch.nn.Module], torch.nn.Module]
    baseline: str
    variants: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = field(default_factory=dict)
    floor: Callable[[torch.nn.Module], torch.nn.Module] | None = None

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[2:])


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


def _timm_fused(model: torch.nn.Module) -> torch.nn.Module:
    from timm.models import swin_transformer

    for module in model.modules():
        if isinstance(module, swin_transformer.WindowAttention):
            module.fused_attn = True  # timm's own fastest path: SDPA over the windows
    return model


def _load_timm(name: str, batch_size: int, size, pretrained: bool) -> LoadedModel:
    import timm

    import spattn.timm

    kwargs = {} if size is None else {"img_size": tuple(size)}
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    size = size or model.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    return LoadedModel(model, torch.randn(batch_size, 3, *size), spattn.timm.convert, "timm",
                       {"timm fused": _timm_fused}, attention_free_copy)


def _free_attention_torchvision(self, x: torch.Tensor) -> torch.Tensor:
    # Everything of torchvision's ShiftedWindowAttention(3d).forward but the attention: both projections.
    channels = x.shape[-1]
    return self.proj(self.qkv(x)[..., 2 * channels:])


def _attention_free_torchvision(model: torch.nn.Module) -> torch.nn.Module:
    from torchvision.models import swin_transformer
    from torchvision.models.video import swin_transformer as video_swin_transformer

    for module in model.modules():
        if isinstance(module, (swin_transformer.ShiftedWindowAttention,
                               video_swin_transformer.ShiftedWindowAttention3d)):
            module.forward = _free_attention_torchvision.__get__(module)
    return model


def _load_torchvision(name: str, batch_size: int, size, pretrained: bool) -> LoadedModel:
    import torchvision

    import spattn.torchvision

    video = name.startswith("swin3d")
    builder = getattr(torchvision.models.video if video else torchvision.models, name, None)
    if builder is None or not name.startswith("swin"):
        raise SystemExit(f"spattn demo: torchvision has no Swin model {name!r} (swin_t/s/b, swin_v2_t/s/b, "
                         f"swin3d_t/s/b)")
    model = builder(weights="DEFAULT" if pretrained else None)
    # The sizes of torchvision's weights: 224 x 224 images (256 for V2), 16-frame 224 x 224 clips.
    size = size or ((16, 224, 224) if video else (256, 256) if name.startswith("swin_v2") else (224, 224))
    return LoadedModel(model, torch.randn(batch_size, 3, *size), spattn.torchvision.convert, "torchvision",
                       floor=lambda m: _attention_free_torchvision(copy.deepcopy(m)))


def _load_transformers(name: str, batch_size: int, size, pretrained: bool) -> LoadedModel:
    import spattn.transformers

    if name not in ("swin", "swinv2"):
        raise SystemExit(f"spattn demo: transformers:{name} is not a model of the demo (transformers:swin, "
                         f"transformers:swinv2)")
    if pretrained:
        raise SystemExit("spattn demo: transformers:NAME models are built from their configuration with random "
                         "weights (--pretrained is for timm and torchvision)")
    model, images = spattn.transformers.demo_model(name, batch_size, size)
    return LoadedModel(model, images, spattn.transformers.convert, "transformers")


# Model sources of `spattn demo --model SOURCE:NAME`: SOURCE -> loader(name, batch_size, size, pretrained).
_SOURCES: dict[str, Callable[..., LoadedModel]] = {"timm": _load_timm, "torchvision": _load_torchvision,
                                                   "transformers": _load_transformers}


def _load_model(spec: str, batch_size: int = 1, size=None, pretrained: bool = False,
                device: torch.device | str = "cpu") -> LoadedModel:
    """The model ``spec`` names — ``SOURCE:NAME`` (``timm:NAME``, ``torchvision:NAME``) or a bare timm
    ``NAME`` — built with seed 0 and an example batch of ``batch_size`` at ``size`` (the model's standard
    input size when None: (H, W), or (T, H, W) for video), on ``device``."""
    source, _, name = spec.rpartition(":")
    source = source or "timm"
    if source not in _SOURCES:
        raise SystemExit(f"spattn demo: unknown model source {source!r} in {spec!r} (one of "
                         f"{', '.join(sorted(_SOURCES))})")
    torch.manual_seed(0)
    loaded = _SOURCES[source](name, batch_size, None if size is None else tuple(size), pretrained)
    loaded.model = loaded.model.to(device).eval()
    loaded.inputs = loaded.inputs.to(device)
    return loaded


def compare_swin(model: str = "swin_tiny_patch4_window7_224", batch_size: int = 8, device: str = "cpu",
                 dtype: str = "float32", rounds: int = 5, pretrained: bool = False, measure_memory: bool = True,
                 floor: bool = False, size=None, log=_log) -> SwinComparison:
    """Builds ``model`` (a :func:`_load_model` spec: ``timm:NAME``, ``torchvision:NAME`` or a timm NAME;
    random weights unless ``pretrained``), converts a copy, and compares outputs, time of forward and
    forward+backward (alternating medians) and peak memory of forward+backward. With ``floor``, also times
    the model with attention for free ("no attention"): its blocks keep only the qkv and output projections."""
    device = torch.device(device)
    log(f"building {model} and its spattn conversion on {device}")
    loaded = _load_model(model, batch_size, size, pretrained, device)
    baseline = loaded.model
    models = {loaded.baseline: baseline}
    for column, build in loaded.variants.items():
        models[column] = build(copy.deepcopy(baseline))
    models["spattn"] = loaded.convert(copy.deepcopy(baseline))
    if floor and loaded.floor is not None:
        models["no attention"] = loaded.floor(baseline)
    images = loaded.inputs
    result = SwinComparison(model, batch_size, str(device), dtype, loaded.input_size, baseline=loaded.baseline)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    log("checking that the outputs are equal")
    with torch.no_grad(), autocast:
        for m in models.values():
            m.eval()
        expected, actual = models[loaded.baseline](images).float(), models["spattn"](images).float()
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
            elif name in (loaded.baseline, "spattn"):
                spec = {"model": model, "batch_size": batch_size, "size": list(loaded.input_size),
                        "converted": name == "spattn", "backward": True, "threads": torch.get_num_threads()}
                result.peak_memory[name] = _benchmark.process_peak_memory(spec)
    return result


def format_table(result: SwinComparison) -> str:
    """A Markdown table of times, memory and the ratios of spattn to the original and its variants."""
    names = list(result.forward)
    bases = [n for n in names if n not in ("spattn", "no attention")]
    header = "| | " + " | ".join(names) + " | " + " | ".join(f"spattn / {b}" for b in bases) + " |"
    lines = [header, "|" + "---|" * (len(names) + len(bases) + 1)]

    def row(label, values, unit, scale):
        cells = [f"{values[n] * scale:.1f}" if n in values else "–" for n in names]
        ratio = lambda base: f"{values['spattn'] / values[base]:.2f}" if base in values and "spattn" in values else "–"  # noqa: E731
        lines.append(f"| {label} ({unit}) | " + " | ".join(cells) + " | " + " | ".join(ratio(b) for b in bases) + " |")

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
    floor = {kind: getattr(result, kind)["no attention"] / getattr(result, kind)[result.baseline]
             for kind in ("forward", "forward_backward")}
    return (f"With attention for free the model would take {floor['forward']:.2f}x {result.baseline}'s forward and "
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
    colors = {"timm": "#7f7f7f", "torchvision": "#7f7f7f", "timm fused": "#bcbd22", "spattn": "#1f77b4",
              "no attention": "#d9d9d9"}
    for r, result in enumerate(results):
        for c, (attribute, title, scale) in enumerate(metrics):
            values = getattr(result, attribute)
            ax = axes[r][c]
            names = list(values)
            bars = ax.bar(names, [values[n] * scale for n in names], color=[colors.get(n, "C0") for n in names])
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
            ax.set_title(f"{result.model}, batch {result.batch_size}\n{title}", fontsize=9)
            ax.tick_params(labelsize=8)
    baselines = " / ".join(dict.fromkeys(result.baseline for result in results))
    fig.suptitle(f"{baselines} vs spattn on {results[0].device} ({results[0].dtype}), medians", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _frames_side_by_side(pattern, frames: int, height: int, width: int):
    """A [T*H*W]^2 pattern (tokens numbered (t, h, w) row-major) renumbered as the grid H x (T * W) that
    puts the frames side by side: token (t, h, w) becomes h * T * W + t * W + w."""
    from .pattern import Pattern

    token = torch.arange(frames * height * width)
    t, h, w = token // (height * width), (token // width) % height, token % width
    renumber = h * frames * width + t * width + w
    rows = torch.repeat_interleave(token, pattern.row_lengths().cpu())
    return Pattern.from_coo(renumber[rows], renumber[pattern.col_indices.cpu()], pattern.shape)


def draw_pattern_pictures(out: Path, log=_log, video: bool = False) -> list[Path]:
    """The Swin pattern unshifted and shifted, and each query's attention map, on an 8 x 8 grid with
    4 x 4 windows (the pictures of the Swin paper). With ``video``, also Video Swin's 3-D pattern on 4 frames
    of 8 x 8 with 2 x 4 x 4 windows, unshifted and shifted by (1, 2, 2), its tokens numbered so that the
    query maps show the 4 frames side by side."""
    from . import patterns, plot

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "swin_pattern.png", out / "swin_attention_maps_unshifted.png",
             out / "swin_attention_maps_shifted.png"]
    plot.plot_swin(8, 8, 4, 2, path=paths[0])
    plot.plot_pattern(patterns.swin(8, 8, 4, 0), grid=(8, 8), path=paths[1])
    plot.plot_pattern(patterns.swin(8, 8, 4, 2), grid=(8, 8), path=paths[2])
    if video:
        for shift, suffix in (((0, 0, 0), "unshifted"), ((1, 2, 2), "shifted")):
            path = out / f"video_swin_attention_maps_{suffix}.png"
            plot.plot_pattern(_frames_side_by_side(patterns.swin_3d(4, 8, 8, (2, 4, 4), shift), 4, 8, 8),
                              grid=(8, 4 * 8), path=path, max_queries=16,
                              title=f"Video Swin, 4 frames of 8 x 8, window 2 x 4 x 4, shift {shift}")
            paths.append(path)
    for p in paths:
        log(f"wrote {p}")
    return paths
