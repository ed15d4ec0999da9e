"""The model card (``README.md``) written beside an export: what was trained, what it maps to, how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablate.export.targets import HF_CLASSES, kv_heads

TITLES = {"gpt2": "GPT-2", "llama": "LLaMA", "mistral": "Mistral"}

USAGE_WITH_TOKENIZER = """from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("<this folder>")
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
ids = tokenizer({prompt!r}, return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens={new}, do_sample=True)  # prompt + new tokens within the context
print(tokenizer.decode(out[0]))
"""

USAGE = """import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("<this folder>")
ids = torch.tensor([[0, 1, 2]])  # token ids of the run's tokenizer (below)
logits = model(input_ids=ids).logits  # (1, 3, {vocab})
"""


def how_to_tokenize(name: str | None, saved: bool, eot: int | None = None) -> str:
    """The card's paragraph on turning text into this model's token ids."""
    if saved:
        special = (f" A literal `<|endoftext|>` in the text becomes token {eot} here, where ablate encodes it as "
                   f"ordinary text." if eot is not None else "")
        return (f"`AutoTokenizer.from_pretrained(<this folder>)` gives the ids ablate's `{name}` tokenizer gives "
                f"(checked when exported). It adds no special tokens.{special}")
    if name == "gpt2":
        return ("The run used GPT-2's BPE (50,257 tokens): `AutoTokenizer.from_pretrained(\"gpt2\")` gives the same "
                "ids for ordinary text (ablate encodes a literal `<|endoftext|>` as text, not as token 50256).")
    return (f"The run used ablate's `{name}` tokenizer, which has no exact Hugging Face form here: tokenize with "
            f"ablate (`ablate.train.load_checkpoint_model(<run dir>)` returns the tokenizer with the model).")


def _prompt(tokenizer, wanted: str = "First Citizen:") -> str:
    """A prompt the tokenizer can encode (a char vocabulary may lack letters: a task run's has digits)."""
    try:
        return wanted if tokenizer.encode(wanted) else tokenizer.decode([0])
    except Exception:  # noqa: BLE001 - an unknown character
        return tokenizer.decode([0])


def card_text(model, target: str, *, gap: float, tokenizer: Any, tokenizer_saved: bool,
              source: dict[str, Any]) -> str:
    variant, dims = model.variant, model.dims
    params = sum(p.numel() for p in model.parameters())
    config, result = source.get("config", {}), source.get("result", {})
    tok_name = getattr(tokenizer, "name", None) or config.get("tokenizer")
    rows = [
        ("ablate variant", f"`{variant.name}` (hash `{variant.hash}`)"),
        ("Hugging Face class", f"`{HF_CLASSES[target]}` ({TITLES[target]})"),
        ("dims", (f"d_model {dims.d_model}, {dims.n_layers} layers, {dims.n_heads} heads ({kv_heads(variant, dims)} "
                  f"key/value), context {dims.context}, vocabulary {dims.vocab_size}")),
        ("parameters", f"{params:,}"),
        ("tied embeddings", "yes" if variant.model.tie else "no"),
        ("logits vs ablate", f"max abs difference {gap:.1e} (float32, CPU, at export)"),
    ]
    if source.get("run_dir"):
        rows.append(("run", f"`{source['run_dir']}`"))
    if config:
        rows.append(("trained on", (f"data `{config.get('data')}`, tokenizer `{config.get('tokenizer')}`, "
                                    f"budget {config.get('budget')}, seed {config.get('seed')}")))
    if result:
        loss = result.get("final", {}).get("val_loss")
        rows.append(("result", f"{result.get('status', '?')} after {result.get('steps', '?')} steps"
                               + (f", val loss {loss:.4f}" if isinstance(loss, (int, float)) else "")))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    if tokenizer_saved:
        usage = USAGE_WITH_TOKENIZER.format(prompt=_prompt(tokenizer), new=max(1, min(50, dims.context // 2)))
    else:
        usage = USAGE.format(vocab=dims.vocab_size)
    notes = ""
    if target == "gpt2" and not dims.bias:
        notes += "- The variant has no biases; GPT-2 always has them, so they are stored as zeros.\n"
    beyond = "outside the learned position table" if target == "gpt2" else "untrained (RoPE computes them anyway)"
    notes += f"- Trained at context {dims.context}; positions past it are {beyond}.\n"
    if tokenizer_saved and getattr(tokenizer, "name", None) == "char":
        notes += ("- The tokenizer is the training text's characters, with no unknown token: text with other "
                  "characters cannot be tokenized (transformers raises an error).\n")
    if dims.dropout:
        notes += f"- Dropout {dims.dropout} is in the config for further training; inference (eval mode) uses none.\n"
    return f"""---
library_name: transformers
tags:
- ablate
- {target}
---

# {variant.name} (exported by ablate)

A GPT-style model trained with ablate (an architecture-ablation workbench), exported by
`ablate export RUN --to hf DIR` as the Hugging Face architecture that computes the same function.

| | |
| --- | --- |
{table}

## Use

```python
{usage}```

## Tokenizer

{how_to_tokenize(tok_name, tokenizer_saved, getattr(tokenizer, "eot", None))}

## Notes

{notes}"""


def write_card(folder: Path, model, target: str, **details) -> None:
    (Path(folder) / "README.md").write_text(card_text(model, target, **details), encoding="utf-8")


__all__ = ["card_text", "how_to_tokenize", "write_card"]
