"""The two MLP shapes every built-in MLP is one of: dense (up, act, down) and gated (GLU)."""

from dataclasses import dataclass

from torch import nn

from ablate.registry import option
from ablate.slots import MLP, Dims, glu_hidden


@dataclass(frozen=True)
class DenseOptions:
    hidden: int = option(0, ge=0)  # 0: 4 * d_model


@dataclass(frozen=True)
class GatedOptions:
    hidden: int = option(0, ge=0)  # 0: parameter-matched, 2/3 of 4 * d_model rounded up to multiple_of
    multiple_of: int = option(8, ge=1)


class DenseMLP(MLP):
    def activation(self, x):
        raise NotImplementedError

    def __init__(self, options: DenseOptions, dims: Dims):
        super().__init__(options, dims)
        hidden = options.hidden or 4 * dims.d_model
        self.fc = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.out_proj = nn.Linear(hidden, dims.d_model, bias=dims.bias)

    def forward(self, x):
        return self.out_proj(self.activation(self.fc(x)))

    def residual_projections(self):
        return [self.out_proj]


class GatedMLP(MLP):
    def activation(self, x):
        raise NotImplementedError

    def __init__(self, options: GatedOptions, dims: Dims):
        super().__init__(options, dims)
        hidden = options.hidden or glu_hidden(dims.d_model, options.multiple_of)
        self.gate = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.up = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.out_proj = nn.Linear(hidden, dims.d_model, bias=dims.bias)

    def forward(self, x):
        return self.out_proj(self.activation(self.gate(x)) * self.up(x))

    def residual_projections(self):
        return [self.out_proj]
