from dataclasses import dataclass

import torch
from torch import nn

from ablate.registry import option, register
from ablate.slots import Attention, Dims, KVCache, NormFactory, causal_attention


@dataclass(frozen=True)
class GQAOptions:
    kv_heads: int = option(2, ge=1)
    qk_norm: bool = False


@register(
    "attention", "gqa", paper="Ainslie et al. 2023, GQA: Training Generalized Multi-Query Transformer Models",
    options=GQAOptions, provides=("rotary", "attn_bias", "kv_cache"),
)
class GroupedQueryAttention(Attention):
    """Grouped-query attention: all heads in one batched module, ``kv_heads`` shared key/value heads.

    Multi-head (kv_heads = n_heads) and multi-query (kv_heads = 1) attention are this module with
    ``kv_heads`` fixed. ``qk_norm`` normalises queries and keys per head with the variant's norm
    (Dehghani et al. 2023).
    """

    def __init__(self, options, dims: Dims, make_norm: NormFactory):
        super().__init__(options, dims, make_norm)
        self.n_heads, self.head_dim = dims.n_heads, dims.head_dim
        self.kv_heads = self.resolve_kv_heads(dims)
        if dims.n_heads % self.kv_heads:
            raise ValueError(f"kv_heads={self.kv_heads} must divide n_heads={dims.n_heads}")
        width = (self.n_heads + 2 * self.kv_heads) * self.head_dim
        self.qkv = nn.Linear(dims.d_model, width, bias=dims.bias)
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, dims.d_model, bias=dims.bias)
        self.q_norm = make_norm(self.head_dim) if options.qk_norm else nn.Identity()
        self.k_norm = make_norm(self.head_dim) if options.qk_norm else nn.Identity()
        self.dropout = dims.dropout

    def resolve_kv_heads(self, dims: Dims) -> int:
        return self.options.kv_heads

    def residual_projections(self):
        return [self.out_proj]

    def forward(self, x, position, pos, cache: KVCache | None = None):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1
        )
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q, k = position.rotate(self.q_norm(q), self.k_norm(k), pos)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, K, S, D)
        pos_k = torch.arange(k.shape[2], device=pos.device) if cache is not None else pos
        bias = position.attn_bias(self.n_heads, pos, pos_k)  # (H, T, S) or None
        y = attend(q, k, v, bias, self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, C)


def attend(q, k, v, bias, dropout: float):
    """``causal_attention``, in float32 on the CPU even under bf16 autocast: torch's CPU attention
    kernels are slower in bf16 than in float32 at every size we timed (forward+backward, one thread:
    4.3x at B12 H4 T64 D32, nanoGPT's CPU size; 1.1x at T256 D64; 1.25x at T1024 D64)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return causal_attention(q.float(), k.float(), v.float(), bias, dropout).to(q.dtype)
    return causal_attention(q, k, v, bias, dropout)
