"""Tokenizers: char, byte, gpt2 (from a local rank file, never downloaded here) and trained bpe:N."""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter

import pytest
import regex
import tiktoken

from ablate.data import bpe
from ablate.data import tokenizers as tk
from ablate.data.tokenizers import get_tokenizer, split_for_batch
from ablate.errors import AblateError

UNSEEN = "Ünïcödé — 東京 🙂 tabs\tand  spaces\n\n\nend <|endoftext|> 12345"


def varied_text(n_words: int = 3000, seed: int = 0) -> str:
    """Made-up words: enough distinct pairs to train a few hundred merges."""
    rng = random.Random(seed)
    syllables = ["an", "be", "cor", "dus", "el", "fra", "gi", "ho", "ist", "ju", "ka", "lo", "mer", "no"]
    lines = []
    for _ in range(n_words // 10):
        words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(10)]
        lines.append(" ".join(words) + rng.choice([".", ",", ";", "!", "?"]))
    return "\n".join(lines) + "\n"


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """No test may reach tiktoken's download; the gpt2 tests give it a local rank file."""
    monkeypatch.delenv(tk.GPT2_RANKS_ENV, raising=False)

    def refuse(name, *a, **k):
        raise ConnectionError(f"test refused to download {name}")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)


@pytest.fixture(scope="module")
def tiny_text(tinyshakespeare_path) -> str:
    return tinyshakespeare_path.read_text("utf-8")


# ------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize("spec", ["bpe:abc", "bpe:100", "bpe:256", "foo", "", "bpe:", "bpe:-5", "gpt-2"])
def test_bad_spec_lists_valid_specs(spec, tmp_path):
    with pytest.raises(AblateError) as e:
        get_tokenizer(spec, train_text="hello", cache_dir=tmp_path)
    msg = str(e.value)
    assert "char, byte, gpt2, bpe:N" in msg and "\n" not in msg


def test_specs_are_canonical(tmp_path):
    assert tk.canonical_spec(" BPE:300 ") == "bpe:300"
    assert get_tokenizer("Byte", cache_dir=tmp_path).name == "byte"


@pytest.mark.parametrize("spec", ["char", "bpe:300"])
def test_trained_tokenizers_need_text(spec, tmp_path):
    with pytest.raises(AblateError, match="training text"):
        get_tokenizer(spec, cache_dir=tmp_path)


# ------------------------------------------------------------------------------ byte / char


def test_byte_roundtrip(tmp_path):
    tok = get_tokenizer("byte", cache_dir=tmp_path)
    assert (tok.vocab_size, tok.eot, tok.name) == (256, None, "byte")
    ids = tok.encode(UNSEEN)
    assert ids == list(UNSEEN.encode("utf-8"))
    assert tok.decode(ids) == UNSEEN
    assert tok.encode_array(UNSEEN).tolist() == ids
    assert not list(tmp_path.iterdir())  # nothing to cache


def test_char_vocab_roundtrip_and_cache(tmp_path, monkeypatch):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    tok = get_tokenizer("char", train_text=text, cache_dir=tmp_path)
    assert tok.name == "char" and tok.eot is None
    assert tok.chars == "".join(sorted(set(text)))
    assert tok.vocab_size == len(set(text))
    assert tok.encode("\n") == [0]  # sorted: newline first, as in the lecture
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode_array(text).tolist() == ids
    cached = list((tmp_path / "tokenizers").glob("char-*.json"))
    assert len(cached) == 1
    # A second build reads the stored vocabulary instead of deriving it again.
    monkeypatch.setattr(tk.CharTokenizer, "from_text", classmethod(lambda cls, t: pytest.fail("rebuilt")))
    again = get_tokenizer("char", train_text=text, cache_dir=tmp_path)
    assert again.chars == tok.chars and again.fingerprint == tok.fingerprint


def test_char_rejects_unknown_characters(tmp_path):
    tok = get_tokenizer("char", train_text="abc", cache_dir=tmp_path)
    with pytest.raises(AblateError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(AblateError, match="'z'"):
        tok.encode_array("abz")


def test_char_damaged_cache_is_rebuilt(tmp_path):
    text = "hello world"
    path = tk.char_cache_path(tmp_path, tk.sha256_text(text))
    path.parent.mkdir(parents=True)
    path.write_text('{"kind": "char", "ch')  # a torn write from some other tool
    tok = get_tokenizer("char", train_text=text, cache_dir=tmp_path)
    assert tok.decode(tok.encode(text)) == text
    assert "chars" in path.read_text()


# ------------------------------------------------------------------------------------- gpt2


def test_gpt2_from_env_rank_file(tmp_path, monkeypatch, gpt2_ranks_path):
    monkeypatch.setenv(tk.GPT2_RANKS_ENV, str(gpt2_ranks_path))
    tok = get_tokenizer("gpt2", cache_dir=tmp_path)
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.name, tok.vocab_size, tok.eot) == ("gpt2", 50257, 50256)
    assert isinstance(tok.encoding, tiktoken.Encoding)
    assert tok.decode(tok.encode(UNSEEN)) == UNSEEN
    # Text that happens to spell the special token is encoded as ordinary text.
    assert 50256 not in tok.encode("<|endoftext|>")


