"""`ablate bench decode`: what generating costs per variant: prefill tokens/s, KV-cached decode tokens/s
and the decoding state each token (or each sequence, for recurrent mixers) keeps, the reason multi-query
and grouped-query attention exist.

Prefill runs the whole prompt through the model once, filling the cache; decode then feeds one token at
a time (greedy), ``new_tokens`` steps. KV bytes/token is measured from the caches themselves (bytes held
after decoding divided by the positions held) and matches the accounting's ``kv_cache_bytes_per_token``
at the model's dtype; a recurrent mixer's state per sequence is measured the same way (bytes held over
the batch), so a state a mixer keeps in float32 under bf16 autocast counts as float32.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import asdict, dataclass

import torch

from ablate.bench._timing import describe_device, markdown_table, synchronize, variant_dims
from ablate.format import si


@dataclass
class DecodeBench:
    variant: str
    params: int
    kv_heads: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    cache_bytes_per_token: float
    state_bytes_per_sequence: int


def _cache_bytes(caches) -> int:
    total = 0
    for cache in caches:
        for value in vars(cache).values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
            elif isinstance(value, (tuple, list)):
                total += sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))
    return total


@torch.no_grad()
def time_decode(model, *, batch: int = 1, prompt: int = 32, new_tokens: int = 32, repeats: int = 3,
                amp: torch.dtype | None = None) -> tuple[float, float, int, int]:
    """Prefill tokens/s, decode tokens/s (medians over ``repeats`` rounds after one warm-up round), the
    bytes the caches hold after decoding and the positions they hold, for ``model`` as it is (weights do
    not change the speed). The prompt and the new tokens fit the model's context together. Under ``amp``
    (autocast) the caches hold that dtype, as an inference server's would."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    length = min(model.dims.context, prompt + new_tokens)
    prompt = max(1, min(prompt, length - 1))
    idx = torch.randint(0, model.dims.vocab_size, (batch, prompt), device=device,
                        generator=torch.Generator(device=device).manual_seed(0))

    prefill, decode = [], []
    held = 0
    with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
        for _ in range(repeats + 1):  # the first round warms up
            caches = model.new_caches(batch, length, dtype=amp)  # under autocast, a cache of its dtype
            synchronize(device)
            t0 = time.perf_counter()
            logits, _ = model(idx, caches=caches)
            synchronize(device)
            t1 = time.perf_counter()
            nxt = logits[:, -1:].argmax(-1)
            for _ in range(length - prompt):
                logits, _ = model(nxt, caches=caches)
                nxt = logits[:, -1:].argmax(-1)
            synchronize(device)
            prefill.append(t1 - t0)
            decode.append(time.perf_counter() - t1)
            held = _cache_bytes(caches)
    model.train(was_training)
    return (batch * prompt / statistics.median(prefill[1:]), batch * (length - prompt) / statistics.median(decode[1:]),
            held, batch * length)


def decode_rate(model, amp: torch.dtype | None = None) -> float | None:
    """What every finished run logs as ``decode_tokens_per_s``: KV-cached decode tokens/s of its model at
    batch 1, greedy, a prompt of half the context (at most 64 tokens), then up to 32 new tokens; the
    median of 3 rounds, at the run's autocast dtype. A fraction of a second at the CPU size. A model that
    cannot decode with its caches (a plugin's mixer) gets a warning, and its finished run stays finished."""
    context = model.dims.context
    if context < 2:
        return None
    prompt = min(64, context // 2)
    try:
        return time_decode(model, prompt=prompt, new_tokens=min(32, context - prompt), amp=amp)[1]
    except Exception as err:  # a speed figure is not worth a finished run
        warnings.warn(f"decode speed not measured ({type(err).__name__}: {err})", stacklevel=1)
        return None


def bench_variant(variant_text: str, *, size: str = "cpu", vocab: int | None = None, batch: int = 1, prompt: int = 32,
                  new_tokens: int = 32, repeats: int = 3, dtype: str = "float32", device: torch.device) -> DecodeBench:
    """One variant at ``size`` (its vocabulary: see ``variant_dims``)."""
    from ablate.accounting import cost
    from ablate.errors import AblateError
    from ablate.model import build_model

    variant, dims = variant_dims(variant_text, size, vocab)
    if prompt + new_tokens > dims.context:
        raise AblateError(f"prompt {prompt} + {new_tokens} new tokens exceed the {dims.context}-token context of "
                          f"size {size!r}; lower --prompt or --new-tokens, or pick a size with a longer context")
    torch.manual_seed(0)
    model = build_model(variant, dims, device=str(device)).eval()
    amp = torch.bfloat16 if dtype == "bfloat16" else None
    try:
        prefill, decode, held, positions = time_decode(model, batch=batch, prompt=prompt, new_tokens=new_tokens,
                                                       repeats=repeats, amp=amp)
    except NotImplementedError as err:  # a plugin's mixer without decoding states: nothing to time
        raise AblateError(f"{variant.name} cannot decode with a KV cache ({err or 'NotImplementedError'}); bench "
                          "decode times KV-cached decoding only: leave it out of --variants") from None
    c = cost(model, kv_dtype=dtype)
    per_token, per_sequence = c.kv_cache_bytes_per_token, c.state_bytes_per_sequence
    if held and not (per_token and per_sequence):  # what the caches hold, in the dtype they hold it in (a GRU
        # keeps its state in float32 under autocast); a plugin's mixer with both kinds keeps the accounting's
        per_token = held / positions if per_token else 0
        per_sequence = held // batch if per_sequence else 0
    return DecodeBench(variant.name, sum(p.numel() for p in model.parameters()), model.blocks[0].attn.kv_heads,
                       prefill, decode, per_token, per_sequence)


COLUMNS = ("variant", "params", "KV heads", "prefill tok/s", "decode tok/s", "KV bytes/token", "state bytes/seq")


def rows(results: list[DecodeBench]) -> list[list[str]]:
    return [[r.variant, si(r.params), str(r.kv_heads), f"{r.prefill_tokens_per_s:,.0f}",
             f"{r.decode_tokens_per_s:,.0f}", f"{r.cache_bytes_per_token:,.0f}",
             f"{r.state_bytes_per_sequence:,}"] for r in results]


def table(results: list[DecodeBench], device: torch.device, batch: int, prompt: int, new_tokens: int,
          dtype: str = "float32"):
    from ablate.report.tables import CellTable

    mode = "bfloat16 autocast and cache" if dtype == "bfloat16" else dtype
    cells = CellTable(f"decoding on {describe_device(device)}, {mode}: batch {batch}, prompt {prompt}, "
                      f"{new_tokens} new tokens (greedy, KV-cached); median of the repeats", list(COLUMNS),
                      right=range(1, 7))
    for row in rows(results):
        cells.add(*row)
    return cells


def markdown(results: list[DecodeBench]) -> str:
    return markdown_table(COLUMNS, rows(results))


def to_dict(results: list[DecodeBench], setup: dict) -> dict:
    return {"setup": setup, "results": [asdict(r) for r in results]}
