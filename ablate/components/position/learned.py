from torch import nn

from ablate.registry import register
from ablate.slots import Dims, Position


@register("position", "learned", paper="Radford et al. 2019, GPT-2 (learned absolute positions)")
class LearnedPosition(Position):
    """Learned absolute position embeddings added to the token embeddings (GPT-2)."""

    def __init__(self, options, dims: Dims):
        super().__init__(options, dims)
        self.wpe = nn.Embedding(dims.context, dims.d_model)
        self.max_positions = dims.context  # the skeleton refuses positions past the table

    def embed(self, x, pos):
        return x + self.wpe(pos)  # (B, T, C) + (T, C)
