import torch.nn.functional as F

from ablate.components.mlp._base import DenseMLP, DenseOptions
from ablate.registry import register


@register("mlp", "gelu", paper="Hendrycks & Gimpel 2016, Gaussian Error Linear Units", options=DenseOptions)
class GELUMLP(DenseMLP):
    """Dense MLP with GELU (tanh approximation, as GPT-2), hidden width 4·d."""

    def activation(self, x):
        return F.gelu(x, approximate="tanh")
