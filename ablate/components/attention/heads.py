import torch
import torch.nn.functional as F
from torch import nn

from ablate.registry import register
from ablate.slots import Attention, Dims, KVCache, NormFactory, causal_mask


class Head(nn.Module):
    """One head of self-attention, as written in the lecture."""

    def __init__(self, d_model: int, head_dim: int, bias: bool):
        super().__init__()
        self.key = nn.Linear(d_model, head_dim, bias=bias)
        self.query = nn.Linear(d_model, head_dim, bias=bias)
        self.value = nn.Linear(d_model, head_dim, bias=bias)


@register(
    "attention", "heads", paper="Karpathy 2023, Let's build GPT (separate Head modules)",
    provides=("rotary", "attn_bias", "kv_cache"),
)
class SeparateHeadsAttention(Attention):
    """The lecture's multi-head attention: a list of ``Head`` modules, each with a masked softmax.

    Slow on purpose; it exists to show it computes exactly what the batched ``mha`` computes.
    """

    def __init__(self, options, dims: Dims, make_norm: NormFactory):
        super().__init__(options, dims, make_norm)
        self.kv_heads = dims.n_heads
        self.heads = nn.ModuleList(Head(dims.d_model, dims.head_dim, dims.bias) for _ in range(dims.n_heads))
        self.out_proj = nn.Linear(dims.d_model, dims.d_model, bias=dims.bias)
        self.attn_dropout = nn.Dropout(dims.dropout)

    def residual_projections(self):
        return [self.out_proj]

    def forward(self, x, position, pos, cache: KVCache | None = None):
        q = torch.stack([h.query(x) for h in self.heads], dim=1)  # (B, H, T, D)
        k = torch.stack([h.key(x) for h in self.heads], dim=1)
        v = torch.stack([h.value(x) for h in self.heads], dim=1)
        q, k = position.rotate(q, k, pos)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, S, D)
        pos_k = torch.arange(k.shape[2], device=pos.device) if cache is not None else pos
        bias = position.attn_bias(len(self.heads), pos, pos_k)
        mask = causal_mask(q.shape[2], k.shape[2], x.device, torch.float32)  # (T, S)
        outs = []
        for i in range(len(self.heads)):
            wei = q[:, i].float() @ k[:, i].float().transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, T, S)
            wei = wei + mask + (bias[i] if bias is not None else 0.0)
            wei = self.attn_dropout(F.softmax(wei, dim=-1))
            outs.append((wei @ v[:, i].float()).to(x.dtype))  # (B, T, D)
        return self.out_proj(torch.cat(outs, dim=-1))  # (B, T, C)
