from ablate.registry import register
from ablate.slots import Block


@register("block", "sandwich", paper="Ding et al. 2021, CogView (Sandwich-LN)")
class SandwichNormBlock(Block):
    """Sandwich-norm block: normalise each sublayer's input and its output before the residual add.

        x ─┬─ norm ─ attn ─ norm ─(+)─┬─ norm ─ mlp ─ norm ─(+)─►
           └──────────────────────────┘└─────────────────────┘
    """

    def __init__(self, options, dims, attn, mlp, make_norm):
        super().__init__(options, dims, attn, mlp, make_norm)
        self.norm1, self.norm1_out = make_norm(dims.d_model), make_norm(dims.d_model)
        self.norm2, self.norm2_out = make_norm(dims.d_model), make_norm(dims.d_model)

    def forward(self, x, position, pos, cache=None):
        x = x + self.dropout(self.norm1_out(self.attn(self.norm1(x), position, pos, cache)))
        return x + self.dropout(self.norm2_out(self.mlp(self.norm2(x))))
