from dataclasses import dataclass

import torch

from ablate.registry import option, register
from ablate.slots import Dims, Position


@dataclass(frozen=True)
class RoPEOptions:
    base: float = option(10000.0, gt=0)


@register("position", "rope", paper="Su et al. 2021, RoFormer: Rotary Position Embedding", options=RoPEOptions, needs=("rotary",))
class RotaryPosition(Position):
    """Rotary position embedding: rotate query/key channel pairs by position-dependent angles.

    Channels are paired as (i, i + D/2) ("rotate half", as in GPT-NeoX and HF LLaMA), which is a fixed
    permutation of the paper's interleaved pairs and gives identical attention scores.
    """

    def __init__(self, options: RoPEOptions, dims: Dims):
        super().__init__(options, dims)
        d = dims.head_dim
        if d % 2:
            raise ValueError(f"rope needs an even head dim, got {d}")
        inv_freq = options.base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
        # each frequency for both halves of the head, and the sign of the sine on each half: the
        # rotation is x·cos + swap_halves(x)·(∓sin), with no negation of x and no repeat per call
        self.register_buffer("inv_freq", inv_freq.repeat(2), persistent=False)  # (D,)
        self.register_buffer("sin_sign", torch.cat([-torch.ones(d // 2), torch.ones(d // 2)]), persistent=False)

    def rotate(self, q, k, pos):
        angles = pos.float()[:, None] * self.inv_freq[None, :]  # (T, D)
        cos, sin = angles.cos(), angles.sin() * self.sin_sign
        return _apply(q, cos, sin), _apply(k, cos, sin)


def _apply(x, cos, signed_sin):
    """x·cos + [x2, x1]·[-sin, sin], which is x·cos + [-x2, x1]·sin to the bit (a sign moves exactly;
    ``addcmul`` would fuse the multiply-add and round differently)."""
    wide = x.float()
    x1, x2 = wide.chunk(2, dim=-1)  # (B, H, T, D/2) each
    return (wide * cos + torch.cat([x2, x1], dim=-1) * signed_sin).to(x.dtype)
