"""What a variant costs: parameters, training FLOPs per token, decoding-state bytes.

FLOPs follow PaLM's MFU definition (Chowdhery et al. 2022, appendix B):

    flops_per_token = 6·N + 12·L·H·Q·T

with N the parameters taking part in matmuls per token (non-embedding parameters, plus the output
head's V·C when it is tied to the embedding, since the head matmul runs either way), L layers, H heads,
Q head dim and T the context length (the attention-score term, counted over the full context as PaLM
does, not halved for causality). Lookups (token and learned position embeddings) cost no FLOPs.
The attention-score term counts only layers whose mixer computes scores (a recurrent mixer's matmuls
are all in N).

Decoding state: attention keeps keys and values for every token (``kv_cache_bytes_per_token``); a
recurrent mixer keeps a fixed state per sequence (``state_bytes_per_sequence``), whatever its length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ablate.model import GPT

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


@dataclass(frozen=True)
class Cost:
    params: int
    non_embedding_params: int
    flops_per_token: int
    attention_flops_per_token: int
    kv_cache_bytes_per_token: int
    kv_dtype: str
    state_bytes_per_sequence: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(model: GPT) -> tuple[int, int]:
    """(total, non-embedding). Shared (tied) tensors count once; buffers never count."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.tok_emb.weight.numel()
    embedding += sum(p.numel() for p in model.position.parameters())
    return total, total - embedding


def cost(model: GPT, kv_dtype: str = "bfloat16") -> Cost:
    d = model.dims
    total, non_embedding = count_params(model)
    matmul_params = non_embedding + (model.head.weight.numel() if model.variant.model.tie else 0)
    scoring_layers = sum(1 for block in model.blocks if block.attn.scores)
    attention = 12 * scoring_layers * d.n_heads * d.head_dim * d.context
    kv_heads = sum(block.attn.kv_heads for block in model.blocks)  # summed over layers
    kv_bytes = 2 * kv_heads * d.head_dim * DTYPE_BYTES[kv_dtype]  # keys and values
    state_bytes = sum(block.attn.state_size for block in model.blocks) * DTYPE_BYTES[kv_dtype]
    return Cost(total, non_embedding, 6 * matmul_params + attention, attention, kv_bytes, kv_dtype, state_bytes)
