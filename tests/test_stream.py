"""Streaming preparation (ablate.data.stream): equals the in-memory preparation token for token where
both apply (the 90/10 character split), and holds out whole documents by hash otherwise."""

import re

import numpy as np
import pytest

from ablate.data import stream
from ablate.data.prepare import prepare, prepare_streaming
from ablate.data.tokenizers import get_tokenizer
from ablate.errors import AblateError


@pytest.fixture
def small_chunks(monkeypatch):
    """Tiny read blocks, encode chunks and document buffers, so a small corpus crosses every boundary."""
    monkeypatch.setattr(stream, "BLOCK_BYTES", 777)
    monkeypatch.setattr(stream, "CHUNK_CHARS", 5000)
    monkeypatch.setattr(stream, "DOC_CHARS", 3000)


@pytest.fixture(scope="module")
def sources(offline_text, tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-src")
    text = offline_text[:150_000] + "é€😀\n\n\n"
    one = root / "one.txt"
    one.write_text(text)
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("\ufeff" + text[:50_000] + "\n\n\n")  # BOM, trailing newlines
    (folder / "b.txt").write_text("")  # an empty file still adds its blank line, as in memory
    (folder / "sub" / "c.txt").write_text(text[50_000:])
    return {"file": one, "folder": folder, "text": text}


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("tok", ["char", "byte", "bpe:300", "gpt2"])
def test_streamed_tail_split_equals_the_in_memory_preparation(sources, kind, tok, tmp_path, small_chunks,
                                                              request, monkeypatch):
    if tok == "gpt2":
        monkeypatch.setenv("ABLATE_GPT2_RANKS", str(request.getfixturevalue("gpt2_ranks_path")))
    whole = prepare(str(sources[kind]), tok, cache_dir=tmp_path / "memory")
    streamed = prepare_streaming(stream.open_source(sources[kind]), tok, tmp_path / "stream", stream.Plan("tail"))
    assert np.array_equal(whole.train, streamed.train) and np.array_equal(whole.val, streamed.val)
    drop = lambda m: {k: v for k, v in m.items() if k != "origin"}  # noqa: E731
    assert drop(whole.meta) == drop(streamed.meta)  # same fingerprint, counts and split
    assert whole.path.name == streamed.path.name  # and the same cache folder


def _documents(text: str) -> list[str]:
    """Blocks between blank lines, stripped of newlines, whitespace-only blocks dropped (the definition)."""
    return [d.strip("\n") for d in re.split(r"\n\n+", text) if d.strip()]


def test_held_out_documents_equal_a_direct_tokenization(sources, tmp_path, small_chunks):
    p = prepare_streaming(stream.open_source(sources["file"]), "char", tmp_path, stream.Plan("documents"))
    docs = _documents(sources["text"])
    val = [d for d in docs if stream.is_val(d)]
    train = [d for d in docs if not stream.is_val(d)]
    assert p.meta["split_unit"] == "documents" and p.path.name.endswith("-docs")
    assert (p.meta["train_documents"], p.meta["val_documents"]) == (len(train), len(val))
    assert 0.05 < len(val) / len(docs) < 0.15
    tok = p.tokenizer
    assert tok.chars == "".join(sorted(set(sources["text"]) - {"\ufeff"}))
    assert np.array_equal(p.train, tok.encode_array("\n\n".join(train) + "\n"))
    assert np.array_equal(p.val, tok.encode_array("\n\n".join(val) + "\n"))


def test_a_folder_holds_out_whole_files(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = [f"file {i}\n\nhas a blank line inside, {i * 7}\n" for i in range(60)]
    for i, t in enumerate(texts):
        (folder / f"{i:03d}.txt").write_text(t)
    p = prepare(str(folder), "byte", cache_dir=tmp_path / "c", split="documents")
    val = [t.rstrip("\n") for t in texts if stream.is_val(t.rstrip("\n"))]
    train = [t.rstrip("\n") for t in texts if not stream.is_val(t.rstrip("\n"))]
    assert val and (p.meta["train_documents"], p.meta["val_documents"]) == (len(train), len(val))
    assert bytes(p.val.astype(np.uint8)).decode() == "\n\n".join(val) + "\n"
    assert bytes(p.train.astype(np.uint8)).decode() == "\n\n".join(train) + "\n"


def test_the_held_out_set_does_not_depend_on_the_rest_of_the_corpus(sources, tmp_path):
    full = prepare_streaming(stream.open_source(sources["file"]), "byte", tmp_path, stream.Plan("documents"))
    half = tmp_path / "half.txt"
    half.write_text(sources["text"][: len(sources["text"]) // 2].rsplit("\n\n", 1)[0] + "\n")
    part = prepare_streaming(stream.open_source(half), "byte", tmp_path, stream.Plan("documents"))
    held = set(bytes(full.val.astype(np.uint8)).decode().split("\n\n"))
    assert set(bytes(part.val.astype(np.uint8)).decode().split("\n\n")) <= held | {""} | {d + "\n" for d in held}


def test_auto_streams_large_corpora_by_documents(sources, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules["ablate.data.prepare"], "STREAM_BYTES", 10_000)
    p = prepare(str(sources["file"]), "byte", cache_dir=tmp_path)
    assert p.meta["split_unit"] == "documents"
    q = prepare(str(sources["file"]), "byte", cache_dir=tmp_path, split="tail")  # the user can keep the tail
    assert q.meta["split_unit"] == "characters"
    with pytest.raises(AblateError, match="unknown val_split"):
        prepare(str(sources["file"]), "byte", cache_dir=tmp_path, split="random")


def test_a_streamed_cache_is_reused_and_rebuilt_when_damaged(sources, tmp_path):
    src = stream.open_source(sources["file"])
    a = prepare_streaming(src, "byte", tmp_path, stream.Plan("documents"))
    (a.path / "val.bin").write_bytes(b"\0\0")  # damaged: sizes no longer match meta.json
    b = prepare_streaming(src, "byte", tmp_path, stream.Plan("documents"))
    assert b.meta == a.meta and len(b.val) == a.meta["val_tokens"]
    assert not list(a.path.glob(".*.tmp"))


def test_bad_utf8_in_a_large_file_names_the_offset(tmp_path, small_chunks):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"x" * 2000 + b"\xff" + b"y" * 10)
    with pytest.raises(AblateError, match="offset 2000"):
        prepare_streaming(stream.open_source(f), "byte", tmp_path, stream.Plan("tail"))


def test_long_lines_without_safe_cuts_still_encode(sources, tmp_path, small_chunks):
    f = tmp_path / "long.txt"  # one line of 40,000 characters: cut at 4 chunks, still lossless
    f.write_text(" ".join(sources["text"].split())[:40_000] + "\n" + sources["text"][:20_000])
    p = prepare_streaming(stream.open_source(f), "bpe:300", tmp_path, stream.Plan("tail"))
    tok = get_tokenizer("bpe:300", train_text=f.read_text()[: p.meta["train_chars"]], cache_dir=tmp_path)
    assert tok.decode(p.train.tolist()) + tok.decode(p.val.tolist()) == f.read_text()
