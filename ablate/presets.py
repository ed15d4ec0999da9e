"""Named architectures and named sizes, kept apart: any architecture can be built at any size."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.errors import AblateError

# name -> (variant string on top of the baseline, description)
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "gpt2": ("", "GPT-2: learned positions, LayerNorm, pre-norm, multi-head, GELU, biases, tied head (the baseline)"),
    "llama": (
        "rope+rmsnorm+swiglu(multiple_of=256)+bias=false+tie=false",
        "LLaMA: RoPE, RMSNorm, pre-norm, SwiGLU (LLaMA's 2/3·4d rounded to 256), no biases, untied head",
    ),
    "vaswani": (
        "sinusoidal+post+relu+emb_scale=true",
        "decoder-only 2017 Transformer: sinusoidal positions, post-norm LayerNorm, ReLU MLP, tied head, "
        "embeddings x sqrt(d_model) (its training recipe: recipes/vaswani2017.toml)",
    ),
    "palm": (
        "rope+parallel+mqa+swiglu(multiple_of=256)+bias=false",
        "PaLM-style: parallel attention+MLP, multi-query, RoPE, SwiGLU, no biases, tied head",
    ),
    "mistral": (
        "rope+rmsnorm+gqa(kv_heads=2)+swiglu(multiple_of=256)+bias=false+tie=false",
        "Mistral-style: LLaMA with grouped-query attention (2 KV heads here; Mistral-7B has 8 of 32)",
    ),
}


@dataclass(frozen=True)
class Size:
    d_model: int
    n_layers: int
    n_heads: int
    context: int
    vocab_size: int | None  # None: taken from the tokenizer
    description: str


SIZES: dict[str, Size] = {
    "tiny": Size(64, 2, 4, 64, None, "for tests: 2 layers, width 64, context 64"),
    "cpu": Size(128, 4, 4, 64, None, "nanoGPT's CPU Shakespeare config: 4 layers, 4 heads, width 128, context 64"),
    "shakespeare-char": Size(384, 6, 6, 256, None, "nanoGPT's GPU Shakespeare config: 6 layers, 6 heads, width 384"),
    "gpt2-small": Size(768, 12, 12, 1024, 50257, "GPT-2 small (124M)"),
    "gpt2-medium": Size(1024, 24, 16, 1024, 50257, "GPT-2 medium (355M)"),
    "gpt2-large": Size(1280, 36, 20, 1024, 50257, "GPT-2 large (774M)"),
    "gpt2-xl": Size(1600, 48, 25, 1024, 50257, "GPT-2 XL (1.5B)"),
    "llama-7b": Size(4096, 32, 32, 2048, 32000, "LLaMA-1 7B"),
    "llama-13b": Size(5120, 40, 40, 2048, 32000, "LLaMA-1 13B"),
}


def get_size(name: str) -> Size:
    if name not in SIZES:
        import difflib

        close = difflib.get_close_matches(name, SIZES, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise AblateError(f"unknown size {name!r}{hint} (choices: {', '.join(SIZES)})")
    return SIZES[name]
