from dataclasses import dataclass

import torch
from torch import nn

from ablate.registry import option, register
from ablate.slots import Norm


@dataclass(frozen=True)
class RMSNormOptions:
    eps: float = option(1e-6, gt=0)


@register("norm", "rmsnorm", paper="Zhang & Sennrich 2019, Root Mean Square Layer Normalization", options=RMSNormOptions)
class RMSNorm(Norm):
    """Root-mean-square normalisation: rescale by the RMS, no centring, no bias (computed in fp32)."""

    def __init__(self, options: RMSNormOptions, dim: int, bias: bool = True):
        super().__init__(options, dim, bias)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.options.eps)
        return (y * self.weight.float()).to(x.dtype)
