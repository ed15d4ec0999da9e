"""The run's tokenizer as Hugging Face tokenizer files (``tokenizer.json``), when an exact one exists.

``char`` is a word-level vocabulary over single characters, ``byte`` one over GPT-2's 256 byte
symbols, ``gpt2`` and ``bpe:N`` a byte-level BPE whose merges are read back from tiktoken's ranks (as
transformers converts tiktoken models). Each is checked against ablate's own ``encode`` on a sample
text before it is written; one that differs is left out and the model card says to tokenize with ablate.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\tSpeak, speak! 123 + 4,567 = "
          "4690 -- it's   we'll they've I'd; naïve café ☃ 😀\n")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 byte values to printable characters (what byte-level BPE vocabularies hold)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _char(tokenizer):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(tokenizer.chars)}, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    tok.decoder = decoders.Fuse()
    return tok, "".join(c for c in SAMPLE if c in tokenizer.stoi) + tokenizer.chars  # every character once


def _byte(tokenizer):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    symbols = bytes_to_unicode()
    tok = Tokenizer(models.WordLevel({symbols[b]: b for b in range(256)}, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                                                 pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")])
    tok.decoder = decoders.ByteLevel()
    return tok, SAMPLE


def _bpe(tokenizer):
    """A byte-level BPE from a tiktoken encoding: each token's merge is the split of it into two tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    enc = tokenizer.encoding
    specials = {enc.encode_single_token(s) for s in enc.special_tokens_set}
    ranks = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i not in specials}
    symbols = bytes_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(symbols[b] for b in piece)

    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, ranks[a], ranks[b], a, b) for a, b in splits]
    merges.sort()
    vocab = {text(token): rank for token, rank in ranks.items()}
    tok = Tokenizer(models.BPE(vocab, [(text(a), text(b)) for *_, a, b in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's pattern
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(enc.decode_single_token_bytes(i).decode(), special=True) for i in sorted(specials)])
    return tok, SAMPLE


BUILDERS = {"char": _char, "byte": _byte}


def save_tokenizer(tokenizer, folder: Path, context: int) -> bool:
    """Write ``tokenizer.json`` (and its config) into ``folder`` when it reproduces ``tokenizer``'s ids."""
    if tokenizer is None:
        return False
    build = BUILDERS.get(tokenizer.name) or (_bpe if hasattr(tokenizer, "encoding") else None)
    if build is None:
        return False
    from transformers import PreTrainedTokenizerFast

    tok, sample = build(tokenizer)
    eot = tokenizer.eot
    special = {"eos_token": tok.id_to_token(eot), "bos_token": tok.id_to_token(eot)} if eot is not None else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **special)
    expected = tokenizer.encode(sample)
    ids = fast(sample, add_special_tokens=False)["input_ids"]
    if ids != expected or fast.decode(ids) != tokenizer.decode(expected):
        return False
    fast.model_max_length = context
    fast.save_pretrained(folder)
    config = Path(folder) / "tokenizer_config.json"  # the class name transformers 4 and 5 both load
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                                 indent=2), encoding="utf-8")
    return True


__all__ = ["bytes_to_unicode", "save_tokenizer"]