def test_gpt2_from_cache_dir(tmp_path, gpt2_ranks_path):
    shutil.copy(gpt2_ranks_path, tmp_path / "gpt2.tiktoken")
    tok = get_tokenizer("gpt2", cache_dir=tmp_path)
    assert tok.encode("Hello world") == [15496, 995]


def test_gpt2_offline_explains_how_to_provide_the_file(tmp_path):
    with pytest.raises(AblateError) as e:
        get_tokenizer("gpt2", cache_dir=tmp_path)
    msg = str(e.value)
    assert "offline" in msg and "ABLATE_GPT2_RANKS=" in msg and "gpt2.tiktoken" in msg
    assert "bpe:N" in msg and "\n" not in msg


def test_gpt2_env_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(tk.GPT2_RANKS_ENV, str(tmp_path / "missing.tiktoken"))
    with pytest.raises(AblateError, match="not a file"):
        get_tokenizer("gpt2", cache_dir=tmp_path)


def test_gpt2_rejects_a_file_that_is_not_gpt2(tmp_path, monkeypatch):
    fake = tmp_path / "fake.tiktoken"
    fake.write_bytes(bpe.dump_ranks(bpe.train_bpe(varied_text(), 270)))
    monkeypatch.setenv(tk.GPT2_RANKS_ENV, str(fake))
    with pytest.raises(AblateError, match="not GPT-2's"):
        get_tokenizer("gpt2", cache_dir=tmp_path)


# -------------------------------------------------------------------------------------- bpe


def naive_bpe(text: str, vocab_size: int) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]]]:
    """Textbook BPE: recount every pair of every chunk occurrence after every merge."""
    chunks = [list(s.encode("utf-8")) for s in regex.findall(bpe.GPT2_PATTERN, text)]
    vocab = [bytes([i]) for i in range(256)]
    index = {t: i for i, t in enumerate(vocab)}
    merges = []
    while len(vocab) < vocab_size - 1:
        counts = Counter()
        for c in chunks:
            counts.update(zip(c, c[1:]))
        assert counts, "ran out of pairs"
        a, b = min(counts, key=lambda p: (-counts[p], vocab[p[0]], vocab[p[1]]))
        merges.append((vocab[a], vocab[b]))
        merged = vocab[a] + vocab[b]
        if merged not in index:
            index[merged] = len(vocab)
            vocab.append(merged)
        new = index[merged]
        out = []
        for c in chunks:
            m, i = [], 0
            while i < len(c):
                if i + 1 < len(c) and c[i] == a and c[i + 1] == b:
                    m.append(new)
                    i += 2
                else:
                    m.append(c[i])
                    i += 1
            out.append(m)
        chunks = out
    return {t: i for i, t in enumerate(vocab)}, merges


def _fast(text: str, vocab_size: int):
    tokens, merges = bpe.learn_merges(bpe.count_chunks(text), vocab_size - 1)
    return {t: i for i, t in enumerate(tokens)}, merges


def test_bpe_matches_naive_reference_on_shakespeare(offline_text):
    text = offline_text[:8000]
    ranks, merges = _fast(text, 420)
    ref_ranks, ref_merges = naive_bpe(text, 420)
    assert merges == ref_merges
    assert ranks == ref_ranks == bpe.train_bpe(text, 420)
    assert len(ranks) == 419


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpe_matches_naive_reference_with_ties_and_runs(seed):
    # A two-letter alphabet gives many equal counts (tie-breaks) and runs like "aaaa" (overlaps).
    rng = random.Random(seed)
    words = ["".join(rng.choice("ab") for _ in range(rng.randint(1, 9))) for _ in range(150)]
    text = " ".join(words) + " aaaaaaa bbbbbb abababab"
    ranks, merges = _fast(text, 256 + 60)
    assert (ranks, merges) == naive_bpe(text, 256 + 60)


def test_bpe_tokenizer_roundtrip_and_shape(tmp_path):
    text = varied_text()
    tok = get_tokenizer("bpe:300", train_text=text, cache_dir=tmp_path)
    assert (tok.name, tok.vocab_size, tok.eot) == ("bpe:300", 300, 299)
    assert isinstance(tok.encoding, tiktoken.Encoding)
    assert tok.encoding.encode("<|endoftext|>", allowed_special="all") == [299]
    for s in (text, UNSEEN, ""):
        ids = tok.encode(s)
        assert all(0 <= i < 299 for i in ids)
        assert tok.decode(ids) == s
    assert len(tok.encode(text)) < len(text.encode()) / 2.5  # it learned something


