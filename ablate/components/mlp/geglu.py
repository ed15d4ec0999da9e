import torch.nn.functional as F

from ablate.components.mlp._base import GatedMLP, GatedOptions
from ablate.registry import register


@register("mlp", "geglu", paper="Shazeer 2020, GLU Variants Improve Transformer", options=GatedOptions)
class GeGLUMLP(GatedMLP):
    """Gated MLP with a GELU gate; parameter-matched hidden width by default."""

    def activation(self, x):
        return F.gelu(x, approximate="tanh")
