"""Recurrent token mixers (lstm, gru) and the speed benchmarks (`ablate bench mixers|attention`)."""

import argparse
import json

import pytest
import torch

from ablate.accounting import DTYPE_BYTES, cost
from ablate.bench import run_attention, run_mixers
from ablate.bench.attention import copy_batched_to_heads
from ablate.bench.cli import add_bench_commands
from ablate.components.attention._recurrent import RecurrentState
from ablate.components.attention.gru import GRUMixer
from ablate.components.attention.lstm import LSTMMixer
from ablate.errors import AblateError
from ablate.slots import Dims, KVCache, Position
from ablate.testing import TINY, check_causal, check_kv_cache, tiny_model
from ablate.variant import parse_variant

RECURRENT = ["lstm", "gru", "none+lstm", "gru(match_params=true)", "lstm(hidden=24)+post"]


@pytest.mark.parametrize("variant", RECURRENT)
def test_incremental_decoding_equals_full_forward(variant):
    model = tiny_model(variant)
    check_kv_cache(model, prompt=5)
    check_kv_cache(model, prompt=1)
    check_causal(model)


@torch.no_grad()
def test_recurrent_state_in_uneven_chunks():
    model = tiny_model("gru")
    idx = torch.randint(0, TINY.vocab_size, (3, TINY.context), generator=torch.Generator().manual_seed(0))
    full, _ = model(idx)
    caches = model.new_caches(3, TINY.context)
    assert all(isinstance(c, RecurrentState) for c in caches)
    parts, start = [], 0
    for size in (4, 1, 7, 1, 3):
        parts.append(model(idx[:, start : start + size], caches=caches)[0])
        start += size
    assert caches[0].length == TINY.context
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="positions"):
        model(idx[:, :1], caches=caches)


@pytest.mark.parametrize("variant", ["baseline", "gqa(kv_heads=2)", "rope+mqa"])
@torch.no_grad()
def test_decoding_one_token_builds_no_mask(variant, monkeypatch):
    """A new token sees every cached position, so KV-cached decoding skips the causal mask (about 1.2x
    decode tokens/s at the CPU size) and still matches the full forward."""
    from ablate import slots

    model = tiny_model(variant).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    full, _ = model(idx)
    caches = model.new_caches(2, 9)
    model(idx[:, :8], caches=caches)

    def no_mask(*args):
        raise AssertionError("one decoded token needs no mask")

    monkeypatch.setattr(slots, "causal_mask", no_mask)
    last, _ = model(idx[:, 8:], caches=caches)
    torch.testing.assert_close(last[:, -1], full[:, -1], atol=1e-5, rtol=1e-4)


def test_attention_still_makes_a_kv_cache():
    caches = tiny_model("baseline").new_caches(2, 8)
    assert all(isinstance(c, KVCache) and c.length == 0 for c in caches)


def test_generate_with_recurrent_mixer_runs_past_context():
    out = tiny_model("lstm").generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=40,
                                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 43)


@pytest.mark.parametrize("variant,need", [("rope+lstm", "rotary"), ("alibi+gru", "attn_bias"),
                                          ("llama+gru", "rotary")])
def test_relative_positions_with_recurrent_mixer_fail_at_resolve(variant, need):
    with pytest.raises(AblateError, match=need):
        parse_variant(variant)


@pytest.mark.parametrize("variant", ["lstm", "none+gru", "sinusoidal+lstm"])
def test_absolute_or_no_positions_resolve(variant):
    parse_variant(variant)


def _mixer_params(variant: str, dims: Dims = TINY) -> int:
    model = tiny_model(variant, dims)
    return sum(p.numel() for p in model.blocks[0].attn.parameters())


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("d_model,n_heads", [(32, 4), (128, 4), (768, 12)])
def test_match_params_matches_attention(name, d_model, n_heads):
    dims = Dims(d_model, 1, n_heads, 8, 50)
    mha = _mixer_params("mha", dims)
    matched = _mixer_params(f"{name}(match_params=true)", dims)
    assert mha == 4 * d_model * d_model + 4 * d_model
    assert abs(matched - mha) / mha < 0.04
    assert _mixer_params(name, dims) > 1.5 * mha  # equal width is much bigger


def test_matched_hidden_sizes():
    assert abs(LSTMMixer.matched_hidden(768, True) / 768 - 0.554) < 0.01  # 4h² + 5dh = 4d²
    assert abs(GRUMixer.matched_hidden(768, True) / 768 - 2 / 3) < 0.01  # 3h² + 4dh = 4d²
    assert tiny_model("lstm").blocks[0].attn.hidden == TINY.d_model
    assert tiny_model("gru(hidden=24)").blocks[0].attn.rnn.hidden_size == 24


def test_hidden_and_match_params_together_is_a_user_error():
    with pytest.raises(AblateError, match="not both"):
        tiny_model("lstm(hidden=16,match_params=true)")


