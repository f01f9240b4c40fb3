"""Small helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

import math

import torch
from torch import nn


def perturb_(model: nn.Module, seed: int = 0) -> None:
    """Random, nonzero weights at a stable scale (Fixup zero-initialises whole branches and the head)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.7 / math.sqrt(fan_in))
