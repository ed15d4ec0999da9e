import torch.nn.functional as F

from ablate.components.mlp._base import GatedMLP, GatedOptions
from ablate.registry import register


@register("mlp", "swiglu", paper="Shazeer 2020, GLU Variants Improve Transformer", options=GatedOptions)
class SwiGLUMLP(GatedMLP):
    """Gated MLP with a SiLU (Swish) gate; parameter-matched hidden width by default."""

    def activation(self, x):
        return F.silu(x)
