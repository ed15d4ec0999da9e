"""What each slot promises the model skeleton: the base classes components subclass.

The skeleton (``ablate.model``) talks to these interfaces only. A component receives its own frozen
options and the model ``Dims``, nothing else.

Every base class is a ``Component``: it initialises its own parameters (``init_weights``) and
declares the projections that write into the residual stream (``residual_projections``).

Shapes: B batch, T new tokens, S all key positions (past + new), H query heads, K key/value heads,
D head dim, C model width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
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


@dataclass(frozen=True)
class InitContext:
    """The init scales a component's ``init_weights`` receives: GPT-2's unless the model says otherwise."""

    n_layers: int
    std: float = 0.02

    @property
    def residual_std(self) -> float:
        """GPT-2's scaled init for residual projections: 2 per layer add to the stream, so 1/√(2L)."""
        return self.std / math.sqrt(2 * self.n_layers)

    def normal_(self, tensor: torch.Tensor, std: float | None = None) -> torch.Tensor:
        return nn.init.normal_(tensor, mean=0.0, std=self.std if std is None else std)

    def standard(self, component: nn.Module) -> None:
        """GPT-2's init of what ``component`` owns: N(0, std) for every Linear/Embedding weight, zero biases."""
        for module in own_modules(component):
            if isinstance(module, nn.Linear):
                self.normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                self.normal_(module.weight)

    def residual_(self, projection: nn.Module) -> None:
        """The skeleton's scaled init of one declared residual projection (its weight only)."""
        self.normal_(projection.weight, self.residual_std)


class Component(nn.Module):
    """What every slot's base class shares: a component owns its parameters and their init.

    The skeleton calls ``init_weights`` once on every component, components inside another first
    (a block's attention and MLP before the block), then draws the weight of every module that a
    component lists in ``residual_projections`` from N(0, ``init.residual_std``). It never looks at
    parameter names and touches nothing else.
    """

    def init_weights(self, init: InitContext) -> None:
        """Initialise this component's own parameters (not those of components inside it).

        The default is GPT-2's (``init.standard``): N(0, 0.02) for every ``nn.Linear`` and
        ``nn.Embedding`` weight, zero biases. Other parameters keep what the constructor gave them
        (a norm's ones, a zero-init gate). Override it to initialise differently.
        """
        init.standard(self)

    def residual_projections(self) -> Sequence[nn.Module]:
        """The modules (with a ``weight``) whose output is added to the residual stream; none by default."""
        return ()


def own_modules(component: nn.Module) -> Iterator[nn.Module]:
    """The modules ``component`` owns, children first (``nn.Module.apply``'s order), without other components."""
    for child in component.children():
        if not isinstance(child, Component):
            yield from own_modules(child)
    yield component


def components(model: nn.Module) -> Iterator[Component]:
    """Every component inside ``model``, components inside another first (the order they initialise in)."""
    for child in model.children():
        yield from components(child)
    if isinstance(model, Component):
        yield model


class Position(Component):
    """A position scheme. Each hook defaults to "does nothing", so a scheme overrides only its own.

    ``pos`` holds the absolute positions of the tokens being processed (T,), which start after the
    cached ones during incremental decoding.
    """

    max_positions: int | None = None  # a scheme with a finite table says how many positions it covers

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


class Norm(Component):
    """A normalisation layer over the last dimension."""

    def __init__(self, options, dim: int, bias: bool = True):
        super().__init__()
        self.options = options


class MLP(Component):
    """The position-wise feed-forward network.

    Its output is added to the residual stream: ``residual_projections`` returns its last projection.
    """

    def __init__(self, options, dims: Dims):
        super().__init__()
        self.options = options


class DecodeState:
    """What one layer's token mixer keeps between incremental decoding calls.

    Made by ``Attention.new_cache``; ``length`` counts the positions already processed, which is all
    the skeleton reads (the next token's position). What else it holds is the mixer's business: keys
    and values (``KVCache``), or a recurrent network's hidden state.
    """

    length: int = 0


class KVCache(DecodeState):
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


class Attention(Component):
    """Causal self-attention. ``residual_projections`` returns its output projection.

    The slot holds any causal token mixer (attention, or a recurrent network). For incremental decoding
    each layer's module makes its own ``DecodeState`` with ``new_cache``; the default is a ``KVCache``.
    For cost accounting it declares ``kv_heads`` (key/value heads cached per token; 0 for a recurrent
    mixer), ``state_size`` (elements of fixed-size state kept per sequence, whatever its length) and
    ``scores`` (whether it computes attention scores over the context).
    """

    kv_heads: int
    state_size: int = 0
    scores: bool = True

    def __init__(self, options, dims: Dims, make_norm: NormFactory):
        super().__init__()
        self.options = options
        self.head_dim = dims.head_dim

    def new_cache(self, batch: int, max_len: int, device, dtype) -> DecodeState:
        """This layer's decoding state for ``batch`` sequences of up to ``max_len`` positions."""
        return KVCache(batch, self.kv_heads, max_len, self.head_dim, device, dtype)

    def forward(self, x, position: Position, pos: torch.Tensor, cache: DecodeState | None = None):
        raise NotImplementedError


class Block(Component):
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

    def forward(self, x, position: Position, pos: torch.Tensor, cache: DecodeState | None = None):
        raise NotImplementedError


set_base("position", Position)
set_base("norm", Norm)
set_base("mlp", MLP)
set_base("attention", Attention)
set_base("block", Block)


def causal_attention(q, k, v, bias: torch.Tensor | None, dropout: float = 0.0) -> torch.Tensor:
    """Causal SDPA for the last T of S positions, with an optional additive bias (H, T, S).

    q: (B, H, T, D); k, v: (B, K, S, D) with K dividing H (grouped-query when K < H).
    The common case (no cache, no bias) takes SDPA's ``is_causal`` fast path, and so does decoding one
    token without a bias (it sees every position, so it needs no mask); otherwise the causal mask
    (offset by the S - T cached positions) and the bias go in as one float mask.
    """
    t, s = q.shape[2], k.shape[2]
    gqa = k.shape[1] != q.shape[1]
    if bias is None and t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, enable_gqa=gqa)
    if bias is None and t == 1:  # one new token (KV-cached decoding) sees every cached position: no mask
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, enable_gqa=gqa)
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
