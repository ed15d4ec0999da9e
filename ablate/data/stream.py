"""Streaming preparation for corpora larger than memory: text flows from the source through a router
into one token file per split, chunk by chunk; nothing holds the whole corpus.

A source (``Source``) is a text file, a folder of ``.txt`` files (sorted by relative path), a text
already in memory, or an iterable of records (Hugging Face datasets). It produces the same text
``ablate.data.datasets.load_text`` would build — for a folder, each file without its trailing
newlines, one blank line between files, one newline at the end — as a stream of events:
``("text", s)`` (part of the text), ``("sep", s)`` (a separator between files or records) and
``("end", None)`` (a file or record ended).

Two ways to split off the validation text:

- ``tail``: the last 10% of the characters, exactly like the in-memory preparation (the first pass
  counts the characters); tokens equal the in-memory preparation's token for token.
- ``documents``: a fixed set of held-out documents: a document whose first 65,536 characters hash
  (sha256) into the lowest 10% goes to validation, so the set does not depend on the order or on the
  rest of the corpus, and identical documents share a split. A document is a file (folder), a record
  (datasets), or, in a single text or file, a block between blank lines (an empty line). Documents are
  stripped of leading and trailing newlines and each split joins its documents with one blank line.

Decontamination (an ``ngram filter``, see ``decontaminate.py``) works on documents too: a document is
dropped, from either split, when it shares an n-gram with the evaluation text. With ``tail`` the kept
documents are joined as above and then split 90/10.

Memory is bounded independently of the corpus size by the constants below: a read block
(``BLOCK_BYTES``), one document buffer (``DOC_CHARS``; a longer document is judged, routed by its
first buffer, and filtered buffer by buffer), and per split one encode chunk of ``CHUNK_CHARS`` (cut
just before a newline that follows a non-space character, where GPT-2-style pre-tokenisation always
breaks, so chunked ids equal whole-text ids; a line longer than ``4 * CHUNK_CHARS`` is cut there
anyway, which only ``gpt2``/``bpe:N`` can notice) with its ids. Python strings take up to 4 bytes per
character and ids 8 bytes per token while encoding, so the working set is about
``4 * (DOC_CHARS + 2 * 4 * CHUNK_CHARS) + 24 * CHUNK_CHARS`` bytes at most, under 300 MB at the
defaults, plus a ``bpe:N`` training sample of ``BPE_SAMPLE_CHARS`` characters and the vocabulary. Measured
(benchmarks/prepare_large.py, a 1.08 GB folder): peak RSS 281 MB with ``byte`` and 340 MB with ``char``,
against 222 MB for a process that only imports the data layer.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ablate.errors import AblateError

BLOCK_BYTES = 1 << 20  # bytes read from a file at a time
CHUNK_CHARS = 1 << 21  # characters encoded at a time
DOC_CHARS = 1 << 22  # a document buffer (longer documents are handled buffer by buffer)
HASH_CHARS = 1 << 16  # a document's split is decided by the sha256 of this many leading characters
BPE_SAMPLE_CHARS = 1 << 24  # bpe:N is trained on at most this many training characters
VAL_FRACTION = 0.1

Event = tuple[str, Any]


@dataclass
class Source:
    """Where the text comes from; ``kind`` is ``file``, ``folder``, ``text`` or ``records``."""

    kind: str
    name: str
    path: Path | None = None
    text: str | None = None
    records: Callable[[], Iterable[str]] | None = None
    origin: str = ""
    slug: str = "data"

    @property
    def blank_line_documents(self) -> bool:
        return self.kind in ("file", "text")

    def files(self) -> list[Path]:
        assert self.path is not None
        return sorted((p for p in self.path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(self.path).as_posix())

    def n_bytes_on_disk(self) -> int:
        if self.kind == "file":
            return self.path.stat().st_size
        if self.kind == "folder":
            return sum(p.stat().st_size for p in self.files())
        return len(self.text.encode("utf-8")) if self.text is not None else -1


def file_pieces(path: Path) -> Iterator[str]:
    """The UTF-8 text of ``path`` in pieces of at most ``BLOCK_BYTES`` characters (a leading BOM dropped)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset, first = 0, True
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            try:
                piece = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise AblateError(f"{path} is not UTF-8 text (bad byte at offset {offset + e.start}); convert it to "
                                  f"UTF-8 or remove it") from None
            offset += len(block)
            if first and piece:
                piece, first = (piece[1:] if piece.startswith("\ufeff") else piece), False
            if piece:
                yield piece
            if not block:
                return


def _stripped_unit(pieces: Iterable[str]) -> Iterator[str]:
    """``pieces`` without the trailing newlines of their whole (held back until more text follows)."""
    held = 0
    for piece in pieces:
        body = piece.rstrip("\n")
        if not body:
            held += len(piece)
            continue
        yield "\n" * held + body
        held = len(piece) - len(body)


