"""An ablate model as the Hugging Face model that computes the same logits: its config and its weights.

Weights are renamed, never recomputed, with three exceptions that are exact: ablate's fused ``qkv``
(or the ``heads`` component's per-head projections) is split into LLaMA's ``q/k/v_proj`` or
concatenated into GPT-2's ``c_attn``; GPT-2's ``Conv1D`` stores ``nn.Linear`` weights transposed;
a GPT-2 export of a ``bias=false`` variant holds zero biases. RoPE needs no permutation: ablate pairs
channels (i, i + D/2) ("rotate half"), as HF LLaMA does, with the same inverse frequencies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ablate.errors import AblateError
from ablate.export.targets import ACTIVATIONS, HF_CLASSES, kv_heads

MIN_TRANSFORMERS = (4, 45)
INSTALL = "install the extra: pip install 'ablate[hf]'"

Tensors = dict[str, torch.Tensor]


def require_transformers():
    """The ``transformers`` module (with ``safetensors``), or one line saying how to install the extra."""
    try:
        import safetensors  # noqa: F401 - save_pretrained writes model.safetensors with it
        import transformers
    except ImportError as err:
        raise AblateError(f"exporting to Hugging Face needs transformers and safetensors ({err.name} is "
                          f"missing); {INSTALL}") from None
    have = tuple(int(p) for p in transformers.__version__.split(".")[:2] if p.isdigit())
    if have < MIN_TRANSFORMERS:
        raise AblateError(f"exporting to Hugging Face needs transformers >= 4.45, this is {transformers.__version__}; "
                          f"{INSTALL}")
    return transformers


def hf_config(target: str, model, eot: int | None):
    """The transformers config of ``target`` for ``model`` (an ``ablate.model.GPT``)."""
    transformers = require_transformers()
    variant, dims, block = model.variant, model.dims, model.blocks[0]
    common: dict[str, Any] = {"vocab_size": dims.vocab_size, "bos_token_id": eot, "eos_token_id": eot,
                              "pad_token_id": None, "tie_word_embeddings": variant.model.tie}
    hidden = block.mlp.out_proj.in_features  # whatever hidden= / multiple_of= chose
    activation = ACTIVATIONS[variant["mlp"].name]
    eps = variant["norm"].options.eps
    if target == "gpt2":
        return transformers.GPT2Config(
            n_positions=dims.context, n_embd=dims.d_model, n_layer=dims.n_layers, n_head=dims.n_heads,
            n_inner=hidden, activation_function=activation, layer_norm_epsilon=eps, resid_pdrop=dims.dropout,
            embd_pdrop=dims.dropout, attn_pdrop=dims.dropout, scale_attn_weights=True,
            scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False, **common)
    llama_like: dict[str, Any] = dict(
        hidden_size=dims.d_model, intermediate_size=hidden, num_hidden_layers=dims.n_layers,
        num_attention_heads=dims.n_heads, num_key_value_heads=kv_heads(variant, dims), head_dim=dims.head_dim,
        hidden_act=activation, max_position_embeddings=dims.context, rms_norm_eps=eps,
        rope_theta=float(variant["position"].options.base), attention_dropout=dims.dropout, **common)
    if target == "mistral":
        return transformers.MistralConfig(sliding_window=None, **llama_like)
    return transformers.LlamaConfig(attention_bias=dims.bias, mlp_bias=dims.bias, **llama_like)


def _qkv(model, attn: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Query, key and value weights (out, in) and biases (or None) of one attention layer."""
    if model.variant["attention"].name == "heads":  # the lecture's Head modules, in head order
        layers = [[getattr(head, name) for head in attn.heads] for name in ("query", "key", "value")]
        weights = [torch.cat([lin.weight for lin in group]) for group in layers]  # (H·D, C) each
        biases = [torch.cat([lin.bias for lin in group]) if group[0].bias is not None else None for group in layers]
        return weights, biases
    sizes = [attn.n_heads * attn.head_dim, attn.kv_heads * attn.head_dim, attn.kv_heads * attn.head_dim]
    weights = list(attn.qkv.weight.split(sizes))  # (H·D, C), (K·D, C), (K·D, C)
    biases = list(attn.qkv.bias.split(sizes)) if attn.qkv.bias is not None else [None, None, None]
    return weights, biases


