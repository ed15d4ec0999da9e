from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ablate.registry import option, register
from ablate.slots import Norm


@dataclass(frozen=True)
class LayerNormOptions:
    eps: float = option(1e-5, gt=0)


@register("norm", "layernorm", paper="Ba et al. 2016, Layer Normalization", options=LayerNormOptions)
class LayerNorm(Norm):
    """Layer normalisation: subtract the mean, divide by the std, scale and (optionally) shift."""

    def __init__(self, options: LayerNormOptions, dim: int, bias: bool = True):
        super().__init__(options, dim, bias)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.options.eps)
