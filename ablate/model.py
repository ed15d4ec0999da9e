"""The GPT skeleton: slots filled from the registry. It never names a concrete component.

    tokens ─ embedding ─ position.embed ─ [block × n_layers] ─ final norm? ─ head ─ logits

Each block gets its own attention and MLP; the one position module is shared by every layer
(absolute schemes act at the embedding, relative ones inside attention through the same object).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ablate.errors import AblateError
from ablate.presets import Size
from ablate.slots import Component, DecodeState, Dims, InitContext, components
from ablate.variant import Variant, plugin_specs


class GPT(nn.Module):
    def __init__(self, variant: Variant, dims: Dims):
        super().__init__()
        self.variant, self.dims = variant, dims
        specs = {c.slot: c for c in variant.choices}

        def make_norm(dim: int) -> nn.Module:
            norm = specs["norm"]
            return norm.spec.cls(norm.options, dim, dims.bias)

        def build(slot: str, *args):
            choice = specs[slot]
            return choice.spec.cls(choice.options, *args)

        self.tok_emb = nn.Embedding(dims.vocab_size, dims.d_model)
        self.position = build("position", dims)
        self.drop = nn.Dropout(dims.dropout)
        self.blocks = nn.ModuleList(
            build("block", dims, build("attention", dims, make_norm), build("mlp", dims), make_norm)
            for _ in range(dims.n_layers)
        )
        self.norm_f = make_norm(dims.d_model) if type(self.blocks[0]).final_norm else nn.Identity()
        self.head = nn.Linear(dims.d_model, dims.vocab_size, bias=False)
        if variant.model.tie:
            self.head.weight = self.tok_emb.weight
        self.init_weights(InitContext(dims.n_layers))

    def init_weights(self, init: InitContext) -> None:
        """GPT-2's init, each component owning its part (``ablate.slots.Component``); no name is read.

        The random draws keep GPT-2's order: embedding, components in module order, head (so a tied
        embedding holds the head's draw), then the residual projections' scaled weights.
        """
        init.normal_(self.tok_emb.weight)
        for component in components(self):
            component.init_weights(init)
        init.normal_(self.head.weight)
        for module in self.modules():
            if isinstance(module, Component):
                for projection in module.residual_projections():
                    init.residual_(projection)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                caches: list[DecodeState] | None = None, label_smoothing: float = 0.0):
        """idx: (B, T) token ids. targets: (B, T), -1 where the loss ignores a position.

        With ``caches`` (one decoding state per layer, from ``new_caches``) the tokens continue the
        cached sequence (incremental decoding: a KV cache, or a recurrent state). ``label_smoothing``
        smooths the loss's targets (the trainer's step only; 0 is plain cross-entropy).
        Returns logits (B, T, V) and the mean loss (or None).
        """
        b, t = idx.shape
        start = caches[0].length if caches else 0
        reach = self.position.max_positions
        if reach is not None and start + t > reach:  # checked on the host: no device sync per forward
            raise ValueError(f"{self.position.component_name} positions cover {reach} tokens; "
                             f"got position {start + t - 1}")
        pos = torch.arange(start, start + t, device=idx.device)  # (T,)
        x = self.tok_emb(idx)  # (B, T, C)
        if self.variant.model.emb_scale:  # the 2017 Transformer's sqrt(d_model) embedding scale
            x = x * math.sqrt(self.dims.d_model)
        x = self.drop(self.position.embed(x, pos))
        for i, block in enumerate(self.blocks):
            x = block(x, self.position, pos, caches[i] if caches else None)
        logits = self.head(self.norm_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            flat = (logits.float().view(-1, logits.size(-1)), targets.view(-1))
            if label_smoothing:  # training only: the trainer passes it, evaluation never does
                loss = F.cross_entropy(*flat, ignore_index=-1, label_smoothing=label_smoothing)
            else:
                loss = F.cross_entropy(*flat, ignore_index=-1)
        return logits, loss

    def new_caches(self, batch: int, max_len: int, device=None, dtype=None) -> list[DecodeState]:
        """One decoding state per layer, each made by that layer's token mixer."""
        ref = self.tok_emb.weight
        return [blk.attn.new_cache(batch, max_len, device or ref.device, dtype or ref.dtype) for blk in self.blocks]

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample with the KV cache; when the context fills, re-prime it with the last half context. A token
        mixer that cannot decode with a cache (a plugin's ``NotImplementedError``) samples without one:
        the whole window forward for every new token."""
        ctx = self.dims.context
        out = idx
        try:
            caches = self.new_caches(idx.shape[0], ctx)
            logits, _ = self(idx[:, -ctx:], caches=caches)
        except NotImplementedError:
            caches = None
        for step in range(max_new_tokens):
            if caches is None:
                logits, _ = self(out[:, -ctx:])
            nxt = _next_token(logits, temperature, top_k, generator)  # (B, 1)
            out = torch.cat([out, nxt], dim=1)
            if step == max_new_tokens - 1 or caches is None:
                continue
            if caches[0].length >= ctx:
                caches = self.new_caches(idx.shape[0], ctx)
                logits, _ = self(out[:, -(ctx // 2) :], caches=caches)
            else:
                logits, _ = self(nxt, caches=caches)
        return out


def _next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator | None) -> torch.Tensor:
    logits = logits[:, -1, :].float() / max(temperature, 1e-6)
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def make_dims(size: Size | Dims, variant: Variant, vocab_size: int | None = None, **overrides) -> Dims:
    """Dims for ``variant`` at ``size``: the variant's model options, the tokenizer's vocabulary."""
    if isinstance(size, Dims):
        dims = size
    else:
        vocab = vocab_size or size.vocab_size
        if vocab is None:
            raise AblateError("the size preset has no vocabulary size; pass the tokenizer's (--vocab-size)")
        dims = Dims(size.d_model, size.n_layers, size.n_heads, size.context, vocab)
    dims = replace(dims, bias=variant.model.bias, dropout=variant.model.dropout, **overrides)
    if dims.d_model % dims.n_heads:
        raise AblateError(f"width {dims.d_model} is not divisible by {dims.n_heads} heads; pick dims that divide")
    return dims


def build_model(variant: Variant, dims: Dims, device: str | torch.device | None = None, probe: bool = True) -> GPT:
    """Assemble ``variant`` at ``dims``; impossible dims for a component are a user error. A variant with
    plugin components is also probed (``_probe``), so that a plugin that fails to build, computes the wrong
    shape, sees later tokens or fails its backward is one line naming it, not a traceback from inside torch
    or a run that trains on the future (``probe=False``: not, for ``ablate.testing``, whose checks say more)."""
    plugged = plugin_specs(variant) if probe else []
    try:
        with torch.device(device or "cpu"):
            model = GPT(variant, dims)
    except Exception as err:
        if isinstance(err, ValueError):  # a component's settings check (gqa's "kv_heads must divide n_heads")
            where = _plugin_line(plugged, err) if plugged else ""
            raise AblateError(f"cannot build {variant.name} at width {dims.d_model}, {dims.n_heads} heads: {err}{where}; "
                              "change the component's options or the size (`ablate describe NAME` lists a "
                              "component's options)" + (f"; if they are right, fix the plugin and check it with "
                                                       f"ablate.testing.check_component({plugged[0].name!r})"
                                                       if where else "")) from None
        if plugged and (not isinstance(err, torch.OutOfMemoryError) or _plugin_frame(plugged, err)):
            raise AblateError(_plugin_failure(plugged, "cannot be built", err)) from None
        raise
    if plugged and model.tok_emb.weight.device.type != "meta":
        try:
            _probe(model)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever the plugin's code raised
            raise AblateError(_plugin_failure(plugged, "fails a forward or backward pass", err)) from None
    return model


def _probe(model: GPT) -> None:
    """Two sequences forward, in eval mode and again in train mode (dropout, batch statistics and anything
    else a component does only while training): the logits' shape, and that changing the last token changes
    no earlier position's logits and no other sequence's (a mixer that looks ahead, or an output averaged over
    positions or the batch, would train on the future). The train-mode pass also runs backward. The model
    leaves as it came: its buffers (running statistics), gradients, RNG and mode are restored."""
    n = min(16, model.dims.context)
    device = model.tok_emb.weight.device
    x = torch.arange(2 * n, device=device).reshape(2, n) % model.dims.vocab_size
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % model.dims.vocab_size  # the first sequence's last token only
    devices = [device] if device.type == "cuda" else []
    try:
        with restored(model), torch.random.fork_rng(devices=devices):
            model.eval()
            with torch.no_grad():
                _check_probe(model, *(model(t)[0] for t in (x, y)), n, "")
            model.train()
            if not torch.is_inference_mode_enabled():  # built under inference_mode: its weights take no grad
                with torch.enable_grad():  # the caller may be under no_grad (a notebook loading a run)
                    torch.manual_seed(0)  # the same dropout masks in both passes
                    logits, _ = model(x)
                    logits.float().square().mean().backward()
                torch.manual_seed(0)
                with torch.no_grad():
                    _check_probe(model, logits.detach(), model(y)[0], n, " in training mode")
    finally:
        model.zero_grad(set_to_none=True)


@contextmanager
def restored(model: nn.Module) -> Iterator[None]:
    """Leave ``model`` in the mode it came in, with the buffers it had (running statistics a forward in
    training mode updates): for checks that run it, which must not change what is trained afterwards."""
    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers and b.shape == buffers[name].shape:
                    b.copy_(buffers[name])


def _check_probe(model: GPT, logits: torch.Tensor, other: torch.Tensor, n: int, mode: str) -> None:
    if tuple(logits.shape) != (2, n, model.dims.vocab_size):
        raise ValueError(f"the logits have shape {tuple(logits.shape)}, not (2, {n}, {model.dims.vocab_size})")
    same = dict(atol=1e-4, rtol=1e-4)
    if not (torch.allclose(logits[0, :-1].float(), other[0, :-1].float(), **same)
            and torch.allclose(logits[1].float(), other[1].float(), **same)):
        raise ValueError(f"changing the last token changed earlier positions' logits, or another sequence's{mode}: "
                         "a component sees later tokens or other sequences of the batch (it must be causal, and "
                         "keep sequences apart)")


def plugin_error(plugged, what: str, err: BaseException) -> AblateError | None:
    """The one-line error for ``err`` if it was raised in a plugin component's own code (its file is in the
    traceback), else None: a bug in the plugin, not in ablate or in the user's settings."""
    return AblateError(_plugin_failure(plugged, what, err)) if _plugin_frame(plugged, err) else None


