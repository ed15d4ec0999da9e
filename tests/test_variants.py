import pytest
import torch

from ablate.errors import AblateError
from ablate.model import build_model, make_dims
from ablate.presets import SIZES
from ablate.registry import REGISTRIES, register
from ablate.slots import MLP, Norm
from ablate.variant import parse_variant


@pytest.mark.parametrize(
    "a,b",
    [
        ("rope+swiglu", "swiglu+rope"),
        ("gqa(kv_heads=2)+rmsnorm+post", "post+rmsnorm+gqa(kv_heads=2)"),
        ("rope(base=10000)", "rope"),
        ("gpt2", "baseline"),
        ("llama", "rope+rmsnorm+swiglu(multiple_of=256)+tie=false+bias=false"),
        ("llama+gqa(kv_heads=4)", "gqa(kv_heads=4)+llama"),
    ],
)
def test_canonical_name_is_order_independent(a, b):
    va, vb = parse_variant(a), parse_variant(b)
    assert va == vb and va.name == vb.name and va.hash == vb.hash


@pytest.mark.parametrize("text", ["baseline", "rope+swiglu", "llama", "palm", "mistral", "vaswani",
                                  "alibi+mqa+rmsnorm(eps=1e-05)+sandwich+relu2+dropout=0.1"])
def test_canonical_name_round_trips(text):
    v = parse_variant(text)
    assert parse_variant(v.name) == v


def test_hash_is_stable_across_sessions():
    # a literal: the hash must not depend on the process, term order or dict ordering
    assert parse_variant("baseline").hash == "7afe0bfc6576"
    assert parse_variant("rope+swiglu").hash == "e87a4cef5468"


def test_preset_then_component_overrides_slot():
    v = parse_variant("llama+gqa(kv_heads=2)")
    assert v["attention"].name == "gqa" and v["position"].name == "rope" and not v.model.tie


