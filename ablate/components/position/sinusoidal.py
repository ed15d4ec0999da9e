import math
from dataclasses import dataclass

import torch

from ablate.registry import option, register
from ablate.slots import Dims, Position


@dataclass(frozen=True)
class SinusoidalOptions:
    # Amplitude of the table. The paper adds unit-amplitude sines to embeddings scaled to unit size
    # (√d_model times an N(0, 1/d_model) init); under the GPT-2 init used here (N(0, 0.02)) the same
    # balance between token and position signal needs the table at the embeddings' scale.
    scale: float = option(0.02, ge=0)


@register("position", "sinusoidal", paper="Vaswani et al. 2017, Attention Is All You Need (sec. 3.5)",
          options=SinusoidalOptions)
class SinusoidalPosition(Position):
    """Fixed sine/cosine absolute positions added to the token embeddings (the 2017 paper's)."""

    def __init__(self, options: SinusoidalOptions, dims: Dims):
        super().__init__(options, dims)
        i = torch.arange(0, dims.d_model, 2, dtype=torch.float32)
        self.register_buffer("inv_freq", torch.exp(-math.log(10000.0) * i / dims.d_model), persistent=False)

    def embed(self, x, pos):
        angles = pos.float()[:, None] * self.inv_freq[None, :]  # (T, C/2)
        pe = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, C): sin at 2i, cos at 2i+1
        return x + self.options.scale * pe[:, : x.shape[-1]].to(x.dtype)