def _plugin_line(plugged, err: BaseException) -> str:
    """`` (raised at FILE, line N, in plugin component NAME)`` when a plugin's own code raised ``err``."""
    frame = _plugin_frame(plugged, err)
    names = ", ".join(s.name for s in plugged)
    return f" (raised at {frame.filename}, line {frame.lineno}, in plugin component {names})" if frame else ""


def _plugin_frame(plugged, err: BaseException):
    """The deepest frame of ``err``'s traceback in a plugin component's own file, or None. The files are
    the components' classes' (a class made in ``python -c`` has none)."""
    import inspect
    import traceback

    files = set()
    for spec in plugged:
        try:
            files.add(inspect.getsourcefile(spec.cls))
        except (OSError, TypeError):
            pass
    return next((f for f in reversed(traceback.extract_tb(err.__traceback__)) if f.filename in files - {None}), None)


def _plugin_failure(plugged, what: str, err: BaseException) -> str:
    """One line: which plugin components, where the error was raised in their code, and how to check them."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    frame = _plugin_frame(plugged, err)
    where = f" at {frame.filename}, line {frame.lineno}, in {frame.name}" if frame else ""
    names = ("plugin component " if len(plugged) == 1 else "plugin components ") + ", ".join(s.name for s in plugged)
    text = " ".join(str(err).split())[:300] or (f"{frames[-1].name}() is not implemented (its slot needs it)"
                                                 if isinstance(err, NotImplementedError) and frames else "(no message)")
    return (f"the variant {what} with its {names}: {type(err).__name__}: {text}{where}; fix the plugin and check "
            f"it with ablate.testing.check_component({plugged[0].name!r})")
