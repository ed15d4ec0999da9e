import math

import torch

from ablate.registry import register
from ablate.slots import Dims, Position


@register("position", "alibi", paper="Press et al. 2022, Train Short, Test Long (ALiBi)", needs=("attn_bias",))
class ALiBiPosition(Position):
    """Attention with linear biases: each head penalises distance with its own fixed slope."""

    def __init__(self, options, dims: Dims):
        super().__init__(options, dims)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(dims.n_heads)), persistent=False)

    def attn_bias(self, n_heads, pos_q, pos_k):
        slopes = self.slopes if n_heads == len(self.slopes) else torch.tensor(alibi_slopes(n_heads), device=pos_q.device)
        distance = (pos_k[None, :] - pos_q[:, None]).float()  # (T, S), <= 0 where visible
        return slopes[:, None, None] * distance[None]  # (H, T, S)


def alibi_slopes(n_heads: int) -> list[float]:
    """The paper's geometric slopes; for a non-power-of-two count, interleave the next power's."""
    def powers(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return powers(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return powers(closest) + powers(2 * closest)[0::2][: n_heads - closest]
