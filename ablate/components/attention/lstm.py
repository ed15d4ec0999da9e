from torch import nn

from ablate.components.attention._recurrent import RecurrentMixer, RecurrentOptions
from ablate.registry import register


@register(
    "attention", "lstm", paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory",
    options=RecurrentOptions, provides=("recurrent_state",),
)
class LSTMMixer(RecurrentMixer):
    """An LSTM as the token mixer (torch's fused nn.LSTM, cuDNN on GPU): recurrent, no attention.

    ``hidden`` defaults to the model width d. ``match_params=true`` picks the hidden size h whose
    4·h·(d + h) + h·d weights (plus biases) come closest to multi-head attention's 4·d² (+ 4·d):
    h ≈ 0.55·d. The decoding state is (h, c): 2·h numbers per sequence and layer, whatever its length.
    Needs no position scheme; cannot take ``rope`` or ``alibi`` (no queries, keys or scores).
    """

    rnn_class = nn.LSTM
    gates = 4
    states = 2