def test_bpe_cache_is_reused_and_keyed(tmp_path, monkeypatch):
    text = "to be or not to be, that is the question\n" * 20
    first = get_tokenizer("bpe:280", train_text=text, cache_dir=tmp_path)
    files = sorted((tmp_path / "tokenizers").glob("bpe280-*.tiktoken"))
    assert len(files) == 1
    assert not list((tmp_path / "tokenizers").glob(".*"))  # no temp files left
    monkeypatch.setattr(bpe, "train_bpe", lambda *a: pytest.fail("retrained despite cache"))
    second = get_tokenizer("bpe:280", train_text=text, cache_dir=tmp_path)
    assert second.fingerprint == first.fingerprint
    assert second.encode(text) == first.encode(text)
    monkeypatch.undo()
    get_tokenizer("bpe:270", train_text=text, cache_dir=tmp_path)
    get_tokenizer("bpe:280", train_text=text + "!", cache_dir=tmp_path)
    assert len(list((tmp_path / "tokenizers").glob("bpe*.tiktoken"))) == 3


def test_bpe_damaged_cache_is_retrained(tmp_path):
    text = "to be or not to be, that is the question\n" * 20
    first = get_tokenizer("bpe:280", train_text=text, cache_dir=tmp_path)
    (path,) = (tmp_path / "tokenizers").glob("bpe280-*.tiktoken")
    path.write_bytes(path.read_bytes()[:100])
    again = get_tokenizer("bpe:280", train_text=text, cache_dir=tmp_path)
    assert again.fingerprint == first.fingerprint


def test_bpe_is_deterministic_across_caches(tmp_path):
    text = varied_text(seed=1)
    a = get_tokenizer("bpe:320", train_text=text, cache_dir=tmp_path / "a")
    b = get_tokenizer("bpe:320", train_text=text, cache_dir=tmp_path / "b")
    assert a.fingerprint == b.fingerprint
    assert (tmp_path / "a" / "tokenizers").iterdir().__next__().read_bytes() == \
        (tmp_path / "b" / "tokenizers").iterdir().__next__().read_bytes()


def test_bpe_too_little_text(tmp_path):
    with pytest.raises(AblateError, match="at most bpe:"):
        get_tokenizer("bpe:5000", train_text="abc abc", cache_dir=tmp_path)


def test_bpe_4096_on_a_megabyte_of_shakespeare_is_fast(offline_text, tmp_path):
    tiny_text = offline_text[:1_115_394]  # Tiny Shakespeare's size
    start = time.perf_counter()
    tok = get_tokenizer("bpe:4096", train_text=tiny_text, cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"bpe:4096 took {elapsed:.1f} s"  # about 0.5 s on a laptop core
    assert tok.vocab_size == 4096
    sample = tiny_text[:2000]
    assert tok.decode(tok.encode(sample)) == sample


# --------------------------------------------------------------------------- batch encoding


def test_split_for_batch_cuts_only_at_safe_points():
    text = "a b\n\n  c\n \nd\n" * 50 + "tail"
    pieces = split_for_batch(text, 7)
    assert "".join(pieces) == text and len(pieces) > 10
    for p in pieces[1:]:
        assert p.startswith("\n")
    for prev in pieces[:-1]:
        assert not prev[-1].isspace()


def test_batched_encoding_equals_whole_encoding(tiny_text, tmp_path, monkeypatch, gpt2_ranks_path):
    monkeypatch.setenv(tk.GPT2_RANKS_ENV, str(gpt2_ranks_path))
    gpt2 = get_tokenizer("gpt2", cache_dir=tmp_path)
    trained = get_tokenizer("bpe:600", train_text=tiny_text[:50000], cache_dir=tmp_path)
    tricky = "x\n\n\ny  \n z\t\n\nw" * 3000  # whitespace runs around newlines
    for tok in (gpt2, trained):
        for text in (tiny_text, tricky):
            assert tok.encode_array(text).tolist() == tok.encode(text)
    assert len(gpt2.encode_array(tiny_text)) == 338025  # nanoGPT's count for Tiny Shakespeare


def test_a_bad_rank_file_named_by_the_user_is_never_to_be_deleted(tmp_path, monkeypatch):
    """The message told the user to delete their own file; it now says where to point the variable."""
    bad = tmp_path / "small.txt"
    bad.write_text("not a rank file\n")
    monkeypatch.setenv("ABLATE_GPT2_RANKS", str(bad))
    with pytest.raises(AblateError) as err:
        get_tokenizer("gpt2", cache_dir=tmp_path)
    assert "point ABLATE_GPT2_RANKS at GPT-2's gpt2.tiktoken" in str(err.value) and "delete" not in str(err.value)


def test_a_budget_under_one_step_says_so():
    from ablate.budget import parse_budget

    with pytest.raises(AblateError, match="is less than one step"):
        parse_budget("0.5steps")
    with pytest.raises(AblateError, match="is empty"):
        parse_budget("0steps")
