"""ablate-dyt: Dynamic Tanh (DyT) as a ``norm`` component for ablate.

Installing this package makes ``dyt`` available everywhere ablate takes a component name
(``ablate run --variant dyt+swiglu``), through the entry point in ``pyproject.toml``.
"""

from dataclasses import dataclass

import torch
from torch import nn

from ablate.registry import register
from ablate.slots import Norm

__version__ = "0.1.0"


@dataclass(frozen=True)
class DyTOptions:
    alpha_init: float = 0.5  # the paper's default; it lowers it for wide LLMs (its Table 10)


@register(
    "norm",
    "dyt",
    paper="Zhu, Chen, He, LeCun & Liu 2025, Transformers without Normalization (DyT), arXiv:2503.10622",
    options=DyTOptions,
)
class DynamicTanh(Norm):
    """Dynamic Tanh: weight·tanh(alpha·x) + bias per channel, a learned scalar alpha, no statistics.

    Zhu et al. (2025) observe that trained LayerNorms map activations through an S-shaped curve and
    replace the normalisation by an element-wise ``tanh(alpha * x)``: alpha (one learnable scalar per
    layer, initialised to ``alpha_init``) sets the input scale, tanh squashes the outliers, and the
    usual per-channel affine ``weight`` (ones) and ``bias`` (zeros) follow. No mean or variance is
    computed, so the layer is cheaper and needs no reduction over the channels.

    The bias follows the model's ``bias`` option (``bias=false`` drops it, as for LayerNorm).
    """

    def __init__(self, options: DyTOptions, dim: int, bias: bool = True):
        super().__init__(options, dim, bias)
        self.alpha = nn.Parameter(torch.full((1,), float(options.alpha_init)))
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.alpha * x) * self.weight  # (..., C)
        return y + self.bias if self.bias is not None else y
