"""Hugging Face datasets as corpora: ``--data hf:NAME[:CONFIG]`` (the optional extra ``ablate[hf]``).

``NAME`` is a dataset on the Hugging Face Hub (``load_dataset(NAME, CONFIG, split="train")``: downloaded
once into the ``datasets`` cache as memory-mapped Arrow files) or a folder written by ``datasets``'
own ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose ``train`` split, or the split named
by ``CONFIG``, is used). Each record's ``text`` field (else its only string field) is one document;
records are read in batches, so memory stays bounded (``ablate.data.stream``), and the validation
split is a fixed set of held-out records unless ``--val-split tail`` is asked for.

Without the ``datasets`` package, or when the Hub cannot be reached, preparation fails with one line
saying which.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ablate.data.stream import Source
from ablate.errors import AblateError

PREFIX = "hf:"
BATCH = 1000
HUB_TIMEOUT_S = 5.0  # a Hub that does not take a TCP connection within this is unreachable


def is_hf_spec(data: str) -> bool:
    return str(data).strip().lower().startswith(PREFIX)


def parse_hf_spec(data: str) -> tuple[str, str | None]:
    rest = str(data).strip()[len(PREFIX):]
    name, _, config = rest.partition(":") if not Path(rest).expanduser().exists() else (rest, "", "")
    if not name:
        raise AblateError(f"--data {data!r}: give a dataset, e.g. hf:roneneldan/TinyStories or hf:wikitext:wikitext-103-raw-v1")
    return name, config or None


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise AblateError("--data hf:… needs the optional extra: pip install 'ablate[hf]' "
                          "(the datasets package is not installed)") from None
    return datasets


def _load(name: str, config: str | None):
    local = Path(name).expanduser()
    problem = "" if local.is_dir() else _hub_problem()
    from_cache = bool(problem) and "datasets" not in sys.modules
    if from_cache:  # the Hub is out of reach: datasets' offline mode serves the dataset from its cache, if there
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets = _import_datasets()
    if local.is_dir():
        try:
            ds = datasets.load_from_disk(str(local))
        except (FileNotFoundError, ValueError, OSError) as err:
            raise AblateError(f"hf:{name}: {local} is not a dataset saved by datasets' save_to_disk ({err})") from None
        if isinstance(ds, datasets.DatasetDict):
            split = config or "train"
            if split not in ds:
                raise AblateError(f"hf:{name}: no split {split!r}; it has {', '.join(ds)}; give hf:{name}:SPLIT")
            ds = ds[split]
        return ds
    if problem and not from_cache:  # datasets was imported online: it would retry for a minute, a line per retry
        raise _unreachable_hub(name, problem, cache_read=False)
    try:
        return datasets.load_dataset(name, config, split="train")
    except Exception as err:  # noqa: BLE001 - offline mode raises several kinds for a dataset it does not hold
        if from_cache:
            raise _unreachable_hub(name, problem, cache_read=True) from None
        raise _load_error(name, config, err) from None


def _unreachable_hub(name: str, problem: str, cache_read: bool) -> AblateError:
    """The Hub is out of reach; ``cache_read``: the dataset was looked for in the cache, and is not there."""
    head = f"hf:{name}: cannot reach the Hugging Face Hub (offline? {problem})"
    if cache_read:
        return AblateError(f"{head} and the dataset is not in the Hugging Face cache; load it where you are online "
                           f"(then it is cached, or save it with save_to_disk and pass hf:/path/to/that/folder)")
    return AblateError(f"{head}; if the dataset is in your Hugging Face cache, set HF_HUB_OFFLINE=1, or save it "
                       f"with save_to_disk where you are online and pass hf:/path/to/that/folder")


def _load_error(name: str, config: str | None, err: Exception) -> AblateError:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return AblateError(f"hf:{name}: cannot reach the Hugging Face Hub (offline? {_first_line(err)}); load it where "
                           f"you are online, save it with save_to_disk and pass hf:/path/to/that/folder")
    text = _first_line(err)  # datasets raises many kinds; offline mode says so in the message
    offline = re.search(r"offline|connection|resolve|network|internet|timed out", text, re.I)
    what = "cannot reach the Hugging Face Hub (offline?)" if offline else "cannot load it"
    return AblateError(f"hf:{name}{':' + config if config else ''}: {what}: {text}")


def _hub_problem() -> str:
    """Why the Hub cannot be reached ("" when it can, or when offline mode is asked for). Offline, the Hub's
    client retries each request for tens of seconds, printing a line per retry; a TCP probe says it at once."""
    from urllib.parse import urlsplit

    from ablate.urls import unreachable

    if any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return ""
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        problem = unreachable(endpoint, timeout=HUB_TIMEOUT_S)
    except ValueError as err:  # a port that is not a number, or out of range
        raise AblateError(f"HF_ENDPOINT={endpoint} cannot be read ({err}); write https://host[:port], "
                          "or unset it for the Hugging Face Hub") from None
    return f"{urlsplit(endpoint).hostname}: {problem}" if problem else ""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _text_field(ds, name: str) -> str:
    features = getattr(ds, "features", None) or {}
    strings = [k for k, v in features.items() if getattr(v, "dtype", None) in ("string", "large_string")]
    if "text" in features:
        return "text"
    if len(strings) == 1:
        return strings[0]
    raise AblateError(f"hf:{name}: no 'text' field and {len(strings)} string fields ({', '.join(strings) or 'none'}); "
                      f"ablate reads a dataset's 'text' field")


def hf_source(data: str) -> Source:
    """A streaming ``Source`` over the dataset's text field, one record per document."""
    name, config = parse_hf_spec(data)
    ds = _load(name, config)
    field = _text_field(ds, name)

    def records() -> Iterator[str]:
        for batch in ds.select_columns([field]).iter(batch_size=BATCH):
            for text in batch[field]:
                if isinstance(text, str):
                    yield text

    slug = "hf-" + re.sub(r"[^a-z0-9]+", "-", f"{Path(name).name}-{config or ''}".lower()).strip("-")[:40]
    origin = (f"Hugging Face dataset {name}{':' + config if config else ''} ({len(ds):,} records, field {field!r}), "
              f"one document per record")
    return Source("records", str(data).strip(), records=records, origin=origin, slug=slug)


__all__ = ["is_hf_spec", "parse_hf_spec", "hf_source"]
