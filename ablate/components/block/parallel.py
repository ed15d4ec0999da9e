from ablate.registry import register
from ablate.slots import Block


@register("block", "parallel", paper="Wang & Komatsuzaki 2021, GPT-J; Chowdhery et al. 2022, PaLM (sec. 2)")
class ParallelBlock(Block):
    """Parallel block: attention and MLP read the same normalised input; both add to the stream.

        x ─┬─ norm ─┬─ attn ─(+)─►
           │        └─ mlp ───┤
           └──────────────────┘
    """

    def __init__(self, options, dims, attn, mlp, make_norm):
        super().__init__(options, dims, attn, mlp, make_norm)
        self.norm1 = make_norm(dims.d_model)

    def forward(self, x, position, pos, cache=None):
        h = self.norm1(x)
        return x + self.dropout(self.attn(h, position, pos, cache)) + self.dropout(self.mlp(h))
