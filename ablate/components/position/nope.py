from ablate.registry import register
from ablate.slots import Position


@register("position", "none", paper="Kazemnejad et al. 2023, The Impact of Positional Encoding on Length Generalization (NoPE)")
class NoPosition(Position):
    """No position information at all; causal masking alone breaks the symmetry (NoPE)."""
