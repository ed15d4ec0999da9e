"""Tokenizers: ``char``, ``byte``, ``gpt2`` and trained byte-level BPE ``bpe:N``.

``get_tokenizer(spec, train_text=..., cache_dir=...)`` turns a spec string into a ``Tokenizer``:

- ``char``   every distinct character of the corpus is a token (the "Let's build GPT" lecture);
             the vocabulary is the sorted set of characters of ``train_text`` (pass the whole corpus
             so validation characters are covered) and is cached as JSON.
- ``byte``   the 256 UTF-8 byte values; needs no data and never meets an unknown symbol.
- ``gpt2``   GPT-2's 50,257-token BPE, as a ``tiktoken.Encoding`` built from a rank file:
             ``$ABLATE_GPT2_RANKS``, else ``<cache_dir>/gpt2.tiktoken``, else tiktoken's own download.
- ``bpe:N``  a byte-level BPE with N tokens in all (256 bytes, N-257 merges, ``<|endoftext|>`` = N-1)
             trained on ``train_text`` with GPT-2's pre-tokenisation, served by tiktoken; the ranks are
             cached under ``<cache_dir>/tokenizers/`` keyed by the text's sha256 and N.

Every tokenizer has a ``fingerprint`` (a hash of its vocabulary) so caches built with one tokenizer
are never read back with another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import tiktoken
import tiktoken.load

from ablate.data import bpe as _bpe
from ablate.fileio import atomic_write_bytes, sha256_bytes, sha256_text
from ablate.errors import AblateError

GPT2_RANKS_ENV = "ABLATE_GPT2_RANKS"
GPT2_VOCAB = 50257
GPT2_EOT = 50256
GPT2_RANKS_FILE = "gpt2.tiktoken"
GPT2_RANKS_URL_HINT = (
    "the MIT-licensed openai-whisper package ships it as whisper/assets/gpt2.tiktoken"
)
ONLINE_TIMEOUT_S = 60.0

VALID_SPECS = "char, byte, gpt2, bpe:N (N >= 257, e.g. bpe:2048)"
_BPE_SPEC = re.compile(r"^bpe:(\d+)$")

# Texts longer than this are cut (only where cutting cannot change the result) into pieces that
# tiktoken encodes on several threads.
_PIECE_CHARS = 1 << 16


class Tokenizer:
    """Text <-> token ids. Subclasses set ``name``, ``vocab_size``, ``eot`` and ``fingerprint``."""

    name: str
    vocab_size: int
    eot: int | None
    fingerprint: str

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """Encode a long text to a 1-D int64 array (subclasses override with faster paths)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} vocab={self.vocab_size}>"


class ByteTokenizer(Tokenizer):
    """The 256 UTF-8 byte values. Decoding replaces bytes that are not valid UTF-8."""

    def __init__(self) -> None:
        self.name = "byte"
        self.vocab_size = 256
        self.eot = None
        self.fingerprint = sha256_text("byte:utf-8")[:16]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


class CharTokenizer(Tokenizer):
    """One token per distinct character, ids in sorted character order."""

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("chars must be sorted and distinct")
        if not chars:
            raise AblateError("the char tokenizer needs a non-empty text; give a corpus with some characters")
        self.name = "char"
        self.chars = chars
        self.vocab_size = len(chars)
        self.eot = None
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.fingerprint = sha256_text("char:" + chars)[:16]
        self._codepoints = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def _unknown(self, text: str) -> AblateError:
        bad = sorted(set(text) - set(self.stoi))
        shown = ", ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return AblateError(
            f"the char vocabulary has no token for {shown}; build the char tokenizer from a text "
            f"that contains these characters, or use the byte or bpe:N tokenizer"
        )

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise self._unknown(text) from None

    def decode(self, ids: Sequence[int]) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def encode_array(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, cps)
        ids = np.minimum(ids, len(self._codepoints) - 1)
        if cps.size and not np.array_equal(self._codepoints[ids], cps):
            raise self._unknown(text)
        return ids.astype(np.int64)