def test_cost_of_recurrent_state_is_per_sequence():
    lstm, gru, mha = cost(tiny_model("lstm")), cost(tiny_model("gru")), cost(tiny_model("baseline"))
    for c in (lstm, gru):
        assert c.kv_cache_bytes_per_token == 0
        assert c.attention_flops_per_token == 0
        assert c.flops_per_token == 6 * (c.non_embedding_params + TINY.vocab_size * TINY.d_model)
    bytes_ = DTYPE_BYTES["bfloat16"]
    assert lstm.state_bytes_per_sequence == TINY.n_layers * 2 * TINY.d_model * bytes_  # (h, c)
    assert gru.state_bytes_per_sequence == TINY.n_layers * TINY.d_model * bytes_  # h
    assert mha.state_bytes_per_sequence == 0 and mha.kv_cache_bytes_per_token > 0


def test_recurrent_mixer_learns():
    torch.manual_seed(0)
    model = tiny_model("lstm").train()
    idx = torch.arange(TINY.context).repeat(4, 1) % 7  # a periodic sequence
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------- benchmarks
def test_separate_heads_equal_batched_on_copied_weights():
    for bias in (True, False):
        dims = Dims(32, 1, 4, 12, 1, bias=bias)
        bench_dims = dims
        from ablate.bench._timing import build_mixer

        torch.manual_seed(0)
        mha, heads = build_mixer("mha", bench_dims), build_mixer("heads", bench_dims)
        copy_batched_to_heads(mha, heads)
        x = torch.randn(2, 12, 32)
        pos = torch.arange(12)
        position = Position(None, dims)
        torch.testing.assert_close(heads(x, position, pos), mha(x, position, pos), atol=1e-5, rtol=1e-4)


def test_run_mixers_tiny(tmp_path):
    bench = run_mixers(mixers=("mha", "heads", "lstm", "gru(match_params=true)"), contexts=(8, 16), d_model=16,
                       n_heads=2, batch_tokens=32, warmup=1, repeats=2, device="cpu", threads=1)
    assert [(t.mixer, t.context, t.batch) for t in bench.timings][:4] == [
        ("mha", 8, 4), ("heads", 8, 4), ("lstm", 8, 4), ("gru(match_params=true)", 8, 4)]
    assert len(bench.timings) == 8 and all(t.seconds > 0 and t.tokens_per_s > 0 for t in bench.timings)
    assert bench.cells()[0][-1] == "1.00×"
    assert "| T | batch | mixer |" in bench.markdown()
    assert bench.plot(tmp_path / "m.png").stat().st_size > 1000
    json.dumps(bench.to_dict())
    assert bench.threads == 1


def test_run_attention_tiny():
    bench = run_attention(sizes=((16, 2, 8), (32, 4, 16)), batch=2, warmup=0, repeats=1, device="cpu", threads=1)
    assert bench.agree and len(bench.rows) == 2
    assert all(r.max_out_diff < 1e-5 and r.speedup > 0 for r in bench.rows)
    json.dumps(bench.to_dict())


def test_bench_errors_are_user_errors():
    with pytest.raises(AblateError, match="divisible"):
        run_mixers(d_model=30, n_heads=4)
    with pytest.raises(AblateError, match="unknown"):
        run_mixers(mixers=("lsmt",), contexts=(8,))
    with pytest.raises(AblateError, match="attention"):
        run_mixers(mixers=("swiglu",), contexts=(8,))


def _cli(argv):
    parser = argparse.ArgumentParser(prog="ablate")
    add_bench_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_bench_commands(tmp_path):
    out = tmp_path / "mixers.png"
    assert _cli(["bench", "mixers", "--contexts", "8", "--width", "16", "--heads", "2", "--batch-tokens", "16",
                 "--mixers", "mha,lstm(match_params=true)", "--warmup", "0", "--repeats", "1", "--threads", "1",
                 "--out", str(out)]) == 0
    assert out.exists() and json.loads(out.with_suffix(".json").read_text())["timings"][1]["mixer"].startswith("lstm")
    assert _cli(["bench", "attention", "--sizes", "16x2x8", "--batch", "2", "--warmup", "0", "--repeats", "1",
                 "--out", str(tmp_path / "a.json")]) == 0
    with pytest.raises(AblateError, match="WIDTHxHEADSxCONTEXT"):
        _cli(["bench", "attention", "--sizes", "16x2"])


def test_mixer_plot_labels_ticks_below_one():
    """A GPU's µs/token falls below 1: its log axis read 0 at 0.5 (labels rounded to whole numbers)."""
    from ablate.bench.mixers import tick_label

    assert [tick_label(v) for v in (0.2, 0.5, 1, 2, 5000, 2_000_000)] == ["0.2", "0.5", "1", "2", "5,000", "2,000,000"]