def events(source: Source) -> Iterator[Event]:
    """The source's text as events (see the module docstring)."""
    if source.kind == "text":
        for i in range(0, len(source.text), BLOCK_BYTES):
            yield "text", source.text[i:i + BLOCK_BYTES]
        yield "end", None
        return
    if source.kind == "file":
        for piece in file_pieces(source.path):
            yield "text", piece
        yield "end", None
        return
    units: Iterable[Iterable[str]]
    if source.kind == "folder":
        units = (file_pieces(p) for p in source.files())
    else:
        units = (([r] if isinstance(r, str) else []) for r in source.records())
    for i, unit in enumerate(units):
        if i:
            yield "sep", "\n\n"
        for piece in _stripped_unit(unit):
            yield "text", piece
        yield "end", None
    yield "sep", "\n"


# ------------------------------------------------------------------------------------- sinks
class Counter:
    """Counts (and hashes) the text it is fed; keeps its character set and the first ``sample`` characters."""

    def __init__(self, charset: bool = False, sample: int = 0):
        self.sha = hashlib.sha256()
        self.chars = self.bytes = 0
        self.charset: set[str] | None = set() if charset else None
        self.sample_left, self.sample_parts = sample, []
        self.nonspace = False

    def feed(self, text: str) -> None:
        data = text.encode("utf-8")
        self.sha.update(data)
        self.chars += len(text)
        self.bytes += len(data)
        if self.charset is not None:  # distinct code points, via numpy (much faster than set(text))
            points = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
            self.charset.update(chr(c) for c in points.tolist())
        if not self.nonspace and not text.isspace():
            self.nonspace = True
        if self.sample_left > 0:
            self.sample_parts.append(text[:self.sample_left])
            self.sample_left -= len(self.sample_parts[-1])

    def close(self) -> None: ...

    @property
    def sample(self) -> str:
        return "".join(self.sample_parts)


class TokenWriter(Counter):
    """Encodes the text it is fed in chunks and appends the ids to ``out`` as ``dtype``."""

    def __init__(self, tokenizer, out: BinaryIO, dtype: np.dtype, context_free: bool):
        super().__init__()
        self.tok, self.out, self.dtype, self.context_free = tokenizer, out, dtype, context_free
        self.buffer: list[str] = []
        self.buffered = 0
        self.tokens = 0

    def feed(self, text: str) -> None:
        super().feed(text)
        self.buffer.append(text)
        self.buffered += len(text)
        if self.buffered >= CHUNK_CHARS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        text = "".join(self.buffer)
        cut = len(text)
        if not final and not self.context_free:
            cut = _safe_cut(text)
            if cut <= 0:
                if len(text) < 4 * CHUNK_CHARS:
                    self.buffer, self.buffered = [text], len(text)
                    return
                cut = len(text) - 1  # a line longer than 4 chunks: cut anyway (documented)
        self._write(text[:cut])
        rest = text[cut:]
        self.buffer, self.buffered = ([rest], len(rest)) if rest else ([], 0)

    def _write(self, text: str) -> None:
        if not text:
            return
        ids = self.tok.encode_array(text)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.tok.vocab_size):  # pragma: no cover - a bug
            raise RuntimeError(f"tokenizer {self.tok.name} produced ids outside [0, {self.tok.vocab_size})")
        arr = np.ascontiguousarray(ids.astype(self.dtype))
        self.out.write(memoryview(arr).cast("B"))
        self.tokens += int(arr.size)

    def close(self) -> None:
        self._flush(final=True)


def _safe_cut(text: str) -> int:
    """The last index just before a newline that follows a non-space character (0: none)."""
    i = len(text)
    while True:
        i = text.rfind("\n", 0, i)
        if i <= 0:
            return 0
        if not text[i - 1].isspace():
            return i


# ------------------------------------------------------------------------------------ routing
@dataclass
class Plan:
    """How to split (``tail`` or ``documents``) and what to drop (an n-gram filter or None)."""

    mode: str
    ngram_filter: Any = None

    @property
    def by_documents(self) -> bool:
        return self.mode == "documents" or self.ngram_filter is not None


@dataclass
class Removed:
    documents: int = 0
    bytes: int = 0
    kept_documents: int = 0
    kept_bytes: int = 0