def test_to_dict_holds_only_plain_values():
    import json

    d = parse_variant("mistral").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["attention"] == {"component": "gqa", "kv_heads": 2, "qk_norm": False}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("ropee", "did you mean rope"),
        ("rope+alibi", "rope and alibi both fill the position slot"),
        ("rope(bass=1)", "rope has no option 'bass'; its options are: base"),
        ("gqa(kv_heads=two)", "must be int"),
        ("llama+palm", "both presets"),
        ("tie=maybe", "must be bool"),
        ("colour=red", "unknown model option 'colour'"),
        ("rope+", "empty term"),
        ("rope(base=1", "unbalanced"),
        ("llama(x=1)", "takes no options"),
    ],
)
def test_bad_variants_fail_with_a_sentence(text, expected):
    with pytest.raises(AblateError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_variant(text)


def test_impossible_dims_are_user_errors():
    v = parse_variant("gqa(kv_heads=3)")
    with pytest.raises(AblateError, match="must divide"):
        build_model(v, make_dims(SIZES["tiny"], v, 50))


def test_declared_needs_and_conflicts_are_checked_at_resolve_time():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Opts:
        width: int = 4

    @register("mlp", "needs-magic", paper="test", options=Opts, needs=("magic",))
    class NeedsMagic(MLP):
        """Test component that needs a capability nobody provides."""

    @register("mlp", "hates-rope", paper="test", conflicts={"rope": "for testing"})
    class HatesRope(MLP):
        """Test component that conflicts with rope."""

    try:
        with pytest.raises(AblateError, match="needs-magic needs magic"):
            parse_variant("needs-magic")
        with pytest.raises(AblateError, match="hates-rope cannot be combined with rope: for testing"):
            parse_variant("hates-rope+rope")
        parse_variant("hates-rope")  # fine without rope
    finally:
        REGISTRIES["mlp"].remove("needs-magic")
        REGISTRIES["mlp"].remove("hates-rope")


def test_duplicate_names_and_wrong_bases_are_errors():
    with pytest.raises(ValueError, match="already registered"):
        @register("norm", "rope", paper="x")
        class Dup(MLP):
            """dup"""

    with pytest.raises(TypeError, match="does not subclass"):
        @register("norm", "not-a-norm", paper="x")
        class Wrong(MLP):
            """wrong base"""
    assert "not-a-norm" not in REGISTRIES["norm"]


@pytest.mark.parametrize("name, why", [("gpt2", "architecture preset"), ("Bad Name!", "cannot be written"),
                                       ("a/b", "cannot be written"), ("x.toml", "cannot be written"),
                                       ("", "cannot be written")])
def test_a_component_name_a_variant_cannot_reach_is_refused(name, why):
    with pytest.raises(ValueError, match=why):
        @register("norm", name, paper="x")
        class Unreachable(Norm):
            """cannot be named in a variant"""
    assert name not in REGISTRIES["norm"]


def test_variant_file(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text('description = "test"\nvariant = "rope+swiglu"\n')
    (tmp_path / "bad.toml").write_text('variant = 3\n')
    monkeypatch.setenv("ABLATE_VARIANTS_PATH", str(tmp_path))
    assert parse_variant("mine") == parse_variant("rope+swiglu")
    assert parse_variant("mine+rmsnorm").name == "rope+rmsnorm+swiglu"
    with pytest.raises(AblateError, match="must hold"):
        parse_variant("bad")


def test_a_variant_file_is_found_by_its_path(tmp_path, monkeypatch):
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "mine.toml").write_text('variant = "rope+swiglu"\n')
    monkeypatch.chdir(tmp_path)
    for path in ("variants/mine.toml", "./variants/mine.toml", str(tmp_path / "variants" / "mine.toml")):
        assert parse_variant(path) == parse_variant("rope+swiglu")
    assert parse_variant("variants/mine.toml+rmsnorm").name == "rope+rmsnorm+swiglu"
    with pytest.raises(AblateError, match="variant file variants/nosuch.toml not found"):
        parse_variant("variants/nosuch.toml")
    monkeypatch.chdir(tmp_path / "variants")  # elsewhere: the error says where a file of that name was looked for
    with pytest.raises(AblateError, match=f"no variant file {tmp_path / 'variants' / 'variants' / 'mine.toml'} either"):
        parse_variant("mine")


@pytest.mark.parametrize(
    "size,variant,published",
    [
        ("gpt2-small", "gpt2", 124_439_808),  # HF GPT-2 small
        ("llama-7b", "llama", 6_738_415_616),  # LLaMA-1 7B
        ("llama-13b", "llama", 13_015_864_320),  # LLaMA-1 13B
    ],
)
def test_published_parameter_counts(size, variant, published):
    v = parse_variant(variant)
    model = build_model(v, make_dims(SIZES[size], v), device="meta")
    assert sum(p.numel() for p in model.parameters()) == published


def test_accounting_numbers():
    from ablate.accounting import cost

    v = parse_variant("gpt2")
    model = build_model(v, make_dims(SIZES["gpt2-small"], v), device="meta")
    c = cost(model)
    assert c.non_embedding_params == 124_439_808 - 50257 * 768 - 1024 * 768
    assert c.attention_flops_per_token == 12 * 12 * 768 * 1024
    # Kaplan et al. 2020: 6 FLOPs per parameter per token (the tied head counts, the position table does
    # not) plus 12·L·d·T for attention scores: 6 * 123,653,376 + 113,246,208.
    assert c.flops_per_token == 855_166_464
    assert c.kv_cache_bytes_per_token == 2 * 12 * 768 * 2
    mqa = build_model(parse_variant("mqa"), make_dims(SIZES["gpt2-small"], v), device="meta")
    assert cost(mqa).kv_cache_bytes_per_token == c.kv_cache_bytes_per_token // 12


def test_init_seed_is_another_draw_of_the_same_architecture():
    from ablate.testing import TINY
    from ablate.train import init_seed

    base, other = parse_variant("baseline"), parse_variant("init_seed=1")
    assert other.name == "init_seed=1" and base.hash == parse_variant("gpt2").hash  # default leaves hashes alone
    assert base.to_dict()["model"] == {k: v for k, v in other.to_dict()["model"].items() if k != "init_seed"}
    assert init_seed(3, 0) == 3 and init_seed(3, 1) != 3 and init_seed(3, 1) != init_seed(4, 1)
    torch.manual_seed(init_seed(0, 1))
    a = build_model(other, make_dims(TINY, other))
    torch.manual_seed(0)
    b = build_model(base, make_dims(TINY, base))
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert not torch.equal(a.tok_emb.weight, b.tok_emb.weight)
    with pytest.raises(AblateError, match="init_seed=-1 must be 0 or more"):
        parse_variant("init_seed=-1")
