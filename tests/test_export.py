"""`ablate export RUN --to hf DIR`: the export loads in `transformers` and computes ablate's logits (GPT-2,
LLaMA, Mistral); variants without a Hugging Face counterpart and user mistakes are one line, exit 2.
The loading tests skip where the optional extra (transformers) is not installed; the refusals run anywhere."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from ablate.cli import main
from ablate.config import RunConfig
from ablate.errors import AblateError
from ablate.export import export_hf, hf_target
from ablate.model import build_model, make_dims
from ablate.presets import get_size
from ablate.train import load_checkpoint_model, train
from ablate.variant import parse_variant

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers", reason="the optional extra ablate[hf] (transformers) is not installed")


@pytest.fixture(scope="module")
def runs(small_corpus, tmp_path_factory):
    """One finished tiny run per variant name asked for (3 steps, char tokenizer), trained once per module."""
    tmp, made = tmp_path_factory.mktemp("export-runs"), {}

    def run(variant: str, **kw) -> Path:
        if (variant, tuple(kw.items())) not in made:
            cfg = RunConfig(variant=variant, size="tiny", context=32, data=str(small_corpus), tokenizer="char",
                            budget="3steps", batch_size=4, eval_points=1, eval_batches=1, log_every=5,
                            out_dir=str(tmp / "runs"), cache_dir=str(tmp / "cache"), **kw)
            result = train(cfg)
            assert result.status == "finished"
            made[variant, tuple(kw.items())] = Path(result.run_dir)
        return made[variant, tuple(kw.items())]

    return run


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ablate: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


@pytest.mark.parametrize("variant,hf_class", [
    ("baseline", "GPT2LMHeadModel"),
    ("llama", "LlamaForCausalLM"),
    ("llama+gqa(kv_heads=2)", "MistralForCausalLM"),  # variants/llama-gqa.toml
])
def test_an_export_loads_in_transformers_and_matches_ablates_logits(hf, runs, tmp_path, capsys, variant, hf_class):
    run_dir, out = runs(variant), tmp_path / "hf"
    assert main(["export", str(run_dir), "--to", "hf", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"as {hf_class}" in printed and str(out) in printed
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= {p.name for p in out.iterdir()}

    theirs = hf.AutoModelForCausalLM.from_pretrained(out)
    ours, _, tokenizer = load_checkpoint_model(run_dir)
    assert type(theirs).__name__ == hf_class
    assert theirs.config.tie_word_embeddings == ours.variant.model.tie
    ids = torch.tensor([tokenizer.encode(TEXT[:32])])  # (1, 32): the whole context
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours(ids)[0], atol=1e-5, rtol=0)
    assert hf.AutoTokenizer.from_pretrained(out)(TEXT)["input_ids"] == tokenizer.encode(TEXT)
    card = (out / "README.md").read_text()
    assert ours.variant.name in card and hf_class in card and str(run_dir) in card


@pytest.mark.parametrize("variant,hf_class", [
    ("bias=false", "GPT2LMHeadModel"),  # zero biases
    ("tie=false", "GPT2LMHeadModel"),
    ("relu2", "GPT2LMHeadModel"),
    ("gelu(hidden=96)", "GPT2LMHeadModel"),
    ("heads", "GPT2LMHeadModel"),  # the lecture's separate Head modules
    ("rope+rmsnorm+swiglu+bias=false", "LlamaForCausalLM"),  # variants/modern-small.toml: tied
    ("rope(base=500)+rmsnorm(eps=1e-5)+geglu", "LlamaForCausalLM"),  # with biases
    ("llama+heads", "LlamaForCausalLM"),
    ("llama+mqa", "MistralForCausalLM"),
    ("rope+rmsnorm+gqa+swiglu", "LlamaForCausalLM"),  # grouped-query with biases: Mistral has none
])
def test_every_exportable_component_maps_exactly(hf, tmp_path, variant, hf_class):
    v = parse_variant(variant)
    model = build_model(v, make_dims(get_size("tiny"), v, vocab_size=70))
    torch.manual_seed(0)
    with torch.no_grad():  # off the init, so norm weights and biases are not ones and zeros
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    done = export_hf(model, tmp_path / "hf")
    assert done.hf_class == hf_class and done.max_logit_gap < 1e-4
    theirs = hf.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 70, (2, 64))
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, model.eval()(ids)[0], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("spec", ["byte", "bpe:300", "gpt2"])
def test_tokenizers_are_written_when_they_reproduce_ablates_ids(hf, spec, offline_text, tmp_path, request,
                                                                monkeypatch):
    from ablate.data.tokenizers import get_tokenizer
    from ablate.export.tokenizer import save_tokenizer

    if spec == "gpt2":
        monkeypatch.setenv("ABLATE_GPT2_RANKS", str(request.getfixturevalue("gpt2_ranks_path")))
    tokenizer = get_tokenizer(spec, train_text=offline_text[:60_000], cache_dir=tmp_path)
    assert save_tokenizer(tokenizer, tmp_path / "tok", context=64)
    theirs = hf.AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = offline_text[100_000:120_000] + " naïve café ☃"
    assert theirs(text)["input_ids"] == tokenizer.encode(text)
    assert theirs.decode(tokenizer.encode(text)) == text
    assert theirs.eos_token_id == tokenizer.eot


@pytest.mark.parametrize("variant,needle", [
    ("alibi", "position alibi (in GPT-2: learned)"),
    ("post", "block post (in GPT-2: pre)"),
    ("lstm", "attention lstm"),
    ("rope", "position rope (in GPT-2: learned)"),
    ("palm", "norm layernorm (in LLaMA/Mistral: rmsnorm); block parallel"),
    ("vaswani", "emb_scale=true"),
    ("mha(qk_norm=true)", "no query/key norm"),
    ("llama+gqa(qk_norm=true)", "no query/key norm"),
])
def test_variants_without_a_counterpart_are_refused_by_slot(variant, needle):
    v = parse_variant(variant)
    with pytest.raises(AblateError) as err:
        hf_target(v, make_dims(get_size("tiny"), v, vocab_size=70))
    text = str(err.value)
    assert needle in text and "exportable: baseline/gpt2" in text and "\n" not in text


@pytest.mark.parametrize("variant,needle", [("alibi", "position alibi"), ("post", "block post")])
def test_the_cli_refuses_in_one_line_and_writes_nothing(runs, tmp_path, capsys, monkeypatch, variant, needle):
    monkeypatch.setitem(sys.modules, "transformers", None)  # a refusal never asks for the extra
    assert main(["export", str(runs(variant)), "--to", "hf", str(tmp_path / "hf")]) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "hf").exists()


def test_user_mistakes_are_one_line_with_exit_2(runs, tmp_path, capsys, monkeypatch, mlflow_uri):
    run_dir = runs("baseline")
    out = tmp_path / "hf"
    assert main(["export", str(tmp_path / "nowhere"), "--to", "hf", str(out)]) == 2
    _one_line_error(capsys, "no run directory")
    assert main(["export", "deadbeef", "--to", "hf", str(out)]) == 2  # neither a folder nor a run id
    _one_line_error(capsys, "not an MLflow run id, which is 32 hex characters")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert main(["export", "0" * 32, "--to", "hf", str(out)]) == 2
    _one_line_error(capsys, f"export {'0' * 32}: ")  # no such run, or no store yet: either way one line
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text((run_dir / "config.json").read_text())
    assert main(["export", str(tmp_path / "bare"), "--to", "hf", str(out)]) == 2
    _one_line_error(capsys, "no checkpoint in")
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), "--to", "hf", str(out)]) == 2
    _one_line_error(capsys, "exists and is not empty")
    assert main(["export", str(run_dir), "--to", "hf", str(out / "notes.txt")]) == 2
    _one_line_error(capsys, "is a file")
    assert main(["export", str(run_dir), "--to", "hf", str(out / "notes.txt" / "sub")]) == 2  # a file on the way
    _one_line_error(capsys, "is a file, not a folder")
    assert main(["export", str(run_dir), "--to", "hf", "/proc/no-such/out"]) == 2  # folders cannot be made there
    _one_line_error(capsys, "cannot create folders in /proc")
    config = (run_dir / "config.json").read_bytes()
    for target in (run_dir, run_dir / "."):  # the run's own folder: its config.json would be overwritten
        assert main(["export", str(run_dir), "--to", "hf", str(target), "--force"]) == 2
        _one_line_error(capsys, "is a run directory (it holds checkpoint.pt)")
    assert (run_dir / "config.json").read_bytes() == config
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the extra were not installed
    assert main(["export", str(run_dir), "--to", "hf", str(tmp_path / "new")]) == 2
    _one_line_error(capsys, "install the extra: pip install 'ablate[hf]'")
    assert not (tmp_path / "new").exists()


def test_force_writes_into_a_non_empty_folder_and_keeps_other_files(hf, runs, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(runs("baseline")), "--to", "hf", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    blocked = tmp_path / "blocked"
    (blocked / "model.safetensors").mkdir(parents=True)  # a folder where a file goes: nothing is half-replaced
    (blocked / "config.json").write_text("{}")
    assert main(["export", str(runs("baseline")), "--to", "hf", str(blocked), "--force"]) == 2
    assert "has a folder where the export writes a file (model.safetensors)" in capsys.readouterr().err
    assert (blocked / "config.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_mlflow_run_id_is_resolved_as_ablate_sample_does(hf, runs, tmp_path, monkeypatch, capsys):
    """The id goes through `ablate sample --run`'s resolution (``ablate.init_from.resolve_parent``, tested
    against a real MLflow store in test_track.py); here it answers without one, which keeps this file fast."""
    import ablate.init_from

    run_dir, asked = runs("llama"), []

    def resolve(spec, cache_dir):
        asked.append(spec)
        return ablate.init_from.Parent(spec, run_dir, {}, {})

    monkeypatch.setattr(ablate.init_from, "resolve_parent", resolve)
    run_id = "0123456789abcdef" * 2
    assert main(["export", run_id, "--to", "hf", str(tmp_path / "hf")]) == 0
    assert asked == [run_id] and "as LlamaForCausalLM" in capsys.readouterr().out
    assert hf.AutoConfig.from_pretrained(tmp_path / "hf").model_type == "llama"


def test_exporting_an_unfinished_run_says_so(hf, runs, tmp_path, capsys):
    assert main(["export", str(runs("baseline")), "--to", "hf", str(tmp_path / "done")]) == 0
    assert "note:" not in capsys.readouterr().out  # a finished run: nothing to add
    assert "with no unknown token" in (tmp_path / "done" / "README.md").read_text()  # char: the card warns
    run_dir = tmp_path / "stopped"
    shutil.copytree(runs("baseline"), run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps({**result, "status": "interrupted", "steps": 2}))
    assert main(["export", str(run_dir), "--to", "hf", str(tmp_path / "hf")]) == 0
    note = capsys.readouterr().out.splitlines()[-1]
    assert note.startswith("note: the run was interrupted at step 2") and "--resume" in note, note
    assert "interrupted after 2 steps" in (tmp_path / "hf" / "README.md").read_text()  # and the model card
    (run_dir / "result.json").unlink()  # killed with SIGKILL: no result at all, only the checkpoint
    assert main(["export", str(run_dir), "--to", "hf", str(tmp_path / "killed")]) == 0
    note = capsys.readouterr().out.splitlines()[-1]
    assert note.startswith("note: the run has not finished (killed, or still training) at step 3"), note
    assert "unfinished after 3 steps" in (tmp_path / "killed" / "README.md").read_text()
