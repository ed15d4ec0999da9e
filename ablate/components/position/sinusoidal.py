import math

import torch

from ablate.registry import register
from ablate.slots import Dims, Position


@register("position", "sinusoidal", paper="Vaswani et al. 2017, Attention Is All You Need (sec. 3.5)")
class SinusoidalPosition(Position):
    """Fixed sine/cosine absolute positions added to the token embeddings (the 2017 paper's)."""

    def __init__(self, options, dims: Dims):
        super().__init__(options, dims)
        i = torch.arange(0, dims.d_model, 2, dtype=torch.float32)
        self.register_buffer("inv_freq", torch.exp(-math.log(10000.0) * i / dims.d_model), persistent=False)

    def embed(self, x, pos):
        angles = pos.float()[:, None] * self.inv_freq[None, :]  # (T, C/2)
        pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, C): sin at 2i, cos at 2i+1
        return x + pe[:, : x.shape[-1]].to(x.dtype)
