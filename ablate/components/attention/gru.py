from torch import nn

from ablate.components.attention._recurrent import RecurrentMixer, RecurrentOptions
from ablate.registry import register


@register(
    "attention", "gru", paper="Cho et al. 2014, Learning Phrase Representations using RNN Encoder-Decoder (GRU)",
    options=RecurrentOptions, provides=("recurrent_state",),
)
class GRUMixer(RecurrentMixer):
    """A GRU as the token mixer (torch's fused nn.GRU, cuDNN on GPU): recurrent, no attention.

    ``hidden`` defaults to the model width d. ``match_params=true`` picks the hidden size h whose
    3·h·(d + h) + h·d weights (plus biases) come closest to multi-head attention's 4·d² (+ 4·d):
    h ≈ 2/3·d. The decoding state is h: h numbers per sequence and layer, whatever its length.
    Needs no position scheme; cannot take ``rope`` or ``alibi`` (no queries, keys or scores).
    """

    rnn_class = nn.GRU
    gates = 3
    states = 1
