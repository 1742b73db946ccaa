"""A converted Swin trains under DistributedDataParallel: 2 processes (gloo, CPU) give the gradients of
one process on the whole batch."""

from __future__ import annotations

import os

import pytest
import torch

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.slow

WORLD_SIZE = 2


def _tiny_converted_swin() -> torch.nn.Module:
    from timm.models.swin_transformer import SwinTransformer

    import spattn.timm

    torch.manual_seed(0)
    # 16 x 16 then 8 x 8 tokens, windows of 4, shifted blocks in both stages; no stochastic depth, so that
    # every process sees the same network.
    model = SwinTransformer(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                            num_classes=10, drop_path_rate=0.0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_()
    return spattn.timm.convert(model)


def _images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _loss(model, images):
    return model(images).pow(2).mean()


def _worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_tiny_converted_swin())
        shard = _images().chunk(WORLD_SIZE)[rank]
        _loss(model, shard).backward()  # DDP averages the gradients over the processes
        if rank == 0:
            torch.save({name: p.grad for name, p in model.module.named_parameters()}, out_file)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gradients_equal_single_process(tmp_path):
    out_file = str(tmp_path / "grads.pt")
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "init"), out_file), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(out_file)

    model = _tiny_converted_swin()
    _loss(model, _images()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        torch.testing.assert_close(distributed[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert os.path.exists(out_file)
