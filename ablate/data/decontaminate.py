"""Decontamination: drop pretraining documents that share a long n-gram with an evaluation text.

``NgramFilter.from_text(eval_text, n)``; ``ablate.data.prepare`` reads the evaluation text from
``--decontaminate SPEC``: a file or folder path, or a dataset name with ``:val`` (its validation split
under the 90/10 character split, e.g. ``tinyshakespeare:val``) or ``:all``. Text is compared as words: lowercased runs of letters and digits (``\\w+``), so punctuation,
case and line breaks do not hide an overlap. A document is contaminated when any ``n`` consecutive
words of it (n = 13 by default, as GPT-3, Brown et al. 2020, appendix C) also occur in the evaluation
text. The unit dropped is a document (``ablate.data.stream``: a file, a record, or a block between
blank lines); a document longer than the stream's document buffer is judged buffer by buffer, and an
n-gram that straddles two buffers is not seen.

The filter hashes every n-gram of the evaluation text to 64 bits (a polynomial over per-word ids) and
keeps them sorted; a document's words that never occur in the evaluation text cannot be part of a shared
n-gram, so only windows of known words are hashed and looked up. Memory: the evaluation text's words
and hashes (about 20 bytes per evaluation word), independent of the corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ablate.errors import AblateError
from ablate.fileio import sha256_text

WORD = re.compile(r"\w+")
DEFAULT_N = 13
_MULT = np.uint64(0x9E3779B97F4A7C15)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every window of ``n`` ids (ids >= 1; windows holding a 0 are left out)."""
    if ids.size < n:
        return np.empty(0, dtype=np.uint64)
    m = ids.size - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _MULT + ids[j:j + m].astype(np.uint64)
    unknown = np.concatenate([[0], np.cumsum(ids == 0)])
    return h[(unknown[n:] - unknown[:m]) == 0]


@dataclass
class NgramFilter:
    """Says whether a text shares an ``n``-word n-gram with the evaluation text ``against``."""

    against: str
    against_sha256: str
    n: int
    vocab: dict[str, int]
    grams: np.ndarray  # sorted unique hashes
    eval_words: int

    @classmethod
    def from_text(cls, text: str, n: int = DEFAULT_N, against: str = "text") -> NgramFilter:
        if n < 1:
            raise AblateError(f"decontamination n-gram length must be at least 1, got {n} (GPT-3 used 13)")
        ws = words(text)
        if len(ws) < n:
            raise AblateError(f"the decontamination text {against} has {len(ws)} words, fewer than n={n}; "
                              f"give the evaluation text, or a smaller --decontaminate-n")
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab) + 1) for w in ws), dtype=np.int64, count=len(ws))
        return cls(against, sha256_text(text), n, vocab, np.unique(_hashes(ids, n)), len(ws))

    @property
    def key(self) -> str:
        """What identifies the filter (in the cache folder's name)."""
        return sha256_text(f"{self.against_sha256}|{self.n}|{WORD.pattern}")

    def contaminated(self, text: str) -> bool:
        vocab = self.vocab
        ids = np.fromiter((vocab.get(w, 0) for w in words(text)), dtype=np.int64)
        h = _hashes(ids, self.n)
        if not h.size:
            return False
        pos = np.searchsorted(self.grams, h)
        pos[pos == self.grams.size] = 0
        return bool((self.grams[pos] == h).any())

    def describe(self, removed) -> dict:
        """What meta.json (and the data fingerprint) records: the filter and what it removed."""
        return {"against": self.against, "against_sha256": self.against_sha256, "n": self.n,
                "words": WORD.pattern + " lowercased", "unit": "documents",
                "removed_documents": removed.documents, "removed_bytes": removed.bytes,
                "kept_documents": removed.kept_documents, "kept_bytes": removed.kept_bytes}


__all__ = ["NgramFilter", "DEFAULT_N", "words"]