def is_val(head: str) -> bool:
    """A document's fixed split: the sha256 of its first ``HASH_CHARS`` characters, lowest 10% -> validation."""
    digest = hashlib.sha256(head[:HASH_CHARS].encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < VAL_FRACTION * 2**64


class Documents:
    """Collects one document at a time (up to ``DOC_CHARS``), filters it and hands it on whole.

    ``emit(text, first)`` receives a document's text (``first``: its first buffer); the target decides
    where it goes. Leading and trailing newlines of a document are dropped."""

    def __init__(self, emit: Callable[[str, bool], None], ngram_filter, removed: Removed):
        self.emit, self.filter, self.removed = emit, ngram_filter, removed
        self.parts: list[str] = []
        self.size = 0
        self.held = 0
        self.started = False  # a part of this document was already handed on
        self.dropped = False

    def write(self, text: str) -> None:
        if not self.size and not self.held and not self.started:
            text = text.lstrip("\n")
        body = text.rstrip("\n")
        if not body:
            self.held += len(text)
            return
        self.parts.append("\n" * self.held + body)
        self.size += len(self.parts[-1])
        self.held = len(text) - len(body)
        if self.size >= DOC_CHARS:
            self._hand_on()

    def _hand_on(self) -> None:
        text = "".join(self.parts)
        self.parts, self.size = [], 0
        if not self.started and not text.strip():
            return
        if self.filter is not None and self.filter.contaminated(text):
            nbytes = len(text.encode("utf-8"))
            self.removed.bytes += nbytes
            if not self.dropped:
                self.removed.documents += 1
                self.dropped = True
            return
        self.removed.kept_bytes += len(text.encode("utf-8"))
        self.emit(text, not self.started)
        self.started = True

    def end(self) -> None:
        self._hand_on()
        if self.started:
            self.removed.kept_documents += 1
        self.held, self.started, self.dropped = 0, False, False


class BlankLines:
    """Cuts a text stream into documents at blank lines (``\\n\\n``)."""

    def __init__(self, docs: Documents):
        self.docs, self.buf = docs, ""

    def write(self, text: str) -> None:
        buf = self.buf + text
        while True:
            i = buf.find("\n\n")
            if i < 0:
                break
            self.docs.write(buf[:i])
            self.docs.end()
            j = i + 2
            while j < len(buf) and buf[j] == "\n":
                j += 1
            buf = buf[j:]
        if len(buf) > DOC_CHARS:
            self.docs.write(buf[:-1])
            buf = buf[-1:]
        self.buf = buf

    def end(self) -> None:
        self.docs.write(self.buf)
        self.buf = ""
        self.docs.end()


class Joiner:
    """Feeds documents into one split's sink, one blank line between them, a newline at the end."""

    def __init__(self, sink: Counter):
        self.sink, self.docs = sink, 0

    def add(self, text: str, first: bool) -> None:
        if first:
            if self.docs:
                self.sink.feed("\n\n")
            self.docs += 1
        self.sink.feed(text)

    def close(self) -> None:
        if self.docs:
            self.sink.feed("\n")


class Tail:
    """Routes a text stream: the first ``n_train`` characters to ``train``, the rest to ``val``."""

    def __init__(self, train: Counter, val: Counter, n_train: int):
        self.train, self.val, self.left = train, val, n_train

    def feed(self, text: str) -> None:
        if self.left > 0:
            head = text[:self.left]
            self.train.feed(head)
            self.left -= len(head)
            text = text[len(head):]
        if text:
            self.val.feed(text)


@dataclass
class Pass:
    """What one pass over the source saw."""

    source: Counter
    train: Counter
    val: Counter
    removed: Removed = field(default_factory=Removed)
    train_docs: int = 0
    val_docs: int = 0


def run_pass(source: Source, plan: Plan, train: Counter, val: Counter, n_train: int | None,
             kept: Counter | None = None) -> Pass:
    """One pass: the source's text (counted in ``Pass.source``) through the plan into the two sinks.

    With ``tail`` the (kept) text goes to ``kept`` when ``n_train`` is None (the first pass, which only
    counts), else split at ``n_train`` characters."""
    seen = Counter()
    removed = Removed()
    result = Pass(seen, train, val, removed)
    if plan.mode == "tail":
        stream = kept if n_train is None else Tail(train, val, n_train)
    if not plan.by_documents:
        for kind, value in events(source):
            if kind != "end":
                seen.feed(value)
                stream.feed(value)
        return result
    if plan.mode == "tail":
        joiner = Joiner(stream)
        docs = Documents(joiner.add, plan.ngram_filter, removed)
    else:
        joiners = {"train": Joiner(train), "val": Joiner(val)}
        current: list[Joiner] = [joiners["train"]]

        def route(text: str, first: bool) -> None:
            if first:
                current[0] = joiners["val" if is_val(text) else "train"]
            current[0].add(text, first)

        docs = Documents(route, plan.ngram_filter, removed)
    splitter = BlankLines(docs) if source.blank_line_documents else docs
    for kind, value in events(source):
        if kind == "end":
            splitter.end()
            continue
        seen.feed(value)
        if kind == "text":
            splitter.write(value)
    if plan.mode == "tail":
        joiner.close()
    else:
        for j in joiners.values():
            j.close()
        result.train_docs, result.val_docs = joiners["train"].docs, joiners["val"].docs
    return result


def open_source(path: Path) -> Source:
    from ablate.data.datasets import _slug

    path = path.expanduser().resolve()
    slug = "file-" + _slug(path.stem or path.name)
    if path.is_file():
        return Source("file", str(path), path=path, origin=f"your text file {path}", slug=slug)
    if path.is_dir():
        source = Source("folder", str(path), path=path, slug=slug)
        source.origin = f"{len(source.files())} .txt file(s) under your folder {path}, sorted by path, joined by blank lines"
        return source
    raise AblateError(f"no file or folder at {path}")


__all__ = ["Source", "open_source", "events", "Plan", "run_pass", "Counter", "TokenWriter", "is_val",
           "CHUNK_CHARS", "DOC_CHARS", "BPE_SAMPLE_CHARS"]
