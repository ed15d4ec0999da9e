"""Which Hugging Face architecture computes a variant, slot by slot, or one line saying why none does.

    GPT-2    learned · layernorm · pre · mha | heads · gelu | relu | relu2      → GPT2LMHeadModel
    LLaMA    rope · rmsnorm · pre · mha | heads · swiglu | geglu                 → LlamaForCausalLM
    Mistral  the LLaMA row with gqa | mqa (fewer key/value heads), no biases     → MistralForCausalLM

Model options: ``tie`` maps to ``tie_word_embeddings``; ``bias=false`` is GPT-2 with zero biases and
LLaMA without ``attention_bias``/``mlp_bias`` (LLaMA with ``bias=true`` keeps them; Mistral has none,
so grouped-query attention with biases is LLaMA with ``num_key_value_heads``); ``dropout`` becomes the
config's dropout (nothing at inference). ``emb_scale=true`` and ``qk_norm=true`` have no counterpart.
This module needs no ``transformers``: a refusal never asks the user to install anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.errors import AblateError
from ablate.slots import Dims
from ablate.variant import Variant


@dataclass(frozen=True)
class Family:
    """The components (per slot) one family of Hugging Face architectures computes exactly."""

    title: str
    slots: dict[str, tuple[str, ...]]


GPT2 = Family("GPT-2", {"position": ("learned",), "norm": ("layernorm",), "block": ("pre",),
                        "attention": ("mha", "heads"), "mlp": ("gelu", "relu", "relu2")})
LLAMA = Family("LLaMA/Mistral", {"position": ("rope",), "norm": ("rmsnorm",), "block": ("pre",),
                                 "attention": ("mha", "heads", "gqa", "mqa"), "mlp": ("swiglu", "geglu")})

# target -> the transformers class its weights load into
HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}

# ablate's MLP -> transformers' activation name (ACT2FN); every tanh GELU is GPT-2's gelu_new function
ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu": "relu", "relu2": "relu2", "swiglu": "silu",
               "geglu": "gelu_pytorch_tanh"}

EXPORTABLE = ("exportable: baseline/gpt2 (also with relu, relu2, bias=false, tie=false) as GPT-2; llama, "
              "modern-small (rope+rmsnorm+swiglu or geglu) as LLaMA; mistral, llama-gqa (the same with gqa or mqa) "
              "as Mistral; see docs/export.md")


def misfits(variant: Variant, family: Family) -> list[str]:
    """What of ``variant`` ``family`` cannot compute, one phrase each (empty: it computes all of it)."""
    found = []
    for slot, allowed in family.slots.items():
        choice = variant[slot]
        if choice.name not in allowed:
            found.append(f"{slot} {choice.label()} (in {family.title}: {' or '.join(allowed)})")
        elif getattr(choice.options, "qk_norm", False):
            found.append(f"attention {choice.label()} (in {family.title}: no query/key norm)")
    if variant.model.emb_scale:
        found.append(f"emb_scale=true (in {family.title}: unscaled embeddings)")
    return found


def kv_heads(variant: Variant, dims: Dims) -> int:
    """Key/value heads of the variant's attention at ``dims`` (``mha`` and ``heads``: one per query head)."""
    attention = variant["attention"]
    if attention.name == "mqa":
        return 1
    if attention.name == "gqa":
        return attention.options.kv_heads
    return dims.n_heads


def hf_target(variant: Variant, dims: Dims) -> str:
    """``gpt2``, ``llama`` or ``mistral``; an ``AblateError`` naming what has no counterpart otherwise."""
    if not misfits(variant, GPT2):
        return "gpt2"
    if not misfits(variant, LLAMA):
        grouped = kv_heads(variant, dims) < dims.n_heads
        return "mistral" if grouped and not dims.bias else "llama"
    closest = min((GPT2, LLAMA), key=lambda family: len(misfits(variant, family)))  # GPT-2 on a tie
    raise AblateError(f"cannot export {variant.name} to Hugging Face: no architecture there computes "
                      f"{'; '.join(misfits(variant, closest))}; {EXPORTABLE}")


__all__ = ["ACTIVATIONS", "EXPORTABLE", "GPT2", "HF_CLASSES", "LLAMA", "Family", "hf_target", "kv_heads", "misfits"]
