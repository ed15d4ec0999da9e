"""Small file helpers: hashing, atomic writes (fsynced), a best-effort lock; used by the data layer and the trainer.

Every file the data layer leaves in a cache is written to a temporary name in the same folder,
flushed and fsynced, then moved into place with ``os.replace``. A reader therefore sees either the
old file, the whole new file, or nothing, never half a file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator, BinaryIO

from ablate.errors import AblateError

try:  # POSIX only; elsewhere the lock is a no-op (concurrent builds are then merely wasteful)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TMP_SUFFIX = ".tmp"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


WHOLE_FILE_BYTES = 64 << 20  # files up to this size are hashed whole; larger ones by sample
SAMPLE_CHUNKS, SAMPLE_BYTES = 16, 1 << 20


def file_digest(path: Path) -> str:
    """A content digest that is cheap to check before every run: blake2b of the whole file up to 64 MiB,
    beyond that of its size and 16 evenly spaced 1 MiB chunks (so a file overwritten with other bytes of
    the same size, or zeroed, is caught in milliseconds whatever its size)."""
    h = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            step = (size - SAMPLE_BYTES) // (SAMPLE_CHUNKS - 1)
            for i in range(SAMPLE_CHUNKS):
                f.seek(i * step)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not every platform can open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _own_descriptor(path: Path) -> int | None:
    """The file descriptor ``path`` names in this process (/dev/stdout, /dev/fd/N, /proc/self/fd/N), if any."""
    text = str(path)
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    match = re.fullmatch(r"/(?:dev/fd|proc/self/fd)/(\d+)", text)
    return int(match[1]) if match else None


def _write_through(path: Path) -> bool:
    """Whether ``path`` is written in place: an existing target that is not a regular file or a folder (a
    device, a pipe), where replacing it would put a plain file where the device was."""
    try:
        mode = os.stat(path).st_mode  # follows links
    except OSError:  # not there yet, a dangling link or a loop: the atomic path (which replaces a link)
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def written_in_place(path: Path) -> bool:
    """Whether ``atomic_write`` writes ``path`` in place (a process's own descriptor, a device, a pipe), so it
    needs no file name or writable folder of its own."""
    return _own_descriptor(Path(path)) is not None or _write_through(Path(path))


def atomic_write(path: Path, write: Callable[[BinaryIO], None], digests: Path | None = None) -> None:
    """Create ``path`` atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was; a full disk or a
    read-only filesystem is a user's problem to fix, so it is an ``AblateError`` saying which.

    With ``digests``, that file lists the content digests ``path`` may have at any moment: before the
    new file replaces the old one it holds both digests, after it only the new one, so a process
    killed between the two writes never leaves a good file looking damaged (see ``digest_matches``).
    """
    path = Path(path)
    fd = _own_descriptor(path)
    if fd is not None:  # /dev/stdout and the like: this process's own open file, at its own offset
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what was printed before comes first
        with os.fdopen(os.dup(fd), "wb") as f:
            write(f)
        return
    if _write_through(path):  # /dev/null, a named pipe
        with open(path, "wb") as f:
            write(f)
        return
    if path.is_symlink() and path.is_file():  # replace the file the link points to, not the link
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if digests is not None:
            new = file_digest(tmp)
            previous = _digests(digests)[-1:] if path.exists() else []
            atomic_write_text(digests, "\n".join([*previous, new]) + "\n")
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        why = _storage_problem(err, path.parent)
        if why:
            kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
            raise AblateError(f"cannot write {path}: {why}; {kept}. Free space (or use a writable --out-dir) "
                              "and run the same command with --resume") from None
        raise
    _fsync_dir(path.parent)
    if digests is not None:
        atomic_write_text(digests, new + "\n")


def _digests(path: Path) -> list[str]:
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def digest_matches(path: Path, digests: Path) -> bool | None:
    """Whether ``path``'s content is one ``atomic_write(..., digests=)`` wrote (None: no digest kept)."""
    listed = _digests(digests)
    if not listed:
        return None
    try:
        return file_digest(path) in listed
    except OSError:  # not a readable file: certainly not what was written
        return False


def _storage_problem(err: BaseException, folder: Path) -> str:
    """'no space left on device' / 'read-only file system' / 'disk quota exceeded', or '' for other errors.
    torch.save reports a full disk as a RuntimeError ("unexpected pos"), so the free space is checked too."""
    codes = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
             errno.EDQUOT: "disk quota exceeded"}
    if isinstance(err, OSError) and err.errno in codes:
        return codes[err.errno]
    if isinstance(err, RuntimeError) and "unexpected pos" in str(err):
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < 64 * 2**20:
                return "no space left on device"
    return ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files a crashed writer may have left in ``folder``."""
    if not folder.is_dir():
        return
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) while the block runs.

    Several workers preparing the same dataset at once then build it once; the others wait and
    read the finished cache.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
