from torch import nn

from ablate.registry import register
from ablate.slots import Dims, Position


@register("position", "learned", paper="Radford et al. 2019, GPT-2 (learned absolute positions)")
class LearnedPosition(Position):
    """Learned absolute position embeddings added to the token embeddings (GPT-2)."""

    def __init__(self, options, dims: Dims):
        super().__init__(options, dims)
        self.wpe = nn.Embedding(dims.context, dims.d_model)

    def embed(self, x, pos):
        if int(pos[-1]) >= self.wpe.num_embeddings:
            raise ValueError(f"learned positions cover {self.wpe.num_embeddings} tokens; got position {int(pos[-1])}")
        return x + self.wpe(pos)  # (B, T, C) + (T, C)
