import torch.nn.functional as F

from ablate.components.mlp._base import DenseMLP, DenseOptions
from ablate.registry import register


@register("mlp", "relu", paper="Vaswani et al. 2017, Attention Is All You Need (sec. 3.3)", options=DenseOptions)
class ReLUMLP(DenseMLP):
    """Dense MLP with ReLU, hidden width 4·d (the 2017 paper's feed-forward network)."""

    def activation(self, x):
        return F.relu(x)
