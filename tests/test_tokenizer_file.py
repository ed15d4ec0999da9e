"""A run directory carries its tokenizer (``tokenizer.json``): `ablate sample` and `ablate export` decode
with the tokenizer the model was trained with, from any folder and without the corpus. Before, they
rebuilt it from the corpus path as typed: a relative path failed in another folder, and an edited corpus
silently gave another vocabulary (wrong text, a wrong exported tokenizer)."""

import json

import pytest

from ablate.cli import main
from ablate.data.tokenizer_file import TOKENIZER_FILE, tokenizer_from_state, tokenizer_state
from ablate.data.tokenizers import get_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n" * 40


@pytest.mark.parametrize("spec", ["char", "byte", "bpe:300"])
def test_a_saved_tokenizer_is_rebuilt_exactly(spec, tmp_path):
    tok = get_tokenizer(spec, train_text=TEXT, cache_dir=tmp_path)
    state = json.loads(json.dumps(tokenizer_state(tok)))  # through the file's JSON
    again = tokenizer_from_state(state, tmp_path / "other-cache", tmp_path / TOKENIZER_FILE)
    assert (again.name, again.vocab_size, again.fingerprint) == (tok.name, tok.vocab_size, tok.fingerprint)
    assert again.encode(TEXT[:200]) == tok.encode(TEXT[:200])
    assert not (tmp_path / "other-cache").exists()  # nothing was trained or cached again


def test_gpt2_is_checked_against_its_fingerprint(gpt2_ranks_path, monkeypatch, tmp_path):
    from ablate.errors import AblateError

    monkeypatch.setenv("ABLATE_GPT2_RANKS", str(gpt2_ranks_path))
    tok = get_tokenizer("gpt2", cache_dir=tmp_path)
    state = tokenizer_state(tok)
    assert "ranks" not in state  # GPT-2's 50k ranks are read where training read them
    assert tokenizer_from_state(state, tmp_path, tmp_path / TOKENIZER_FILE).fingerprint == tok.fingerprint
    with pytest.raises(AblateError, match="not the one the run was trained with.*ABLATE_GPT2_RANKS"):
        tokenizer_from_state({**state, "fingerprint": "0" * 16}, tmp_path, tmp_path / TOKENIZER_FILE)


def _sample(run_dir, capsys) -> str:
    assert main(["sample", "--run", str(run_dir), "--prompt", "First", "--tokens", "30"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("tokenizer", ["char", "bpe:300"])
def test_a_run_samples_the_same_from_any_folder_and_after_its_corpus_changed(tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "text.txt").write_text(TEXT * 10)
    assert main(["run", "--size", "tiny", "--context", "32", "--data", "d/text.txt", "--tokenizer", tokenizer,
                 "--budget", "3steps", "--batch-size", "4", "--eval-points", "1", "--eval-batches", "1",
                 "--no-track"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    first = _sample(run_dir, capsys)
    (tmp_path / "d" / "text.txt").write_text((TEXT * 10).replace("e", "~"))  # another vocabulary, same size
    assert _sample(run_dir, capsys) == first
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative --data path means nothing here
    assert _sample(run_dir, capsys) == first
    assert not list(elsewhere.iterdir())  # no data cache written in this folder
    (run_dir / TOKENIZER_FILE).unlink()  # a run made before tokenizers were saved: the data is read again
    monkeypatch.chdir(tmp_path)
    assert main(["sample", "--run", str(run_dir), "--prompt", "First"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ablate: error: "), err
    if tokenizer == "char":  # (the edited text cannot train bpe:300 at all, which is its own one line)
        assert "is not what" in err and "was trained on (it changed since)" in err, err