class TiktokenTokenizer(Tokenizer):
    """A ``tiktoken.Encoding`` (``gpt2`` or a trained ``bpe:N``).

    ``encode`` never treats ``<|endoftext|>`` written in the text as the special token: corpus text
    is encoded as ordinary text, and the special id is added only on purpose, via ``eot``.
    """

    def __init__(self, name: str, encoding: tiktoken.Encoding, eot: int | None, fingerprint: str,
                 ranks: dict[bytes, int] | None = None) -> None:
        self.name = name
        self.encoding = encoding
        self.ranks = ranks  # a trained bpe:N's merges, saved with each run (ablate.data.tokenizer_file)
        self.vocab_size = encoding.n_vocab
        self.eot = eot
        self.fingerprint = fingerprint

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def encode_array(self, text: str) -> np.ndarray:
        pieces = split_for_batch(text, _PIECE_CHARS)
        if len(pieces) <= 1:
            return np.asarray(self.encode(text), dtype=np.int64)
        threads = max(1, min(8, os.cpu_count() or 1))
        encoded = self.encoding.encode_ordinary_batch(pieces, num_threads=threads)
        return np.concatenate([np.asarray(ids, dtype=np.int64) for ids in encoded])


def split_for_batch(text: str, piece_chars: int) -> list[str]:
    """Cut ``text`` into pieces of roughly ``piece_chars`` that encode exactly like the whole.

    Cuts fall just before a newline that follows a non-space character. GPT-2's pre-tokeniser always
    ends a chunk there (a word, number or symbol run never includes a newline, and a whitespace run
    never starts right after a non-space inside the same chunk), and it never looks behind, so
    encoding the pieces separately and concatenating gives the same ids as encoding the whole.
    """
    pieces: list[str] = []
    start = 0
    n = len(text)
    while n - start > piece_chars:
        cut = text.find("\n", start + piece_chars)
        while cut != -1 and (cut == 0 or text[cut - 1].isspace()):
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _ranks_fingerprint(kind: str, ranks: dict[bytes, int], special: dict[str, int]) -> str:
    h = hashlib.sha256()
    h.update(kind.encode() + b"\0" + _bpe.GPT2_PATTERN.encode() + b"\0")
    h.update(_bpe.dump_ranks(ranks))
    h.update(json.dumps(special, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _load_ranks(path: Path, fix: str = "delete it or point to a valid .tiktoken file") -> dict[bytes, int]:
    """Read a ``.tiktoken`` rank file with ``tiktoken.load.load_tiktoken_bpe``.

    tiktoken keeps a copy of every file it loads in a cache keyed by the path string, so a file
    that changed on disk could come back stale; passing the file's current sha256 as
    ``expected_hash`` makes tiktoken drop a stale copy and re-read the file.
    """
    data = path.read_bytes()
    try:
        return tiktoken.load.load_tiktoken_bpe(str(path), expected_hash=sha256_bytes(data))
    except (ValueError, OSError) as e:
        raise AblateError(f"cannot read the rank file {path} ({e}); {fix}") from None


# ----------------------------------------------------------------------------------------- gpt2


def _gpt2_from_ranks(ranks: dict[bytes, int], source: str) -> TiktokenTokenizer:
    if len(ranks) != GPT2_EOT or sorted(ranks.values()) != list(range(GPT2_EOT)):
        raise AblateError(
            f"{source} holds {len(ranks)} ranks, not GPT-2's {GPT2_EOT}; set {GPT2_RANKS_ENV} to "
            f"GPT-2's gpt2.tiktoken ({GPT2_RANKS_URL_HINT})"
        )
    special = {_bpe.ENDOFTEXT: GPT2_EOT}
    enc = tiktoken.Encoding(
        "gpt2",
        pat_str=_bpe.GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=special,
        explicit_n_vocab=GPT2_VOCAB,
    )
    if enc.encode_ordinary("Hello world") != [15496, 995]:
        raise AblateError(
            f"{source} is not GPT-2's rank file (\"Hello world\" does not encode to [15496, 995]); "
            f"set {GPT2_RANKS_ENV} to GPT-2's gpt2.tiktoken ({GPT2_RANKS_URL_HINT})"
        )
    return TiktokenTokenizer("gpt2", enc, GPT2_EOT, _ranks_fingerprint("gpt2", ranks, special))


def _gpt2_online() -> tiktoken.Encoding:
    """``tiktoken.get_encoding("gpt2")`` (downloads once), with a time limit for dead networks."""
    result: dict[str, object] = {}

    def fetch() -> None:
        try:
            result["enc"] = tiktoken.get_encoding("gpt2")
        except BaseException as e:  # noqa: BLE001 - reported below
            result["err"] = e

    t = threading.Thread(target=fetch, name="ablate-gpt2-fetch", daemon=True)
    t.start()
    t.join(ONLINE_TIMEOUT_S)
    if "enc" in result:
        return result["enc"]  # type: ignore[return-value]
    reason = result.get("err", f"no answer in {ONLINE_TIMEOUT_S:.0f} s")
    raise OSError(str(reason))


def _gpt2(cache_dir: Path) -> TiktokenTokenizer:
    env = os.environ.get(GPT2_RANKS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise AblateError(
                f"{GPT2_RANKS_ENV}={env} is not a file; point it at GPT-2's gpt2.tiktoken rank file "
                f"or unset it"
            )
        fix = f"point {GPT2_RANKS_ENV} at GPT-2's gpt2.tiktoken ({GPT2_RANKS_URL_HINT})"
        return _gpt2_from_ranks(_load_ranks(path, fix), str(path))
    cached = Path(cache_dir) / GPT2_RANKS_FILE
    if cached.is_file():
        return _gpt2_from_ranks(_load_ranks(cached), str(cached))
    try:
        enc = _gpt2_online()
    except Exception as e:  # noqa: BLE001 - any failure here means "could not download"
        raise AblateError(
            f"the gpt2 tokenizer needs GPT-2's rank file and downloading it failed (offline? {e}); "
            f"set {GPT2_RANKS_ENV}=path/to/gpt2.tiktoken or copy it to {cached} "
            f"({GPT2_RANKS_URL_HINT}), or use an offline tokenizer: char, byte or bpe:N"
        ) from None
    ranks = getattr(enc, "_mergeable_ranks", None)
    fp = _ranks_fingerprint("gpt2", ranks, {_bpe.ENDOFTEXT: GPT2_EOT}) if ranks else "gpt2-tiktoken"
    return TiktokenTokenizer("gpt2", enc, enc.eot_token, fp)


# ------------------------------------------------------------------------------------------ bpe


def bpe_cache_path(cache_dir: Path, text_sha256: str, vocab_size: int) -> Path:
    key = sha256_text(f"bpe|v{_bpe.TRAINER_VERSION}|{text_sha256}|{vocab_size}")[:16]
    return Path(cache_dir) / "tokenizers" / f"bpe{vocab_size}-{key}.tiktoken"


def _bpe_tokenizer(vocab_size: int, train_text: str, cache_dir: Path) -> TiktokenTokenizer:
    path = bpe_cache_path(cache_dir, sha256_text(train_text), vocab_size)
    ranks: dict[bytes, int] | None = None
    if path.is_file():
        try:
            ranks = _load_ranks(path)
        except AblateError:
            ranks = None
        if ranks is not None and (len(ranks) != vocab_size - 1 or
                                  sorted(ranks.values()) != list(range(vocab_size - 1))):
            ranks = None  # damaged cache entry: train again and overwrite it
    if ranks is None:
        try:
            ranks = _bpe.train_bpe(train_text, vocab_size)
        except _bpe.NotEnoughPairs as e:
            raise AblateError(
                f"bpe:{vocab_size} needs more text: this corpus supports at most bpe:{e.reached + 1}; "
                f"use a smaller N or a larger corpus"
            ) from None
        atomic_write_bytes(path, _bpe.dump_ranks(ranks))
    return bpe_from_ranks(vocab_size, ranks)


def bpe_from_ranks(vocab_size: int, ranks: dict[bytes, int]) -> TiktokenTokenizer:
    """The ``bpe:N`` tokenizer of trained ``ranks`` (N - 1 of them; ``<|endoftext|>`` is the last id)."""
    special = {_bpe.ENDOFTEXT: vocab_size - 1}
    enc = tiktoken.Encoding(
        f"ablate-bpe{vocab_size}",
        pat_str=_bpe.GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=special,
        explicit_n_vocab=vocab_size,
    )
    return TiktokenTokenizer(f"bpe:{vocab_size}", enc, vocab_size - 1,
                             _ranks_fingerprint("bpe", ranks, special), ranks=ranks)


# ----------------------------------------------------------------------------------------- char


def char_cache_path(cache_dir: Path, text_sha256: str) -> Path:
    return Path(cache_dir) / "tokenizers" / f"char-{text_sha256[:16]}.json"


def _char_tokenizer(train_text: str, cache_dir: Path) -> CharTokenizer:
    path = char_cache_path(cache_dir, sha256_text(train_text))
    if path.is_file():
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("kind") == "char" and isinstance(data.get("chars"), str):
                tok = CharTokenizer(data["chars"])
                if set(tok.chars) == set(train_text):
                    return tok
        except (ValueError, OSError):
            pass  # damaged cache entry: rebuild below
    tok = CharTokenizer.from_text(train_text)
    atomic_write_bytes(path, json.dumps({"kind": "char", "chars": tok.chars}, ensure_ascii=True).encode())
    return tok


# ---------------------------------------------------------------------------------------- entry


def parse_spec(spec: str) -> tuple[str, int | None]:
    """Validate a tokenizer spec; return (kind, N) with N only for ``bpe``."""
    s = str(spec).strip().lower()
    if s in ("char", "byte", "gpt2"):
        return s, None
    m = _BPE_SPEC.match(s)
    if m:
        n = int(m.group(1))
        if n < _bpe.MIN_VOCAB:
            raise AblateError(
                f"tokenizer {spec!r}: bpe:N needs N >= {_bpe.MIN_VOCAB} (256 bytes + <|endoftext|>); "
                f"valid tokenizers: {VALID_SPECS}"
            )
        return "bpe", n
    raise AblateError(f"unknown tokenizer {spec!r}; valid tokenizers: {VALID_SPECS}")


def canonical_spec(spec: str) -> str:
    kind, n = parse_spec(spec)
    return f"bpe:{n}" if kind == "bpe" else kind


def needs_training_text(spec: str) -> bool:
    return parse_spec(spec)[0] in ("char", "bpe")


def get_tokenizer(spec: str, *, train_text: str | None = None, cache_dir: Path) -> Tokenizer:
    """Build (or load from ``cache_dir``) the tokenizer named by ``spec``; see the module docstring."""
    kind, n = parse_spec(spec)
    cache_dir = Path(cache_dir)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "gpt2":
        return _gpt2(cache_dir)
    if train_text is None or train_text == "":
        raise AblateError(
            f"tokenizer {canonical_spec(spec)!r} is built from the training text, and none was given; "
            f"prepare a dataset with it, or use byte or gpt2"
        )
    if kind == "char":
        return _char_tokenizer(train_text, cache_dir)
    assert n is not None
    return _bpe_tokenizer(n, train_text, cache_dir)


__all__ = [
    "Tokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "TiktokenTokenizer",
    "get_tokenizer",
    "parse_spec",
    "canonical_spec",
    "needs_training_text",
    "split_for_batch",
    "VALID_SPECS",
    "GPT2_RANKS_ENV",
]
