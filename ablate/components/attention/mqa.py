from dataclasses import dataclass

from ablate.components.attention.gqa import GroupedQueryAttention
from ablate.registry import register


@dataclass(frozen=True)
class MQAOptions:
    qk_norm: bool = False


@register(
    "attention", "mqa", paper="Shazeer 2019, Fast Transformer Decoding: One Write-Head is All You Need",
    options=MQAOptions, provides=("rotary", "attn_bias", "kv_cache"),
)
class MultiQueryAttention(GroupedQueryAttention):
    """Multi-query attention: all query heads share one key/value head (a KV cache H times smaller)."""

    def resolve_kv_heads(self, dims):
        return 1
