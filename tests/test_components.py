"""Checks generated from the registry: every component, and every pair of components of two slots."""

import pytest
import torch
import torch.nn.functional as F

from ablate.catalog import all_specs
from ablate.slots import causal_attention
from ablate.testing import TINY, check_causal, check_forward, check_kv_cache, pair_variants, tiny_model
from ablate.errors import AblateError
from ablate.variant import BASELINE, parse_variant

SINGLES = [s.name if s.name != BASELINE[s.slot] else "baseline" for s in all_specs()]
PAIRS = list(pair_variants())


@pytest.mark.parametrize("variant", sorted(set(SINGLES)))
def test_component_alone(variant):
    model = tiny_model(variant)
    check_forward(model)
    check_causal(model)
    check_kv_cache(model)


@pytest.mark.parametrize("variant", PAIRS)
def test_pair_of_slots(variant):
    model = tiny_model(variant)
    check_forward(model)
    check_causal(model)
    check_kv_cache(model)


def test_pairs_cover_every_position_with_every_attention():
    """Every position × attention pair is checked, or is declared incompatible and fails to resolve."""
    positions = [s.name for s in all_specs("position")]
    attentions = [s.name for s in all_specs("attention")]
    ruled_out = set(pair_variants(compatible=False))
    for p in positions:
        for a in attentions:
            pair = {f"{p}+{a}", f"{a}+{p}"}
            assert pair & set(PAIRS) or pair & ruled_out
            for variant in pair & ruled_out:
                with pytest.raises(AblateError):
                    parse_variant(variant)
    assert {"rope+lstm", "alibi+lstm", "rope+gru", "alibi+gru"} <= ruled_out


def _copy(src, dst):
    dst.load_state_dict(src.state_dict())


def test_gqa_with_all_kv_heads_equals_mha():
    mha = tiny_model("mha")
    gqa = tiny_model(f"gqa(kv_heads={TINY.n_heads})", seed=1)
    _copy(mha, gqa)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.context))
    torch.testing.assert_close(gqa(idx)[0], mha(idx)[0])


@pytest.mark.parametrize("position", ["learned", "rope", "alibi"])
def test_separate_heads_equal_batched_heads(position):
    batched = tiny_model(f"{position}+mha")
    heads = tiny_model(f"{position}+heads", seed=1)
    state = batched.state_dict()
    mapped = {}
    d, h, hd = TINY.d_model, TINY.n_heads, TINY.d_model // TINY.n_heads
    for key, value in state.items():
        if ".attn.qkv." not in key:
            mapped[key] = value
            continue
        prefix, kind = key.split(".attn.qkv.")
        q, k, v = value.split(d, dim=0)  # rows: all query heads, then keys, then values
        for i in range(h):
            for name, part in (("query", q), ("key", k), ("value", v)):
                mapped[f"{prefix}.attn.heads.{i}.{name}.{kind}"] = part[i * hd : (i + 1) * hd]
    heads.load_state_dict(mapped)
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.context))
    torch.testing.assert_close(heads(idx)[0], batched(idx)[0], atol=1e-5, rtol=1e-4)


def test_rmsnorm_matches_torch():
    from ablate.components.norm.rmsnorm import RMSNorm, RMSNormOptions

    ours = RMSNorm(RMSNormOptions(eps=1e-6), 16)
    ref = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(16))
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 16) * 3
    torch.testing.assert_close(ours(x), ref(x))


def test_layernorm_matches_torch():
    from ablate.components.norm.layernorm import LayerNorm, LayerNormOptions

    ours = LayerNorm(LayerNormOptions(), 16)
    ref = torch.nn.LayerNorm(16)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), ref(x))


def test_rope_score_depends_only_on_relative_offset():
    from ablate.components.position.rope import RoPEOptions, RotaryPosition

    rope = RotaryPosition(RoPEOptions(), TINY)
    q = torch.randn(1, 1, 1, TINY.head_dim)
    k = torch.randn(1, 1, 1, TINY.head_dim)

    def score(m, n):
        qm, _ = rope.rotate(q, q, torch.tensor([m]))
        _, kn = rope.rotate(k, k, torch.tensor([n]))
        return (qm * kn).sum().item()

    for offset in (0, 3, 7):
        scores = [score(m + offset, m) for m in (0, 5, 11, 40)]
        assert max(scores) - min(scores) < 1e-4, scores
    assert abs(score(3, 0) - score(7, 0)) > 1e-4  # and it does depend on the offset


def test_rope_preserves_norm():
    from ablate.components.position.rope import RoPEOptions, RotaryPosition

    rope = RotaryPosition(RoPEOptions(), TINY)
    q = torch.randn(2, 4, 9, TINY.head_dim)
    qr, _ = rope.rotate(q, q, torch.arange(9))
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))


def test_alibi_slopes_follow_the_paper():
    from ablate.components.position.alibi import alibi_slopes

    assert alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    s6 = alibi_slopes(6)
    assert len(s6) == 6 and s6[:4] == alibi_slopes(4)


def _manual_attention(q, k, v, bias):
    t, s = q.shape[2], k.shape[2]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    future = torch.arange(s)[None, :] > torch.arange(t)[:, None] + (s - t)
    scores = scores.masked_fill(future, float("-inf"))
    return F.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("t,s", [(7, 7), (1, 7), (3, 7)])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_sdpa_attention_equals_masked_softmax(t, s, kv_heads, with_bias):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, t, 8, generator=g)
    k = torch.randn(2, kv_heads, s, 8, generator=g)
    v = torch.randn(2, kv_heads, s, 8, generator=g)
    bias = torch.randn(4, t, s, generator=g) if with_bias else None
    torch.testing.assert_close(causal_attention(q, k, v, bias), _manual_attention(q, k, v, bias), atol=1e-5, rtol=1e-4)


def test_glu_hidden_is_parameter_matched():
    gelu, swiglu = tiny_model("gelu"), tiny_model("swiglu")
    n_gelu = sum(p.numel() for p in gelu.blocks[0].mlp.parameters())
    n_swiglu = sum(p.numel() for p in swiglu.blocks[0].mlp.parameters())
    assert abs(n_swiglu - n_gelu) / n_gelu < 0.05  # 3 matrices of 2/3 width ≈ 2 of full width
    assert swiglu.blocks[0].mlp.up.out_features % 8 == 0
    wide = tiny_model("swiglu(hidden=96)")
    assert wide.blocks[0].mlp.up.out_features == 96


def test_untied_head_and_no_bias():
    tied, untied = tiny_model("baseline"), tiny_model("tie=false+bias=false")
    assert tied.head.weight is tied.tok_emb.weight
    assert untied.head.weight is not untied.tok_emb.weight
    assert not any(n.endswith(".bias") for n, _ in untied.named_parameters())


def test_generate_uses_cache_and_runs_past_context():
    model = tiny_model("rope")
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=40,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 43)


def test_learned_positions_refuse_positions_past_their_table_without_a_device_sync():
    model = tiny_model("baseline")
    t = model.dims.context
    with pytest.raises(ValueError, match=f"learned positions cover {t} tokens; got position {t}"):
        model(torch.zeros(1, t + 1, dtype=torch.long))
    caches = model.new_caches(1, t + 4)
    model(torch.zeros(1, t, dtype=torch.long), caches=caches)
    with pytest.raises(ValueError, match="cover"):
        model(torch.zeros(1, 1, dtype=torch.long), caches=caches)
    assert tiny_model("rope").position.max_positions is None  # relative schemes have no table
