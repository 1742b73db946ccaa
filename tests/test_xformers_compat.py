"""spattn.compat.xformers: SparseCS and scaled_dot_product_attention with xformers' conventions, and the
xformers Swin example's attention module running on them by changing its imports."""

from __future__ import annotations

import math

import pytest
import torch

import reference
import spattn
import spattn.compat.xformers.attention_patterns as AP
from spattn.compat.xformers import SparseCS, scaled_dot_product_attention


def _dense_xformers_attention(q, k, v, mask):
    # xformers' core attention on a dense bool mask: q scaled by 1/sqrt(D), -inf outside the mask.
    scores = (q.double() / math.sqrt(q.shape[-1])) @ k.double().transpose(-2, -1)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.double()


@pytest.mark.parametrize("shift", [0, 2])
def test_sparse_attention_on_the_swin_mask_equals_dense_masked_attention(shift):
    mask = AP.swin_attention_pattern(8, 8, 4, shift_size=shift)
    sparse_mask = SparseCS(mask)
    generator = torch.Generator().manual_seed(shift)
    q, k, v = (torch.randn(6, 64, 16, generator=generator) for _ in range(3))  # [B * heads, N, D]
    out = scaled_dot_product_attention(q, k, v, sparse_mask)
    torch.testing.assert_close(out.double(), _dense_xformers_attention(q, k, v, mask), rtol=2e-5, atol=2e-5)
    # Every entry is kept (xformers rounded nnz down to a multiple of 4 and lost the last row's entries).
    assert sparse_mask.pattern.nnz == int(mask.sum())
    assert torch.equal(sparse_mask.to_dense(), mask)


def test_gradients_flow_through_the_compat_attention():
    mask = AP.local_1d_pattern(20, 5) | AP.causal_1d_pattern(20)
    q, k, v = (torch.randn(3, 20, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, SparseCS(mask)), (q, k, v))


def test_dropout_module_is_applied_in_training_only():
    mask = AP.local_1d_pattern(16, 5)
    q, k, v = (torch.randn(2, 16, 8) for _ in range(3))
    dropout = torch.nn.Dropout(0.5).eval()
    expected = reference.attention(q, k, v, spattn.Pattern.from_dense(mask))
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, SparseCS(mask), dropout=dropout).double(),
                               expected, rtol=2e-5, atol=2e-5)
    dropout.train()
    torch.manual_seed(0)
    dropped = scaled_dot_product_attention(q, k, v, SparseCS(mask), dropout=dropout)
    assert not torch.allclose(dropped.double(), expected, atol=1e-3)


class _XformersExampleAttention(torch.nn.Module):
    """The attention module of xformers' Swin notebook, verbatim but for the imports."""

    def __init__(self, dim, num_heads, attn_mask):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = torch.nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = torch.nn.Dropout(0.0)
        self.proj = torch.nn.Linear(dim, dim)
        self.attn_mask = attn_mask

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        qkv = qkv.flatten(1, 2)
        q, k, v = qkv.unbind()
        x = scaled_dot_product_attention(q, k, v, self.attn_mask, dropout=self.attn_drop)
        x = x.reshape(B, self.num_heads, N, C // self.num_heads)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


def test_the_xformers_swin_example_module_runs_on_spattn():
    torch.manual_seed(0)
    mask = AP.swin_attention_pattern(8, 8, 4, shift_size=2)
    module = _XformersExampleAttention(32, 4, SparseCS(mask))
    x = torch.randn(2, 64, 32)
    out = module(x)
    qkv = module.qkv(x).reshape(2, 64, 3, 4, 8).permute(2, 0, 3, 1, 4)
    expected = _dense_xformers_attention(qkv[0], qkv[1], qkv[2], mask).float()
    expected = module.proj(expected.transpose(1, 2).reshape(2, 64, 32))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_bad_masks_are_refused():
    q = torch.randn(2, 4, 8)
    with pytest.raises(TypeError, match="att_mask"):
        scaled_dot_product_attention(q, q, q, torch.ones(4, 4))
    with pytest.raises(TypeError, match="matrix"):
        SparseCS(torch.ones(4, 4))
    with pytest.raises(TypeError, match="dropout"):
        scaled_dot_product_attention(q, q, q, SparseCS(torch.ones(4, 4, dtype=torch.bool)), dropout=0.1)
