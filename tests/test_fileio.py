"""What ablate writes survives a full disk, a read-only folder and a killed writer."""

import errno

import pytest

from ablate.errors import AblateError
from ablate.fileio import TMP_SUFFIX, atomic_write, atomic_write_text


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_keeps_the_previous_file_and_says_so(tmp_path, code, words):
    path = tmp_path / "checkpoint.pt"
    atomic_write_text(path, "good")

    def fails(f):
        f.write(b"half")
        raise OSError(code, "simulated")

    with pytest.raises(AblateError, match=words) as err:
        atomic_write(path, fails)
    assert "previous checkpoint.pt is kept" in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == "good"
    assert not list(tmp_path.glob(f".*{TMP_SUFFIX}"))  # the half-written temporary file is gone


def test_other_errors_stay_errors(tmp_path):
    def boom(f):
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        atomic_write(tmp_path / "x", boom)
    assert not list(tmp_path.iterdir())


def test_a_run_removes_temporary_files_a_killed_writer_left(small_corpus, tmp_path):
    from ablate.config import RunConfig
    from ablate.train import run_dir_for, train
    from ablate.variant import parse_variant

    cfg = RunConfig(size="tiny", context=16, data=str(small_corpus), budget="2steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    folder = run_dir_for(cfg, parse_variant(cfg.variant).name)
    folder.mkdir(parents=True)
    stale = folder / f".checkpoint.pt.12345.abcdef12{TMP_SUFFIX}"
    stale.write_bytes(b"x" * 1000)
    train(cfg)
    assert not stale.exists() and (folder / "checkpoint.pt").exists()


def test_file_digest_catches_changes_anywhere_in_a_large_file(tmp_path, monkeypatch):
    import ablate.fileio as fio

    monkeypatch.setattr(fio, "WHOLE_FILE_BYTES", 1 << 16)  # make a 4 MiB file "large": sampled
    monkeypatch.setattr(fio, "SAMPLE_BYTES", 1 << 12)
    path = tmp_path / "big.bin"
    data = bytearray(b"\x01" * (4 << 20))
    path.write_bytes(data)
    before = fio.file_digest(path)
    path.write_bytes(bytes(len(data)))  # zeroed, same size
    assert fio.file_digest(path) != before
    path.write_bytes(data)
    assert fio.file_digest(path) == before


def test_a_checkpoint_changed_after_writing_is_refused_in_one_line(small_corpus, tmp_path):
    from ablate.config import RunConfig
    from ablate.train import train

    cfg = RunConfig(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"),
                    checkpoint_every=1)
    train(cfg.replace(budget="2steps"))
    (ckpt,) = list((tmp_path / "runs").glob("*/checkpoint.pt"))
    assert ckpt.with_name("checkpoint.pt.digest").exists()
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle: torch may still load it
    ckpt.write_bytes(bytes(data))
    with pytest.raises(AblateError, match="has changed since it was written") as err:
        train(cfg.replace(budget="2steps"), resume=True)
    assert "\n" not in str(err.value)


def test_a_digested_file_stays_valid_when_killed_between_its_writes(tmp_path, monkeypatch):
    import ablate.fileio as fio

    path, digests = tmp_path / "c.pt", tmp_path / "c.pt.digest"
    fio.atomic_write(path, lambda f: f.write(b"old"), digests=digests)
    assert fio.digest_matches(path, digests) is True
    real_text, real_replace = fio.atomic_write_text, fio.os.replace
    calls = []

    def killed_after_replace(p, text):
        calls.append(text)
        if len(calls) == 2:  # the new file is in place; the digest list is not trimmed yet
            raise KeyboardInterrupt
        return real_text(p, text)

    monkeypatch.setattr(fio, "atomic_write_text", killed_after_replace)
    with pytest.raises(KeyboardInterrupt):
        fio.atomic_write(path, lambda f: f.write(b"new"), digests=digests)
    assert path.read_bytes() == b"new" and fio.digest_matches(path, digests) is True
    monkeypatch.setattr(fio, "atomic_write_text", real_text)

    def killed_before_replace(src, dst):
        if str(dst) == str(path):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(fio.os, "replace", killed_before_replace)
    with pytest.raises(KeyboardInterrupt):
        fio.atomic_write(path, lambda f: f.write(b"newer"), digests=digests)
    assert path.read_bytes() == b"new" and fio.digest_matches(path, digests) is True
    path.write_bytes(b"tampered")
    assert fio.digest_matches(path, digests) is False


def test_a_long_checkpoint_error_is_cut_at_a_word():
    from ablate.checkpoint import _clip

    text = "Weights only load failed. This file can still be loaded, to do so you have two options, do those"
    assert _clip(text, 60) == "Weights only load failed. This file can still be loaded, to …"
    assert _clip("short", 60) == "short"


def test_a_pipe_or_device_is_written_through_not_replaced(tmp_path):
    """`--out /dev/null` (as root) replaced the device with a plain file: os.replace swaps the directory
    entry. A path that is not a regular file is written through instead; a FIFO stands in for a device."""
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    atomic_write_text(fifo, '{"ok": 1}')
    reader.join(timeout=10)
    assert got == ['{"ok": 1}'] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not list(tmp_path.glob(f"*{TMP_SUFFIX}"))


def test_a_symlink_keeps_pointing_at_the_file_it_names(tmp_path):
    target, link = tmp_path / "numbers.json", tmp_path / "latest.json"
    target.write_text("old")
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_dangling_link_or_a_link_to_a_folder_creates_nothing_elsewhere(tmp_path):
    """A dangling link is replaced (as before): its target's missing folders are not made."""
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "sub" / "deeper" / "target.json")
    atomic_write_text(dangling, "x")
    assert dangling.read_text() == "x" and not dangling.is_symlink() and not (tmp_path / "sub").exists()


def test_standard_output_taken_as_a_file_is_written_through(tmp_path):
    """/dev/stdout redirected to a file resolves to that file: replacing it cut the process off its output."""
    import subprocess
    import sys

    out = tmp_path / "out.txt"
    code = ("import sys\nfrom ablate.fileio import atomic_write_text\nprint('before', flush=True)\n"
            "atomic_write_text('/dev/stdout', 'numbers\\n')\nprint('after', flush=True)\n")
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True)
    assert out.read_text().split() == ["before", "numbers", "after"]
