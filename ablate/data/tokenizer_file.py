"""A run's tokenizer, saved in its run directory (``tokenizer.json``).

``ablate sample`` and ``ablate export`` read it back, so a run decodes with the tokenizer its model was
trained with: from any folder, without the corpus, and never with a char or bpe:N vocabulary rebuilt
from a corpus that was edited since. ``char`` keeps its characters, ``bpe:N`` its merges (the
``.tiktoken`` lines), ``byte`` nothing; ``gpt2`` keeps only its fingerprint (the rank file is GPT-2's,
read as training read it) and is checked against it. A task run needs none: its task defines it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ablate.data.tokenizers import ByteTokenizer, CharTokenizer, TiktokenTokenizer, Tokenizer, bpe_from_ranks, get_tokenizer
from ablate.errors import AblateError
from ablate.fileio import atomic_write_bytes

TOKENIZER_FILE = "tokenizer.json"


def tokenizer_state(tok: Tokenizer) -> dict | None:
    """What rebuilds ``tok`` exactly; None for a tokenizer this module does not know (a task's)."""
    out = {"name": tok.name, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}
    if isinstance(tok, ByteTokenizer) or (isinstance(tok, TiktokenTokenizer) and tok.name == "gpt2"):
        return out
    if isinstance(tok, CharTokenizer):
        return {**out, "chars": tok.chars}
    if isinstance(tok, TiktokenTokenizer) and tok.ranks is not None:
        return {**out, "ranks": [[base64.b64encode(t).decode("ascii"), r] for t, r in sorted(tok.ranks.items(),
                                                                                         key=lambda kv: kv[1])]}
    return None


def tokenizer_from_state(state: dict, cache_dir: Path, where: Path) -> Tokenizer:
    """The tokenizer ``state`` describes, checked against its fingerprint; ``where`` names the file."""
    name = state.get("name")
    try:
        if name == "byte":
            tok: Tokenizer = ByteTokenizer()
        elif name == "gpt2":
            try:
                tok = get_tokenizer("gpt2", cache_dir=cache_dir)
            except AblateError as err:  # the run keeps only the ranks' fingerprint: they are GPT-2's, read anew
                raise AblateError(f"this run was trained with GPT-2's tokenizer: {err}") from None
        elif name == "char":
            tok = CharTokenizer(state["chars"])
        elif isinstance(name, str) and name.startswith("bpe:"):
            tok = bpe_from_ranks(int(state["vocab_size"]), {base64.b64decode(t): int(r) for t, r in state["ranks"]})
        else:
            raise ValueError(f"unknown tokenizer {name!r}")
    except (KeyError, TypeError, ValueError) as err:
        raise AblateError(f"{where} is damaged ({err}); train the run again (ablate run ... --force)") from None
    if tok.fingerprint != state.get("fingerprint"):
        fix = ("point ABLATE_GPT2_RANKS at GPT-2's gpt2.tiktoken" if name == "gpt2"
               else "train the run again (ablate run ... --force)")
        raise AblateError(f"the {name} tokenizer rebuilt from {where} is not the one the run was trained with "
                          f"(fingerprint {tok.fingerprint}, not {state.get('fingerprint')}); {fix}")
    return tok


def save_tokenizer(tok: Tokenizer, run_dir: Path) -> None:
    if (state := tokenizer_state(tok)) is not None:
        atomic_write_bytes(run_dir / TOKENIZER_FILE, json.dumps(state).encode("utf-8"))


def load_tokenizer(run_dir: Path, cache_dir: Path) -> Tokenizer | None:
    """The run's saved tokenizer, or None where the run has none (a task run, or one made before it was saved)."""
    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise AblateError(f"{path} is damaged ({err}); train the run again (ablate run ... --force)") from None
    if not isinstance(state, dict):
        raise AblateError(f"{path} is damaged (not a JSON object); train the run again (ablate run ... --force)")
    return tokenizer_from_state(state, cache_dir, path)


__all__ = ["TOKENIZER_FILE", "load_tokenizer", "save_tokenizer", "tokenizer_from_state", "tokenizer_state"]
