"""Runs one Swin model (optionally converted to spattn) in this fresh process and prints the peak resident
memory its forward(+backward) needs beyond what the process held before (MiB). Used by
spattn._benchmark.process_peak_memory; argument: a JSON spec with keys model (a ``spattn demo --model`` spec:
``timm:NAME``, ``torchvision:NAME`` or a timm NAME), batch_size, size (input size: [H, W] or [T, H, W];
optional), converted, backward, threads, and optionally warm: run a no-grad forward first (a converted model
then has its layouts built; memory that forward freed may stay resident and lower the figure).

The process's peak (VmHWM) is reset just before the measured run (Linux: writing 5 to /proc/self/clear_refs),
so imports and model construction do not mask the run's own peak."""

from __future__ import annotations

import json
import sys

import torch


def main(spec: dict) -> float:
    from spattn.demo import _load_model

    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    loaded = _load_model(spec["model"], spec["batch_size"], spec.get("size", spec.get("image_size")))
    model, images = loaded.model, loaded.inputs
    if spec["converted"]:
        loaded.convert(model)

    def run():
        if spec["backward"]:
            model.train()
            model(images).sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            model.eval()
            with torch.no_grad():
                model(images)

    # No warm-up run unless asked: memory it freed would stay resident and hide the measured run's peak.
    if spec.get("warm"):
        model.eval()
        with torch.no_grad():
            model(images)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


if __name__ == "__main__":
    print(f"{main(json.loads(sys.argv[1])):.1f}")
