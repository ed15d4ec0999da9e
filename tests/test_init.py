"""The init contract: components initialise their own parameters, residual projections are declared.

The checksums below were recorded on the code before the contract existed (the skeleton
re-initialised every Linear/Embedding, then scaled parameters named ``*out_proj.weight``): built-in
models must initialise bit-identically, drawing the same random numbers in the same order.
"""

import hashlib
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.components.attention.mha import MHAOptions, MultiHeadAttention
from ablate.components.mlp import DenseOptions
from ablate.model import build_model
from ablate.catalog import all_specs
from ablate.registry import REGISTRIES, register
from ablate.slots import MLP, Dims
from ablate.testing import (
    TINY,
    check_component,
    check_init,
    pair_variants,
    skipped_pairs,
    tiny_model,
)
from ablate.variant import BASELINE, parse_variant

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


# ------------------------------------------------------------------ the contract, checked generically

SINGLES = sorted({s.name if s.name != BASELINE[s.slot] else "baseline" for s in all_specs()})


@pytest.mark.parametrize("variant", SINGLES + ["gqa(qk_norm=true)+sandwich", "tie=false+bias=false"])
def test_every_component_meets_the_init_contract(variant):
    check_init(tiny_model(variant))


def test_residual_projections_get_gpt2_scaled_init():
    model = tiny_model("baseline")
    block = model.blocks[0]
    assert block.attn.residual_projections() == [block.attn.out_proj]
    assert block.mlp.residual_projections() == [block.mlp.out_proj]
    assert abs(block.mlp.out_proj.weight.std().item() / (0.02 / (2 * TINY.n_layers) ** 0.5) - 1) < 0.1
    assert abs(block.mlp.fc.weight.std().item() / 0.02 - 1) < 0.1


# ------------------------------------------------------------------ plugins under other names


class NanoGPTMLP(MLP):
    """The GELU MLP under nanoGPT's names (c_fc, c_proj), declaring c_proj as its residual projection."""

    def __init__(self, options, dims):
        super().__init__(options, dims)
        hidden = options.hidden or 4 * dims.d_model
        self.c_fc = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.c_proj = nn.Linear(hidden, dims.d_model, bias=dims.bias)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    def residual_projections(self):
        return [self.c_proj]


class UndeclaredMLP(NanoGPTMLP):
    """The same, but not saying which projection writes into the residual stream."""

    def residual_projections(self):
        return ()


class GatedOutputMLP(NanoGPTMLP):
    """nanoGPT's MLP times a learned per-channel output gate, zero at init (its own init_weights)."""

    def __init__(self, options, dims):
        super().__init__(options, dims)
        self.out_gate = nn.Linear(dims.d_model, dims.d_model, bias=False)

    def init_weights(self, init):
        init.standard(self)
        nn.init.zeros_(self.out_gate.weight)

    def forward(self, x):
        y = super().forward(x)
        return y * torch.sigmoid(self.out_gate(x))


class NoRotaryAttention(MultiHeadAttention):
    """Multi-head attention that declares no rotary support (as many plugin attentions would not)."""


PLUGINS = {
    "nanogpt_mlp": ("mlp", NanoGPTMLP, {"options": DenseOptions}),
    "undeclared_mlp": ("mlp", UndeclaredMLP, {"options": DenseOptions}),
    "gated_out_mlp": ("mlp", GatedOutputMLP, {"options": DenseOptions}),
    "norotary": ("attention", NoRotaryAttention, {"options": MHAOptions, "provides": ("attn_bias", "kv_cache")}),
}


@pytest.fixture
def plugin(request):
    """Register the test component named by the test's ``plugin`` parameter, then remove it again."""
    slot, cls, kwargs = PLUGINS[request.param]
    register(slot, request.param, paper="test", **kwargs)(cls)
    yield request.param
    REGISTRIES[slot].remove(request.param)


def with_plugin(name):
    return pytest.mark.parametrize("plugin", [name], indirect=True)


def train_losses(model, steps: int = 8) -> list[float]:
    """A few AdamW steps on fixed batches (independent of ablate.train): the loss after each."""
    g = torch.Generator().manual_seed(7)
    batches = [torch.randint(0, TINY.vocab_size, (4, TINY.context + 1), generator=g) for _ in range(4)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    model.train()
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        _, loss = model(batch[:, :-1].contiguous(), batch[:, 1:].contiguous())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@with_plugin("nanogpt_mlp")
def test_renamed_gelu_mlp_initialises_and_trains_bit_identically(plugin):
    builtin, renamed = tiny_model("gelu"), tiny_model("nanogpt_mlp")
    a, b = builtin.state_dict(), renamed.state_dict()
    assert [k.replace("c_fc", "fc").replace("c_proj", "out_proj") for k in b] == list(a)
    assert all(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True))
    history = train_losses(builtin)
    assert train_losses(renamed) == history
    assert history[-1] < history[0]  # it did train
    check_component("nanogpt_mlp")


@with_plugin("undeclared_mlp")
def test_undeclared_residual_projection_fails_check_init(plugin):
    model = tiny_model("undeclared_mlp")
    assert abs(model.blocks[0].mlp.c_proj.weight.std().item() / 0.02 - 1) < 0.1  # not GPT-2's scaled init
    with pytest.raises(AssertionError, match="declares no residual projections"):
        check_init(model)


@with_plugin("gated_out_mlp")
def test_a_components_own_init_survives(plugin):
    model = tiny_model("gated_out_mlp")
    for block in model.blocks:
        assert not block.mlp.out_gate.weight.any()  # zero, as its init_weights left it
        assert abs(block.mlp.c_proj.weight.std().item() / (0.02 / 2) - 1) < 0.1  # declared: scaled
    check_init(model)


def test_check_init_catches_an_unscaled_residual_projection():
    model = tiny_model("baseline")
    torch.nn.init.normal_(model.blocks[1].attn.out_proj.weight, std=0.02)  # what a name-based init missed
    with pytest.raises(AssertionError, match=r"residual projection blocks\.1\.attn\.out_proj\.weight: std"):
        check_init(model)


@with_plugin("norotary")
def test_pair_variants_skips_what_declared_needs_rule_out_and_says_so(plugin):
    assert "rope+norotary" not in set(pair_variants("norotary"))
    assert "learned+norotary" in set(pair_variants("norotary"))
    skipped = dict(skipped_pairs("norotary"))
    assert set(skipped) == {"rope+norotary"}
    assert "rope needs rotary" in skipped["rope+norotary"]
    assert check_component("norotary") == list(skipped.items())
