"""Recurrent token mixers in the attention slot: a fused torch RNN, then a projection back to the width.

They read the sequence left to right, so they are causal by construction and need no position scheme
(order comes from the recurrence). They compute no queries or keys, so relative schemes that act inside
attention (``rope`` needs ``rotary``, ``alibi`` needs ``attn_bias``) fail when the variant is resolved.
Absolute schemes still work: ``learned`` adds its embeddings to the tokens, as in the baseline; pair
with ``none`` to drop them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ablate.registry import option
from ablate.slots import Attention, DecodeState, Dims, NormFactory


@dataclass(frozen=True)
class RecurrentOptions:
    hidden: int = option(0, ge=0)  # 0: the model width (equal width), or the parameter-matched width with match_params
    match_params: bool = False


class RecurrentState(DecodeState):
    """A recurrent layer's decoding state: its hidden state (h, or (h, c) for an LSTM) after ``length`` tokens.

    Its size is fixed per sequence, however long the sequence (a KV cache grows by one entry per token).
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None  # None: zeros
        self.length = 0

    def advance(self, state, t: int) -> None:
        if self.length + t > self.max_len:
            raise ValueError(f"decoding state was made for {self.max_len} positions; cannot add {t} more")
        self.state = state
        self.length += t


class RecurrentMixer(Attention):
    """A fused torch RNN (``rnn_class``) over the sequence, then ``out_proj`` back to the model width.

    Subclasses set ``rnn_class`` and ``gates`` (weight matrices per layer: 4 for an LSTM, 3 for a GRU)
    and ``states`` (tensors in the hidden state: 2 for an LSTM's (h, c), 1 for a GRU's h).
    """

    rnn_class: type[nn.RNNBase]
    gates: int
    states: int
    kv_heads = 0
    scores = False

    def __init__(self, options: RecurrentOptions, dims: Dims, make_norm: NormFactory):
        super().__init__(options, dims, make_norm)
        if options.hidden and options.match_params:
            raise ValueError("give either hidden=N or match_params=true, not both")
        if options.hidden < 0:
            raise ValueError(f"hidden must be positive, got {options.hidden}")
        if options.match_params:
            hidden = self.matched_hidden(dims.d_model, dims.bias)
        else:
            hidden = options.hidden or dims.d_model
        self.hidden = hidden
        self.rnn = self.rnn_class(dims.d_model, hidden, batch_first=True, bias=dims.bias)
        self.out_proj = nn.Linear(hidden, dims.d_model, bias=dims.bias)
        self.state_size = self.states * hidden

    @classmethod
    def param_count(cls, d_model: int, hidden: int, bias: bool) -> int:
        """Parameters of this mixer: gates·h·(d + h) weights (+ 2·gates·h biases), and out_proj h·d (+ d)."""
        n = cls.gates * hidden * (d_model + hidden) + hidden * d_model
        if bias:
            n += 2 * cls.gates * hidden + d_model
        return n

    @classmethod
    def matched_hidden(cls, d_model: int, bias: bool) -> int:
        """The hidden size whose parameter count is closest to multi-head attention's 4·d² (+ 4·d biases)."""
        target = 4 * d_model * d_model + (4 * d_model if bias else 0)
        return min(range(1, 2 * d_model + 1), key=lambda h: abs(cls.param_count(d_model, h, bias) - target))

    def init_weights(self, init) -> None:
        """``out_proj`` as GPT-2 (N(0, 0.02)); the RNN's weights keep torch's own init, U(±1/√hidden)."""
        init.standard(self)
        self.rnn.reset_parameters()

    def residual_projections(self):
        return [self.out_proj]

    def new_cache(self, batch: int, max_len: int, device, dtype) -> RecurrentState:
        return RecurrentState(max_len)

    def forward(self, x, position, pos, cache: RecurrentState | None = None):
        state = cache.state if cache is not None else None
        y, new_state = self.rnn(x, state)  # (B, T, hidden)
        if cache is not None:
            cache.advance(new_state, x.shape[1])
        return self.out_proj(y)  # (B, T, C)
