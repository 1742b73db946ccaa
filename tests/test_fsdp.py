"""A converted torchvision Swin trains under FSDP2 (``torch.distributed.fsdp.fully_shard``): 2 processes
(gloo, CPU), each block sharded, give the gradients of one process on the whole batch, and the same
parameters after optimiser steps."""

from __future__ import annotations

import pytest
import torch

torchvision = pytest.importorskip("torchvision")
fsdp = pytest.importorskip("torch.distributed.fsdp")

pytestmark = pytest.mark.slow

WORLD_SIZE = 2
STEPS = 2


def _tiny_converted_swin() -> torch.nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer, SwinTransformerBlockV2, PatchMergingV2

    import spattn.torchvision

    torch.manual_seed(0)
    # 16 x 18 then 8 x 9 tokens: windows of 4 pad both stages (padding keys in every block), shifted blocks in
    # both; Swin V2 (cosine attention, continuous position bias). No stochastic depth: every process must see
    # the same network.
    model = SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                            stochastic_depth_prob=0.0, num_classes=10, block=SwinTransformerBlockV2,
                            downsample_layer=PatchMergingV2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("qkv.bias"):
                parameter.normal_()
    return spattn.torchvision.convert(model)


def _images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 36, generator=torch.Generator().manual_seed(3))


def _train(model, images, gradients: dict, full_tensor) -> None:
    """STEPS of SGD on the mean squared output; records the first step's gradients (full tensors)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(STEPS):
        optimizer.zero_grad()
        model(images).pow(2).mean().backward()
        if step == 0:
            gradients.update({name: full_tensor(p.grad) for name, p in model.named_parameters()})
        optimizer.step()


def _worker(rank: int, init_file: str, out_file: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torchvision.models.swin_transformer import SwinTransformerBlock

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = _tiny_converted_swin()
        for module in model.modules():
            if isinstance(module, SwinTransformerBlock):
                fully_shard(module)
        fully_shard(model)
        gradients: dict = {}
        # FSDP2 averages the gradients over the processes (reduce-scatter): each one holds a shard.
        _train(model, _images().chunk(WORLD_SIZE)[rank], gradients, lambda grad: grad.full_tensor())
        parameters = {name: p.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save({"gradients": gradients, "parameters": parameters}, out_file)
    finally:
        torch.distributed.destroy_process_group()


def test_fsdp2_gradients_and_steps_equal_single_process(tmp_path):
    out_file = str(tmp_path / "result.pt")
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "init"), out_file), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(out_file)

    model = _tiny_converted_swin()
    gradients: dict = {}
    _train(model, _images(), gradients, lambda grad: grad.clone())
    assert set(distributed["gradients"]) == set(gradients)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(distributed["gradients"][name], gradients[name], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(distributed["parameters"][name], parameter.detach(), rtol=1e-4, atol=1e-6,
                                   msg=name)
