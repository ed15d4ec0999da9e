"""The checks every component gets: shapes, dtype, causality and KV-cached decoding.

Built-ins are tested with these through ``tests/test_components.py``; a plugin author gets the same
checks for their component with one line in their own test file::

    from ablate.testing import check_component
    def test_my_component():
        check_component("dyt")

``check_component(name)`` runs the checks on the baseline with ``name`` swapped in, and on every
pairing of ``name`` with each component of every other slot.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ablate.errors import AblateError
from ablate.model import GPT, build_model
from ablate.registry import SLOTS, all_specs, lookup
from ablate.slots import Dims
from ablate.variant import BASELINE, parse_variant

TINY = Dims(d_model=32, n_layers=2, n_heads=4, context=16, vocab_size=50)


def tiny_model(variant: str, dims: Dims = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    v = parse_variant(variant)
    model = build_model(v, Dims(dims.d_model, dims.n_layers, dims.n_heads, dims.context, dims.vocab_size,
                                bias=v.model.bias, dropout=0.0))
    return model.eval()


def pair_variants(name: str | None = None, compatible: bool = True) -> Iterator[str]:
    """Variant strings pairing components of two different slots (all pairs, or those with ``name``).

    Pairs that a declared need or conflict rules out (e.g. ``rope+lstm``) are left out; with
    ``compatible=False`` only those are given, to check that they fail when resolved.
    """
    specs = all_specs()
    for i, a in enumerate(specs):
        for b in specs[i + 1 :]:
            if a.slot == b.slot:
                continue
            if name is not None and name not in (a.name, b.name):
                continue
            variant = f"{a.name}+{b.name}"
            if _resolves(variant) == compatible:
                yield variant


def _resolves(variant: str) -> bool:
    try:
        parse_variant(variant)
    except AblateError:
        return False
    return True


def check_forward(model: GPT) -> None:
    """Logits have shape (B, T, V) and the parameters' dtype; the loss is finite; gradients flow."""
    v, t = model.dims.vocab_size, model.dims.context
    idx = torch.randint(0, v, (2, t), generator=torch.Generator().manual_seed(1))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, t, v), f"logits shape {tuple(logits.shape)}, expected {(2, t, v)}"
    assert logits.dtype == model.tok_emb.weight.dtype
    assert torch.isfinite(loss), "loss is not finite"
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def check_causal(model: GPT, atol: float = 1e-5) -> None:
    """Changing token t never changes the logits before t."""
    v, t = model.dims.vocab_size, model.dims.context
    idx = torch.randint(0, v, (1, t), generator=torch.Generator().manual_seed(2))
    base, _ = model(idx)
    for pos in (t // 2, t - 1):
        changed = idx.clone()
        changed[0, pos] = (changed[0, pos] + 1) % v
        out, _ = model(changed)
        diff = (out[:, :pos] - base[:, :pos]).abs().max().item()
        assert diff <= atol, f"changing token {pos} changed earlier logits by {diff:.2e}"
        assert (out[:, pos:] - base[:, pos:]).abs().max().item() > 0, "changed token had no effect at all"


@torch.no_grad()
def check_kv_cache(model: GPT, prompt: int = 5, atol: float = 1e-4) -> None:
    """Incremental decoding through the KV cache gives the full forward pass's logits."""
    v, t = model.dims.vocab_size, model.dims.context
    idx = torch.randint(0, v, (2, t), generator=torch.Generator().manual_seed(3))
    full, _ = model(idx)
    caches = model.new_caches(2, t)
    parts = [model(idx[:, :prompt], caches=caches)[0]]
    for i in range(prompt, t):
        parts.append(model(idx[:, i : i + 1], caches=caches)[0])
    inc = torch.cat(parts, dim=1)
    diff = (inc - full).abs().max().item()
    assert diff <= atol, f"KV-cached logits differ from the full forward by {diff:.2e}"


def check_variant(variant: str) -> None:
    model = tiny_model(variant)
    check_forward(model)
    check_causal(model)
    check_kv_cache(model)


def check_component(name: str) -> None:
    """Every check, on ``name`` alone (in the baseline) and paired with each other slot's components."""
    spec = lookup(name)
    check_variant(name if spec.name != BASELINE[spec.slot] else "baseline")
    for variant in pair_variants(name):
        check_variant(variant)


__all__ = ["SLOTS", "TINY", "check_causal", "check_component", "check_forward", "check_kv_cache",
           "check_variant", "pair_variants", "tiny_model"]
