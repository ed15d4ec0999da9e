from dataclasses import dataclass

from ablate.components.attention.gqa import GroupedQueryAttention
from ablate.registry import register


@dataclass(frozen=True)
class MHAOptions:
    qk_norm: bool = False


@register(
    "attention", "mha", paper="Vaswani et al. 2017, Attention Is All You Need",
    options=MHAOptions, provides=("rotary", "attn_bias", "kv_cache"),
)
class MultiHeadAttention(GroupedQueryAttention):
    """Multi-head attention: every query head has its own key/value head, batched in one module."""

    def resolve_kv_heads(self, dims):
        return dims.n_heads
