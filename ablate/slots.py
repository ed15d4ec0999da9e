"""What each slot promises the model skeleton: the base classes components subclass.

The skeleton (``ablate.model``) talks to these interfaces only. A component receives its own frozen
options and the model ``Dims``, nothing else.

Shapes: B batch, T new tokens, S all key positions (past + new), H query heads, K key/value heads,
D head dim, C model width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ablate.registry import set_base


@dataclass(frozen=True)
class Dims:
    """Sizes of a model, independent of its architecture."""

    d_model: int
    n_layers: int
    n_heads: int
    context: int
    vocab_size: int
    bias: bool = True
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


NormFactory = Callable[[int], nn.Module]


class Position(nn.Module):
    """A position scheme. Each hook defaults to "does nothing", so a scheme overrides only its own.

    ``pos`` holds the absolute positions of the tokens being processed (T,), which start after the
    cached ones during incremental decoding.
    """

    def __init__(self, options, dims: Dims):
        super().__init__()
        self.options = options
        self.dims = dims

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Absolute schemes add to the token embeddings here. x: (B, T, C)."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """Relative schemes acting on queries and keys. q: (B, H, T, D), k: (B, K, T, D)."""
        return q, k

    def attn_bias(self, n_heads: int, pos_q: torch.Tensor, pos_k: torch.Tensor) -> torch.Tensor | None:
        """An additive attention bias (H, T, S), or None."""
        return None


class Norm(nn.Module):
    """A normalisation layer over the last dimension."""

    def __init__(self, options, dim: int, bias: bool = True):
        super().__init__()
        self.options = options


class MLP(nn.Module):
    """The position-wise feed-forward network. Its last projection is named ``out_proj``."""

    def __init__(self, options, dims: Dims):
        super().__init__()
        self.options = options


class KVCache:
    """Keys and values of one attention layer, preallocated to ``max_len`` positions."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.empty(batch, kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.length + t > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions; cannot add {t} more")
        self.k[:, :, self.length : self.length + t] = k
        self.v[:, :, self.length : self.length + t] = v
        self.length += t
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class Attention(nn.Module):
    """Causal self-attention. Its output projection is named ``out_proj``.

    ``kv_heads`` says how many key/value heads it keeps (for KV-cache accounting).
    """

    kv_heads: int

    def __init__(self, options, dims: Dims, make_norm: NormFactory):
        super().__init__()
        self.options = options

    def forward(self, x, position: Position, pos: torch.Tensor, cache: KVCache | None = None):
        raise NotImplementedError


class Block(nn.Module):
    """A residual layout: how attention, MLP and norms are wired around the residual stream.

    ``final_norm`` says whether the model applies a norm after the last block (pre-norm layouts do;
    the 2017 post-norm layout already ends in one).
    """

    final_norm: bool = True

    def __init__(self, options, dims: Dims, attn: Attention, mlp: MLP, make_norm: NormFactory):
        super().__init__()
        self.options = options
        self.attn = attn
        self.mlp = mlp
        self.dropout = nn.Dropout(dims.dropout)

    def forward(self, x, position: Position, pos: torch.Tensor, cache: KVCache | None = None):
        raise NotImplementedError


set_base("position", Position)
set_base("norm", Norm)
set_base("mlp", MLP)
set_base("attention", Attention)
set_base("block", Block)


def causal_attention(q, k, v, bias: torch.Tensor | None, dropout: float = 0.0) -> torch.Tensor:
    """Causal SDPA for the last T of S positions, with an optional additive bias (H, T, S).

    q: (B, H, T, D); k, v: (B, K, S, D) with K dividing H (grouped-query when K < H).
    The common case (no cache, no bias) takes SDPA's ``is_causal`` fast path; otherwise the causal
    mask (offset by the S - T cached positions) and the bias go in as one float mask.
    """
    t, s = q.shape[2], k.shape[2]
    gqa = k.shape[1] != q.shape[1]
    if bias is None and t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, enable_gqa=gqa)
    mask = causal_mask(t, s, q.device, q.dtype)  # (T, S)
    if bias is not None:
        mask = mask + bias.to(q.dtype)  # (H, T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)


def causal_mask(t: int, s: int, device, dtype) -> torch.Tensor:
    """(T, S) float mask: 0 where query i (at position s - t + i) may see key j, -inf elsewhere."""
    i = torch.arange(t, device=device)[:, None] + (s - t)
    j = torch.arange(s, device=device)[None, :]
    return torch.zeros(t, s, device=device, dtype=dtype).masked_fill(j > i, float("-inf"))


def glu_hidden(d_model: int, multiple_of: int) -> int:
    """Parameter-matched GLU width: 2/3 of 4·d, rounded up to ``multiple_of`` (LLaMA's rule)."""
    hidden = int(2 * 4 * d_model / 3)
    return multiple_of * math.ceil(hidden / multiple_of)
