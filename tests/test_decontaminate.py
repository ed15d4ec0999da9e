"""Decontamination: pretraining documents sharing an n-gram (13 words by default) with the evaluation
text are dropped; the preparation reports and fingerprints what it removed."""

import numpy as np
import pytest

from ablate.config import RunConfig
from ablate.data import prepare
from ablate.data.decontaminate import NgramFilter
from ablate.errors import AblateError
from ablate.train import prepare_run

EVAL = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity.")


def _doc(i: int) -> str:
    return f"Document number {i} talks about apples pears plums and figs {i} in the orchard {i * 3} today."


@pytest.fixture
def corpus(tmp_path):
    docs = [_doc(i) for i in range(200)]
    # constructed overlaps: 13 consecutive words of the eval text, with other case, punctuation and a line break
    docs[10] = "Intro. IT WAS THE BEST OF TIMES -- it was the worst\nof times, it was the age of; wisdom! Outro."
    docs[50] += " the age of foolishness, it was the epoch of belief, it was the epoch of"  # 13 words, at the end
    # near misses: 12 shared words, and 13 words with one changed
    docs[90] = "it was the best of times it was the worst of times banana"
    docs[120] = "it was the best of times it was the worst of times XYZ was the age of wisdom"
    path = tmp_path / "pre.txt"
    path.write_text("\n\n".join(docs) + "\n")
    against = tmp_path / "eval.txt"
    against.write_text(EVAL + "\n")
    return path, against, docs


def test_the_filter_finds_13_word_overlaps_and_nothing_shorter():
    f = NgramFilter.from_text(EVAL)
    assert f.n == 13
    assert f.contaminated("IT WAS THE BEST OF TIMES, it was the worst of times, it was the age")
    assert not f.contaminated("it was the best of times, it was the worst of times")  # 12 words
    assert not f.contaminated("it was the best of times, it was the worst of times, is it the age")  # one word off
    assert NgramFilter.from_text(EVAL, n=5).contaminated("the epoch of belief, it")


def test_prepare_drops_contaminated_documents_and_reports_them(corpus, tmp_path):
    path, against, docs = corpus
    p = prepare(str(path), "byte", cache_dir=tmp_path / "c", decontaminate=str(against))
    d = p.meta["decontamination"]
    dropped = [docs[10], docs[50]]
    assert d["n"] == 13 and d["removed_documents"] == 2 and d["kept_documents"] == 198
    assert d["removed_bytes"] == sum(len(x.encode()) for x in dropped)
    text = bytes(np.concatenate([p.train, p.val]).astype(np.uint8)).decode()
    assert text == "\n\n".join(x for x in docs if x not in dropped) + "\n"  # the rest, kept whole, 90/10 split
    assert p.meta["split_unit"] == "characters" and "-decon" in p.path.name
    plain = prepare(str(path), "byte", cache_dir=tmp_path / "c")
    assert plain.fingerprint != p.fingerprint  # the data fingerprint records the decontamination
    shorter = prepare(str(path), "byte", cache_dir=tmp_path / "c", decontaminate=str(against), decontaminate_n=20)
    assert shorter.meta["decontamination"]["removed_documents"] == 0 and shorter.fingerprint != p.fingerprint


def test_decontaminating_against_a_datasets_validation_split(corpus, tmp_path):
    path, against, docs = corpus
    # "PATH:val" is the last 10% of the characters of that text: here, only the eval text's tail
    whole = tmp_path / "book.txt"
    whole.write_text("filler words " * 400 + "\n" + EVAL + "\n")
    p = prepare(str(path), "char", cache_dir=tmp_path / "c", decontaminate=f"{whole}:val")
    assert p.meta["decontamination"]["against"] == f"{whole}:val"
    assert 0 < p.meta["decontamination"]["removed_documents"] <= 2


def test_documents_split_with_decontamination(corpus, tmp_path):
    path, against, docs = corpus
    p = prepare(str(path), "byte", cache_dir=tmp_path / "c", split="documents", decontaminate=str(against))
    assert p.meta["train_documents"] + p.meta["val_documents"] == 198
    assert p.meta["decontamination"]["removed_documents"] == 2


def test_run_settings_reach_the_preparation(corpus, tmp_path):
    path, against, _ = corpus
    cfg = RunConfig(size="tiny", context=16, data=str(path), tokenizer="byte", cache_dir=str(tmp_path / "c"),
                    decontaminate=str(against), decontaminate_n=13, batch_size=2, eval_batches=1)
    data = prepare_run(cfg)[3]
    assert data.meta["decontamination"]["removed_documents"] == 2
    assert cfg.fingerprint() != cfg.replace(decontaminate="").fingerprint()


def test_an_eval_text_shorter_than_n_is_a_one_line_error(corpus, tmp_path):
    path, _, _ = corpus
    short = tmp_path / "short.txt"
    short.write_text("too few words here\n")
    with pytest.raises(AblateError, match="fewer than n=13"):
        prepare(str(path), "byte", cache_dir=tmp_path / "c", decontaminate=str(short))


def test_an_unavailable_dataset_to_decontaminate_against_names_the_variable_that_provides_it(corpus, tmp_path,
                                                                                              monkeypatch):
    import urllib.error
    import urllib.request

    from ablate.data import datasets

    def no_network(*a, **k):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv(datasets.TINYSHAKESPEARE_ENV, raising=False)
    path, _, _ = corpus
    with pytest.raises(AblateError) as err:
        prepare(str(path), "byte", cache_dir=tmp_path / "empty-cache", decontaminate="tinyshakespeare:val")
    message = str(err.value)
    assert message.startswith("--decontaminate tinyshakespeare:val: ")
    assert f"set {datasets.TINYSHAKESPEARE_ENV}=PATH" in message and "--data-file" not in message
