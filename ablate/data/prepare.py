"""Tokenised train/val arrays on disk: ``prepare(data, tokenizer, cache_dir=...) -> Prepared``.

The corpus is split by characters, the first 90% for training and the last 10% for validation (for
Tiny Shakespeare 1,003,854 / 111,540 characters, as in nanoGPT), and each part is tokenised on its
own. The ``char`` vocabulary is built from the whole text (so every validation character has a
token); a ``bpe:N`` vocabulary is trained on the training part only (it is byte-level, so the
validation text is still fully covered).

Cache layout, one folder per (dataset, tokenizer, source text)::

    <cache_dir>/<dataset-slug>-<tokenizer-slug>-<sha256[:12]>/
        train.bin   token ids, raw little-endian uint16 (uint32 if the vocabulary needs it)
        val.bin
        meta.json   written last: the commit marker

Every file is written to a temporary name and moved into place. ``meta.json`` is removed before a
rebuild and written only after both arrays are in place, and on reading it must match the corpus,
the tokenizer (by fingerprint) and the array sizes; a folder without such a ``meta.json`` (a crash
mid-build, a damaged file) is rebuilt. A lock file in the folder makes concurrent workers build it
once.

Corpora larger than memory are streamed (``ablate.data.stream``): a file or folder of at least
``STREAM_BYTES`` (256 MiB), a Hugging Face dataset (``hf:NAME[:CONFIG]``, ``ablate.data.hf``), any
``split="documents"`` preparation and any decontaminated one. The
``split`` setting: ``auto`` (the 90/10 character split below ``STREAM_BYTES``, held-out documents at
or above it), ``tail`` (always the 90/10 character split; streamed, it equals the in-memory result
token for token and shares its cache folder) or ``documents`` (a fixed held-out set of documents).
The folder name then ends in ``-docs`` and/or ``-decon<hash>``, and ``meta.json`` records the
documents per split and what decontamination removed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablate.fileio import file_digest, atomic_write, atomic_write_text, file_lock, remove_stale_tmp, sha256_text
from ablate.data import stream
from ablate.data.datasets import Corpus, load_text
from ablate.data.tokenizers import CharTokenizer, Tokenizer, canonical_spec, get_tokenizer, parse_spec
from ablate.errors import AblateError

FORMAT_VERSION = 1
TRAIN_FRACTION = 0.9
META_FILE = "meta.json"
LOCK_FILE = ".lock"

# The keys whose values define the prepared data; ``fingerprint`` is a hash of exactly these.
FINGERPRINT_KEYS = (
    "format", "dataset", "source_sha256", "source_bytes", "source_chars",
    "tokenizer", "tokenizer_fingerprint", "vocab_size", "eot", "dtype",
    "split", "split_unit", "train_chars", "val_chars", "train_bytes", "val_bytes",
    "train_tokens", "val_tokens",
)
# keys only some preparations have (streamed by documents, decontaminated): hashed when present
OPTIONAL_FINGERPRINT_KEYS = ("train_documents", "val_documents", "decontamination", "tokenizer_sample_chars")
STREAM_BYTES = 256 << 20  # files and folders at least this large are streamed
SPLITS = ("auto", "tail", "documents")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def split_text(text: str, train_fraction: float = TRAIN_FRACTION) -> tuple[str, str]:
    n = int(len(text) * train_fraction)
    return text[:n], text[n:]


def meta_fingerprint(meta: dict) -> str:
    keys = FINGERPRINT_KEYS + tuple(k for k in OPTIONAL_FINGERPRINT_KEYS if k in meta)
    payload = json.dumps({k: meta[k] for k in keys}, sort_keys=True, ensure_ascii=True)
    return sha256_text(payload)[:16]


def content_key(meta: dict) -> str:
    """What the data *is*, wherever it lies: a task's held-out problems, or the fingerprint's keys but the
    dataset's name (for a local file, its absolute path: a moved folder is the same data). For checking that
    a run or study continues on the data it started on."""
    if meta.get("problems_fingerprint"):
        return str(meta["problems_fingerprint"])
    if not meta.get("source_sha256"):
        return str(meta.get("fingerprint", ""))
    keys = [k for k in (*FINGERPRINT_KEYS, *OPTIONAL_FINGERPRINT_KEYS) if k in meta and k != "dataset"]
    return sha256_text(json.dumps({k: meta[k] for k in keys}, sort_keys=True, ensure_ascii=True))[:16]


@dataclass(frozen=True)
class Prepared:
    """Token arrays for one dataset and tokenizer, memory-mapped read-only from the cache."""

    train: np.memmap
    val: np.memmap
    tokenizer: Tokenizer
    vocab_size: int
    meta: dict = field(repr=False)
    path: Path

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def val_bytes_per_token(self) -> float:
        """UTF-8 bytes of validation text per validation token.

        Bits per byte from a per-token loss in nats: ``loss / ln(2) / val_bytes_per_token``.
        """
        return self.meta["val_bytes"] / self.meta["val_tokens"]

    def bits_per_byte(self, loss_nats_per_token: float) -> float:
        return loss_nats_per_token / math.log(2) / self.val_bytes_per_token


def _tokenizer_slug(spec: str) -> str:
    return spec.replace(":", "")


def _read_meta(folder: Path, expected: dict) -> dict | None:
    """The folder's meta.json if it is complete and matches ``expected``; else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text("utf-8"))
        if not isinstance(meta, dict):
            return None
        for k, v in expected.items():
            if meta.get(k) != v:
                return None
        if meta.get("fingerprint") != meta_fingerprint(meta):
            return None
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in ("train", "val"):
            n = meta[f"{split}_tokens"]
            if not isinstance(n, int) or n <= 0 or (folder / f"{split}.bin").stat().st_size != n * itemsize:
                return None
            if meta.get("digests", {}).get(split) != file_digest(folder / f"{split}.bin"):
                return None  # overwritten or damaged since it was written: build it again
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _write_array(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    atomic_write(path, lambda f: f.write(memoryview(arr).cast("B")))


def _finish_meta(meta: dict, folder: Path, origin: str) -> dict:
    """Complete a built folder's metadata (bytes per val token, fingerprint, origin, the token files'
    digests) and write it last: its presence is what marks the folder ready."""
    meta["val_bytes_per_token"] = meta["val_bytes"] / meta["val_tokens"]
    meta["fingerprint"] = meta_fingerprint(meta)
    meta["origin"] = origin  # informative only, not part of the fingerprint
    meta["digests"] = {split: file_digest(folder / f"{split}.bin") for split in ("train", "val")}
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def _build(folder: Path, corpus: Corpus, tok: Tokenizer, expected: dict,
           train_text: str, val_text: str) -> dict:
    (folder / META_FILE).unlink(missing_ok=True)  # from here on the folder is "not ready"
    remove_stale_tmp(folder)
    dtype = token_dtype(tok.vocab_size)
    arrays = {}
    for split, text in (("train", train_text), ("val", val_text)):
        ids = tok.encode_array(text)
        if ids.size == 0:
            raise AblateError(
                f"the {split} split of {corpus.name!r} has no tokens; give a larger corpus"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= tok.vocab_size:  # pragma: no cover - a bug
            raise RuntimeError(f"tokenizer {tok.name} produced ids outside [0, {tok.vocab_size})")
        arrays[split] = ids.astype(dtype)
    for split, arr in arrays.items():
        _write_array(folder / f"{split}.bin", arr)
    meta = dict(expected)
    meta.update(
        split={"train": TRAIN_FRACTION, "val": round(1 - TRAIN_FRACTION, 10)},
        split_unit="characters",
        train_chars=len(train_text),
        val_chars=len(val_text),
        train_bytes=len(train_text.encode("utf-8")),
        val_bytes=len(val_text.encode("utf-8")),
        train_tokens=int(arrays["train"].size),
        val_tokens=int(arrays["val"].size),
    )
    return _finish_meta(meta, folder, corpus.origin)


def prepare(data: str, tokenizer: str, *, cache_dir: Path, data_file: Path | None = None, split: str = "auto",
            decontaminate: str = "", decontaminate_n: int = 13) -> Prepared:
    """Load ``data``, tokenise it with ``tokenizer`` and return the (cached) train/val arrays.

    ``split`` and streaming: see the module docstring; ``decontaminate`` names an evaluation text
    (see ``ablate.data.decontaminate``) whose ``decontaminate_n``-word n-grams no kept document shares."""
    spec = canonical_spec(tokenizer)  # a bad spec fails before any data is read
    kind, _ = parse_spec(spec)
    cache_dir = Path(cache_dir)
    if split not in SPLITS:
        raise AblateError(f"unknown val_split {split!r}; choose one of {', '.join(SPLITS)}")
    ngrams = None
    if decontaminate:
        ngrams = decontamination_filter(decontaminate, decontaminate_n, cache_dir)
    source = _stream_source(data, data_file)
    if source is not None:
        big = source.kind == "records" or source.n_bytes_on_disk() >= STREAM_BYTES
        mode = split if split != "auto" else ("documents" if big else "tail")
        if big or mode == "documents" or ngrams is not None:
            return prepare_streaming(source, spec, cache_dir, stream.Plan(mode, ngrams))
    elif split == "documents" or ngrams is not None:
        corpus = load_text(data, data_file=data_file, cache_dir=cache_dir)
        source = stream.Source("text", corpus.name, text=corpus.text, origin=corpus.origin, slug=corpus.slug)
        return prepare_streaming(source, spec, cache_dir, stream.Plan("tail" if split == "auto" else split, ngrams))
    corpus = load_text(data, data_file=data_file, cache_dir=cache_dir)
    train_text, val_text = split_text(corpus.text)
    if not train_text or not val_text:
        raise AblateError(
            f"{corpus.name!r} has only {len(corpus.text)} characters, too few to split 90/10; give a larger corpus"
        )
    folder = cache_dir / f"{corpus.slug}-{_tokenizer_slug(spec)}-{corpus.sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK_FILE):
        tok = get_tokenizer(spec, train_text=corpus.text if kind == "char" else train_text,
                            cache_dir=cache_dir)
        expected = {
            "format": FORMAT_VERSION,
            "dataset": corpus.name,
            "source_sha256": corpus.sha256,
            "source_bytes": corpus.n_bytes,
            "source_chars": len(corpus.text),
            "tokenizer": spec,
            "tokenizer_fingerprint": tok.fingerprint,
            "vocab_size": tok.vocab_size,
            "eot": tok.eot,
            "dtype": token_dtype(tok.vocab_size).name,
        }
        meta = _read_meta(folder, expected)
        if meta is None:
            meta = _build(folder, corpus, tok, expected, train_text, val_text)
    return _open(folder, tok, dict(meta, origin=corpus.origin))


def _open(folder: Path, tok: Tokenizer, meta: dict) -> Prepared:
    """The prepared folder's token arrays, memory-mapped read-only."""
    dtype = np.dtype(meta["dtype"])
    train = np.memmap(folder / "train.bin", dtype=dtype, mode="r", shape=(meta["train_tokens"],))
    val = np.memmap(folder / "val.bin", dtype=dtype, mode="r", shape=(meta["val_tokens"],))
    return Prepared(train=train, val=val, tokenizer=tok, vocab_size=tok.vocab_size, meta=meta, path=folder)


def decontamination_filter(spec: str, n: int, cache_dir: Path):
    """An n-gram filter against the evaluation text ``spec``: a path, or ``NAME:val`` / ``NAME:all`` (a
    dataset's validation split under the 90/10 character split, or all of it)."""
    from ablate.data.decontaminate import NgramFilter

    spec = str(spec).strip()
    name, part = (spec[:-4], spec[-3:]) if spec.endswith((":val", ":all")) else (spec, "all")
    try:  # --data-file gives the training text only; the dataset's variable serves here
        text = load_text(name, cache_dir=cache_dir, file_option=None).text
    except AblateError as err:
        raise AblateError(f"--decontaminate {spec}: {err}") from None
    return NgramFilter.from_text(split_text(text)[1] if part == "val" else text, n, against=spec)


def _stream_source(data: str, data_file: Path | None) -> stream.Source | None:
    """A file or folder the user named, or a Hugging Face dataset (streamable); None for a named dataset."""
    key = str(data).strip()
    if key.lower().startswith("hf:"):
        from ablate.data.hf import hf_source

        return hf_source(key)
    if data_file is not None or key.lower() in ("tinyshakespeare", "shakespeare"):
        return None
    path = Path(key).expanduser()
    if not key or not path.exists():
        return None
    source = stream.open_source(path)
    if source.kind == "folder" and not source.files():
        raise AblateError(f"the folder {source.path} has no .txt files; put your text in .txt files there")
    return source


def _stream_tokenizer(spec: str, kind: str, charset: set[str] | None, sample: str, cache_dir: Path) -> Tokenizer:
    if kind == "char":
        if not charset:
            raise AblateError("the char tokenizer needs a non-empty text; give a corpus with some characters")
        return CharTokenizer("".join(sorted(charset)))
    return get_tokenizer(spec, train_text=sample or None, cache_dir=cache_dir)


def prepare_streaming(source: stream.Source, spec: str, cache_dir: Path, plan: stream.Plan) -> Prepared:
    """Two passes over ``source`` with bounded memory (``ablate.data.stream``): the first counts, hashes
    and builds the vocabulary, the second writes the token files (atomically, then ``meta.json``)."""
    kind, _ = parse_spec(spec)
    cache_dir = Path(cache_dir)
    char, sample = kind == "char", stream.BPE_SAMPLE_CHARS if kind == "bpe" else 0
    train, val = stream.Counter(char, sample), stream.Counter(char)
    kept = stream.Counter(char, sample) if plan.mode == "tail" else None
    seen = stream.run_pass(source, plan, train, val, None, kept)
    if not seen.source.nonspace:
        raise AblateError(f"{source.name} has no text; give a file or folder with some text")
    if kept is not None:
        n_train = int(kept.chars * TRAIN_FRACTION)
        charset, text_sample = kept.charset, kept.sample[:n_train]
        if not n_train or kept.chars == n_train:
            raise AblateError(f"{source.name!r} keeps only {kept.chars} characters, too few to split 90/10; "
                              f"give a larger corpus")
    else:
        n_train, text_sample = None, train.sample
        charset = (train.charset or set()) | (val.charset or set())
    tok = _stream_tokenizer(spec, kind, charset, text_sample, cache_dir)
    sha = seen.source.sha.hexdigest()
    expected: dict = {
        "format": FORMAT_VERSION, "dataset": source.name, "source_sha256": sha, "source_bytes": seen.source.bytes,
        "source_chars": seen.source.chars, "tokenizer": spec, "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size, "eot": tok.eot, "dtype": token_dtype(tok.vocab_size).name,
    }
    if kind == "bpe" and len(text_sample) >= stream.BPE_SAMPLE_CHARS:
        expected["tokenizer_sample_chars"] = len(text_sample)
    suffix = "-docs" if plan.mode == "documents" else ""
    if plan.ngram_filter is not None:
        expected["decontamination"] = plan.ngram_filter.describe(seen.removed)
        suffix += f"-decon{plan.ngram_filter.key[:8]}"
    folder = cache_dir / f"{source.slug}-{_tokenizer_slug(spec)}-{sha[:12]}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK_FILE):
        meta = _read_meta(folder, expected)
        if meta is None:
            meta = _build_streaming(folder, source, tok, expected, plan, n_train)
    return _open(folder, tok, dict(meta, origin=source.origin))


def _build_streaming(folder: Path, source: stream.Source, tok: Tokenizer, expected: dict, plan: stream.Plan,
                     n_train: int | None) -> dict:
    (folder / META_FILE).unlink(missing_ok=True)  # from here on the folder is "not ready"
    remove_stale_tmp(folder)
    dtype = token_dtype(tok.vocab_size)
    context_free = tok.name in ("char", "byte")
    done: dict = {}

    def write_both(f_train) -> None:
        def write_val(f_val) -> None:
            sinks = stream.TokenWriter(tok, f_train, dtype, context_free), stream.TokenWriter(tok, f_val, dtype, context_free)
            done["pass"] = stream.run_pass(source, plan, *sinks, n_train if n_train is not None else -1)
            for sink in sinks:
                sink.close()
            for split, sink in zip(("train", "val"), sinks):
                if sink.tokens == 0:
                    raise AblateError(f"the {split} split of {source.name!r} has no tokens; give a larger corpus"
                                      + (" (10% of the documents are held out by hash)" if plan.mode == "documents" else ""))
        atomic_write(folder / "val.bin", write_val)

    atomic_write(folder / "train.bin", write_both)
    p = done["pass"]
    meta = dict(expected)
    if plan.mode == "documents":
        meta.update(split={"val": stream.VAL_FRACTION, "by": f"sha256 of a document's first {stream.HASH_CHARS} characters"},
                    split_unit="documents", train_documents=p.train_docs, val_documents=p.val_docs)
    else:
        meta.update(split={"train": TRAIN_FRACTION, "val": round(1 - TRAIN_FRACTION, 10)}, split_unit="characters")
    for split, sink in (("train", p.train), ("val", p.val)):
        meta.update({f"{split}_chars": sink.chars, f"{split}_bytes": sink.bytes, f"{split}_tokens": sink.tokens})
    return _finish_meta(meta, folder, source.origin)


__all__ = ["Prepared", "prepare", "prepare_streaming", "token_dtype", "split_text", "TRAIN_FRACTION", "SPLITS"]
