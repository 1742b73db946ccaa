"""Runs one timm model (optionally converted to spattn) in this fresh process and prints its peak resident
memory in MiB. Used by spattn._benchmark.process_peak_memory; argument: a JSON spec with keys
model, batch_size, image_size, converted, backward, threads."""

from __future__ import annotations

import json
import resource
import sys

import torch


def main(spec: dict) -> float:
    import timm

    import spattn.timm

    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    torch.manual_seed(0)
    model = timm.create_model(spec["model"], pretrained=False)
    if spec["converted"]:
        spattn.timm.convert(model)
    size = spec["image_size"]
    images = torch.randn(spec["batch_size"], 3, size[0], size[1])
    for _ in range(2):
        if spec["backward"]:
            model.train()
            model(images).sum().backward()
        else:
            model.eval()
            with torch.no_grad():
                model(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    print(f"{main(json.loads(sys.argv[1])):.1f}")
