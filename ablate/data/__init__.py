"""The data layer: corpora, tokenizers, prepared token arrays and seeded batches.

- ``load_text(name, data_file=..., cache_dir=...)``  a corpus (``tinyshakespeare``, ``shakespeare`` or a path)
- ``get_tokenizer(spec, train_text=..., cache_dir=...)``  ``char``, ``byte``, ``gpt2`` or ``bpe:N``
- ``prepare(data, tokenizer, cache_dir=...)``  cached 90/10 train/val token arrays (memory-mapped)
- ``TrainBatches`` / ``eval_batches``  batches that depend only on (seed, step), and fixed eval batches
"""

from ablate.data.batches import EvalBatches, TrainBatches, eval_batches
from ablate.data.datasets import DATASETS, Corpus, load_text
from ablate.data.prepare import Prepared, prepare
from ablate.data.tokenizers import VALID_SPECS, Tokenizer, get_tokenizer

__all__ = [
    "Corpus",
    "DATASETS",
    "EvalBatches",
    "Prepared",
    "Tokenizer",
    "TrainBatches",
    "VALID_SPECS",
    "eval_batches",
    "get_tokenizer",
    "load_text",
    "prepare",
]
