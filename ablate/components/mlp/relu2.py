import torch.nn.functional as F

from ablate.components.mlp._base import DenseMLP, DenseOptions
from ablate.registry import register


@register("mlp", "relu2", paper="So et al. 2021, Primer: Searching for Efficient Transformers", options=DenseOptions)
class SquaredReLUMLP(DenseMLP):
    """Dense MLP with squared ReLU, hidden width 4·d (Primer)."""

    def activation(self, x):
        return F.relu(x).square()
