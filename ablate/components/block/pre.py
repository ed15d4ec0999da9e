from ablate.registry import register
from ablate.slots import Block


@register("block", "pre", paper="Xiong et al. 2020, On Layer Normalization in the Transformer Architecture")
class PreNormBlock(Block):
    """Pre-norm residual block (GPT-2, LLaMA): normalise each sublayer's input, add to the stream.

        x ─┬─ norm ─ attn ─(+)─┬─ norm ─ mlp ─(+)─►
           └───────────────────┘└──────────────┘
    """

    def __init__(self, options, dims, attn, mlp, make_norm):
        super().__init__(options, dims, attn, mlp, make_norm)
        self.norm1, self.norm2 = make_norm(dims.d_model), make_norm(dims.d_model)

    def forward(self, x, position, pos, cache=None):
        x = x + self.dropout(self.attn(self.norm1(x), position, pos, cache))
        return x + self.dropout(self.mlp(self.norm2(x)))
