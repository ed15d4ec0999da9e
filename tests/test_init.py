"""The init contract: components initialise their own parameters, residual projections are declared.

The checksums below were recorded on the code before the contract existed (the skeleton
re-initialised every Linear/Embedding, then scaled parameters named ``*out_proj.weight``): built-in
models must initialise bit-identically, drawing the same random numbers in the same order.
"""

import hashlib
from dataclasses import replace

import pytest
import torch

from ablate.model import build_model
from ablate.slots import Dims
from ablate.variant import parse_variant

DIMS = Dims(d_model=32, n_layers=3, n_heads=4, context=16, vocab_size=50)

RECORDED = {
    "baseline": "91b76f871cbc9c72",
    "rope+swiglu": "4c28b01dde3b8ea9",
    "gqa(kv_heads=2)+rmsnorm+post": "168f7411c7007631",
    "llama": "1d706c5759f17707",
    "vaswani": "7d1669a939e2a4d4",
    "alibi+geglu": "4c28b01dde3b8ea9",  # the same parameters as rope+swiglu: no position table, gated MLP
    "heads+sandwich": "5154ee1b1677c21e",
    "mqa(qk_norm=true)+parallel+relu2": "e6068d4fac807544",
    "palm": "9a3ca3efcb60bb34",
    "mistral": "8a8b1ce27860bdb4",
    "tie=false+bias=false": "e66c167b5f545a63",
    "none+relu": "39fec4ccecaf0031",
}


def init_checksum(variant: str, seed: int = 1234) -> str:
    """sha256 over the initial state_dict (names and bytes), then four draws of the RNG after init."""
    torch.manual_seed(seed)
    v = parse_variant(variant)
    model = build_model(v, replace(DIMS, bias=v.model.bias))
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    h.update(torch.randn(4).numpy().tobytes())  # same number of draws as before, not just the same values
    return h.hexdigest()[:16]


@pytest.mark.parametrize("variant", sorted(RECORDED))
def test_built_in_init_is_bit_identical_to_the_recorded_one(variant):
    assert init_checksum(variant) == RECORDED[variant]
