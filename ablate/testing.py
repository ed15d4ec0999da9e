"""The checks every component gets: init contract, shapes, dtype, causality and KV-cached decoding.

Built-ins are tested with these through ``tests/test_components.py``; a plugin author gets the same
checks for their component with one line in their own test file::

    from ablate.testing import check_component
    def test_my_component():
        check_component("dyt")

``check_component(name)`` runs the checks on the baseline with ``name`` swapped in, and on every
pairing of ``name`` with each component of every other slot that its declared needs and conflicts
allow; it returns (and logs) the pairs it skipped, each with the reason the variant does not resolve.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.model import GPT, build_model, restored
from ablate.catalog import all_specs, lookup
from ablate.registry import SLOTS
from ablate.slots import (
    MLP,
    Attention,
    Component,
    Dims,
    InitContext,
    components,
    own_modules,
)
from ablate.variant import BASELINE, parse_variant

log = logging.getLogger(__name__)

TINY = Dims(d_model=32, n_layers=2, n_heads=4, context=16, vocab_size=50)


def tiny_model(variant: str, dims: Dims = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    v = parse_variant(variant)
    model = build_model(v, Dims(dims.d_model, dims.n_layers, dims.n_heads, dims.context, dims.vocab_size,
                                bias=v.model.bias, dropout=0.0), probe=False)  # the checks here say more
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
            if (_unresolved(variant) is None) == compatible:
                yield variant


def skipped_pairs(name: str | None = None) -> list[tuple[str, str]]:
    """The pairs ``pair_variants`` leaves out, each with the resolve-time error that rules it out."""
    return [(variant, _unresolved(variant)) for variant in pair_variants(name, compatible=False)]


def _unresolved(variant: str) -> str | None:
    """Why ``variant`` does not resolve (a declared need unmet, a conflict), or None when it does."""
    try:
        parse_variant(variant)
    except AblateError as err:
        return str(err)
    return None


def _check_normal(weight: torch.Tensor, std: float, what: str) -> None:
    """``weight`` looks like a draw from N(0, std): sample std and mean within a few standard errors."""
    w = weight.detach().float()
    n = w.numel()
    rtol = max(0.1, 4 / math.sqrt(2 * n))  # the sample std's relative standard error is 1/√(2n)
    got_std, got_mean = w.std().item(), w.mean().item()
    assert abs(got_std / std - 1) <= rtol, f"{what}: std {got_std:.4g}, the init contract promises {std:.4g}"
    assert abs(got_mean) <= 5 * std / math.sqrt(n), f"{what}: mean {got_mean:.3g}, the init contract promises 0"


@torch.no_grad()
def check_init(model: GPT) -> None:
    """The init contract (``ablate.slots.Component``), checked on the parameters' statistics.

    Each declared residual projection is a module of its component, with weight ~ N(0, residual_std).
    A component with the default ``init_weights`` has every other Linear/Embedding weight ~ N(0, std)
    and zero biases, and, if it is an attention or MLP with projections, declares the one(s) writing into
    the residual stream: otherwise they silently miss GPT-2's scaled init. A component that overrides
    ``init_weights`` owns the rest of its init.
    """
    init = InitContext(model.dims.n_layers)
    paths = {module: name for name, module in model.named_modules()}
    for component in components(model):
        where = f"{paths[component]} ({type(component).__name__})"
        owned = list(own_modules(component))
        residual = list(component.residual_projections())
        for proj in residual:
            assert any(proj is m for m in owned), f"{where}: residual projection {proj!r} is not one of its own modules"
            assert isinstance(getattr(proj, "weight", None), torch.Tensor), f"{where}: residual projection {proj!r} has no weight"
            _check_normal(proj.weight, init.residual_std, f"{where}: residual projection {paths[proj]}.weight")
        if type(component).init_weights is not Component.init_weights:
            continue
        dense = [m for m in owned if isinstance(m, (nn.Linear, nn.Embedding)) and not any(m is r for r in residual)]
        for module in dense:
            _check_normal(module.weight, init.std, f"{where}: {paths[module]}.weight")
            bias = getattr(module, "bias", None)
            assert bias is None or not bias.any(), f"{where}: {paths[module]}.bias is not zero at init"
        if isinstance(component, (Attention, MLP)) and dense and not residual:
            raise AssertionError(
                f"{where} declares no residual projections, so its output projection gets N(0, {init.std}) "
                f"instead of GPT-2's scaled N(0, {init.residual_std:.4g}); return the module(s) whose output "
                "is added to the residual stream from residual_projections() (see docs/plugins.md)"
            )


def check_forward(model: GPT) -> None:
    """In training mode: logits have shape (B, T, V) and the parameters' dtype; the loss is finite;
    gradients flow (the backward runs)."""
    v, t = model.dims.vocab_size, model.dims.context
    idx = torch.randint(0, v, (2, t), generator=torch.Generator().manual_seed(1))
    with restored(model):
        model.train()
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
    """Changing token t of one sequence never changes the logits before t, nor any logit of another
    sequence of the batch; in eval mode and in training mode (what a component does only while training,
    such as batch statistics, counts too). The model's buffers are restored afterwards."""
    v, t = model.dims.vocab_size, model.dims.context
    idx = torch.randint(0, v, (2, t), generator=torch.Generator().manual_seed(2))
    with restored(model):
        for training in (False, True):
            model.train(training)
            mode = " in training mode" if training else ""
            with torch.random.fork_rng():
                torch.manual_seed(0)
                base, _ = model(idx)
            for pos in (t // 2, t - 1):
                changed = idx.clone()
                changed[0, pos] = (changed[0, pos] + 1) % v
                with torch.random.fork_rng():
                    torch.manual_seed(0)  # the same random draws (dropout) as the pass it is compared with
                    out, _ = model(changed)
                diff = (out[0, :pos] - base[0, :pos]).abs().max().item()
                assert diff <= atol, f"changing token {pos} changed earlier logits by {diff:.2e}{mode}"
                other = (out[1] - base[1]).abs().max().item()
                assert other <= atol, (f"changing token {pos} of one sequence changed another sequence's logits by "
                                       f"{other:.2e}{mode}: the component mixes the sequences of a batch")
                assert (out[0, pos:] - base[0, pos:]).abs().max().item() > 0, "changed token had no effect at all"


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


#: what a position that ``needs`` an attention feature calls on the position module from inside attention
_FEATURE_CALLS = {"rotary": "rotate", "attn_bias": "attn_bias"}


@torch.no_grad()
def check_position_used(model: GPT) -> None:
    """A position acting inside attention (rotary, a bias) is called by every layer's attention: an attention
    that declares the feature (``provides``) but never calls it would train with no position signal."""
    needs = model.variant["position"].spec.needs
    for feature in sorted(needs & set(_FEATURE_CALLS)):
        method = _FEATURE_CALLS[feature]
        calls = []
        original = getattr(model.position, method)

        def counted(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        setattr(model.position, method, counted)  # on the instance: the class stays untouched
        try:
            model(torch.zeros(1, 4, dtype=torch.long))
        finally:
            delattr(model.position, method)
        attention = model.variant["attention"].name
        assert len(calls) >= model.dims.n_layers, (
            f"{attention} provides {feature!r} but its forward called position.{method}() {len(calls)} times in "
            f"{model.dims.n_layers} layers: {model.variant['position'].name} has no effect through it")


def check_variant(variant: str) -> None:
    model = tiny_model(variant)
    check_init(model)
    check_forward(model)
    check_causal(model)
    check_kv_cache(model)
    check_position_used(model)


def check_component(name: str) -> list[tuple[str, str]]:
    """Every check, on ``name`` alone (in the baseline) and paired with each other slot's components.

    Variants that the components' declared needs or conflicts rule out are skipped, not failed:
    returns them as (variant, reason), and logs each.
    """
    spec = lookup(name)
    alone = name if spec.name != BASELINE[spec.slot] else "baseline"
    reason = _unresolved(alone)
    skipped = [(alone, reason)] if reason else []
    checked = [] if reason else [alone]
    checked += pair_variants(name)
    skipped += skipped_pairs(name)
    assert checked, f"{name} resolves in no variant to check: {skipped}"
    for variant in checked:
        check_variant(variant)
    # a context five times as long: a size fixed in the component's code instead of taken from its dims
    check_forward(tiny_model(checked[0], dims=dataclasses.replace(TINY, context=5 * TINY.context)))
    for variant, why in skipped:
        log.info("check_component(%r) skipped %s: %s", name, variant, why)
    return skipped


__all__ = ["SLOTS", "TINY", "check_causal", "check_component", "check_forward", "check_init", "check_kv_cache",
           "check_position_used", "check_variant", "pair_variants", "skipped_pairs", "tiny_model"]
