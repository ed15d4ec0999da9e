from ablate.registry import register
from ablate.slots import Block


@register("block", "post", paper="Vaswani et al. 2017, Attention Is All You Need")
class PostNormBlock(Block):
    """Post-norm residual block (the 2017 paper's): add the sublayer output, then normalise the sum.

        x ─┬─ attn ─(+)─ norm ─┬─ mlp ─(+)─ norm ─►
           └─────────┘         └────────┘
    """

    final_norm = False  # the stream already leaves the last block normalised

    def __init__(self, options, dims, attn, mlp, make_norm):
        super().__init__(options, dims, attn, mlp, make_norm)
        self.norm1, self.norm2 = make_norm(dims.d_model), make_norm(dims.d_model)

    def forward(self, x, position, pos, cache=None):
        x = self.norm1(x + self.dropout(self.attn(x, position, pos, cache)))
        return self.norm2(x + self.dropout(self.mlp(x)))