def _linear(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Tensors:
    return {f"{name}.weight": weight} | ({f"{name}.bias": bias} if bias is not None else {})


def _conv1d(name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> Tensors:
    """GPT-2's Conv1D: ``x @ weight + bias`` with weight (in, out); a missing bias is zeros."""
    bias = bias if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    return {f"{name}.weight": weight.t().contiguous(), f"{name}.bias": bias}


def _layernorm(name: str, norm: nn.Module) -> Tensors:
    bias = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)
    return {f"{name}.weight": norm.weight, f"{name}.bias": bias}


def gpt2_state(model) -> Tensors:
    """``model``'s weights under GPT2LMHeadModel's names."""
    state = {"transformer.wte.weight": model.tok_emb.weight, "transformer.wpe.weight": model.position.wpe.weight}
    for i, block in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        (q, k, v), (qb, kb, vb) = _qkv(model, block.attn)
        qkv_bias = torch.cat([qb, kb, vb]) if qb is not None else None
        state |= _layernorm(p + "ln_1", block.norm1) | _layernorm(p + "ln_2", block.norm2)
        state |= _conv1d(p + "attn.c_attn", torch.cat([q, k, v]), qkv_bias)
        state |= _conv1d(p + "attn.c_proj", block.attn.out_proj.weight, block.attn.out_proj.bias)
        state |= _conv1d(p + "mlp.c_fc", block.mlp.fc.weight, block.mlp.fc.bias)
        state |= _conv1d(p + "mlp.c_proj", block.mlp.out_proj.weight, block.mlp.out_proj.bias)
    state |= _layernorm("transformer.ln_f", model.norm_f)
    state["lm_head.weight"] = model.head.weight  # the same tensor as wte when tied
    return state


def llama_state(model) -> Tensors:
    """``model``'s weights under LlamaForCausalLM's (and MistralForCausalLM's) names."""
    state = {"model.embed_tokens.weight": model.tok_emb.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        (q, k, v), (qb, kb, vb) = _qkv(model, block.attn)
        state[p + "input_layernorm.weight"] = block.norm1.weight
        state[p + "post_attention_layernorm.weight"] = block.norm2.weight
        state |= _linear(p + "self_attn.q_proj", q, qb) | _linear(p + "self_attn.k_proj", k, kb)
        state |= _linear(p + "self_attn.v_proj", v, vb)
        state |= _linear(p + "self_attn.o_proj", block.attn.out_proj.weight, block.attn.out_proj.bias)
        mlp = block.mlp
        state |= _linear(p + "mlp.gate_proj", mlp.gate.weight, mlp.gate.bias)
        state |= _linear(p + "mlp.up_proj", mlp.up.weight, mlp.up.bias)
        state |= _linear(p + "mlp.down_proj", mlp.out_proj.weight, mlp.out_proj.bias)
    state["model.norm.weight"] = model.norm_f.weight
    state["lm_head.weight"] = model.head.weight
    return state


def build_hf_model(target: str, model, eot: int | None):
    """The transformers model of ``target`` holding ``model``'s weights, in eval mode."""
    transformers = require_transformers()
    config = hf_config(target, model, eot)
    with torch.random.fork_rng(devices=[]):  # its throwaway random init leaves the caller's RNG alone
        hf = getattr(transformers, HF_CLASSES[target])(config)
    state = gpt2_state(model) if target == "gpt2" else llama_state(model)
    with torch.no_grad():
        hf.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()}, strict=True)
    return hf.eval()


@torch.no_grad()
def logit_gap(model, hf, tokens: int = 32, seed: int = 0) -> float:
    """The largest |logit difference| between ``model`` and ``hf`` on two random sequences (float32, CPU)."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, model.dims.vocab_size, (2, min(tokens, model.dims.context)), generator=generator)
    device, training = next(model.parameters()).device, model.training
    ours = model.eval()(idx.to(device))[0].float().cpu()  # (2, T, V)
    model.train(training)
    theirs = hf(input_ids=idx).logits  # (2, T, V)
    return (ours - theirs).abs().max().item()


__all__ = ["INSTALL", "build_hf_model", "gpt2_state", "hf_config", "llama_state", "logit_gap", "require_transformers"]
