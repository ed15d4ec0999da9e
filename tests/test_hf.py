"""--data hf:NAME[:CONFIG]: a dataset's text field streamed through the same preparation; a local
dataset saved by `datasets` itself (no network). Skipped where the optional extra is not installed,
except the one-line errors without it and offline."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ablate.data import prepare
from ablate.data import stream
from ablate.errors import AblateError


def _records(offline_text, n=300):
    paras = [p for p in offline_text[:200_000].split("\n\n") if p.strip()]
    return [paras[i] + ("\n" if i % 3 == 0 else "") for i in range(n)]  # some records end in a newline


@pytest.fixture(scope="module")
def saved(offline_text, tmp_path_factory):
    datasets = pytest.importorskip("datasets", reason="the optional extra ablate[hf] (datasets) is not installed")
    root = tmp_path_factory.mktemp("hf")
    records = _records(offline_text)
    ds = datasets.Dataset.from_dict({"id": list(range(len(records))), "text": records})
    ds.save_to_disk(str(root / "plain"))
    datasets.DatasetDict({"train": ds.select(range(50)), "validation": ds.select(range(50, 80))}).save_to_disk(
        str(root / "dict"))
    datasets.Dataset.from_dict({"n": [1, 2], "body": ["only string field", "second record"]}).save_to_disk(
        str(root / "body"))
    return root, records


def test_records_are_held_out_documents_equal_to_a_direct_tokenization(saved, tmp_path):
    root, records = saved
    p = prepare(f"hf:{root / 'plain'}", "char", cache_dir=tmp_path)
    docs = [r.strip("\n") for r in records]
    val = [d for d in docs if stream.is_val(d)]
    train = [d for d in docs if not stream.is_val(d)]
    assert p.meta["split_unit"] == "documents" and (p.meta["train_documents"], p.meta["val_documents"]) == (
        len(train), len(val))
    assert np.array_equal(p.train, p.tokenizer.encode_array("\n\n".join(train) + "\n"))
    assert np.array_equal(p.val, p.tokenizer.encode_array("\n\n".join(val) + "\n"))
    assert p.meta["dataset"] == f"hf:{root / 'plain'}" and "records" in p.meta["origin"]


def test_tail_split_equals_the_same_text_from_a_file(saved, tmp_path):
    root, records = saved
    f = tmp_path / "same.txt"
    f.write_text("\n\n".join(r.rstrip("\n") for r in records) + "\n")
    a = prepare(f"hf:{root / 'plain'}", "bpe:300", cache_dir=tmp_path / "a", split="tail")
    b = prepare(str(f), "bpe:300", cache_dir=tmp_path / "b")
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.meta["source_sha256"] == b.meta["source_sha256"]


def test_a_dataset_dict_uses_train_or_the_named_split(saved, tmp_path):
    root, records = saved
    p = prepare(f"hf:{root / 'dict'}", "byte", cache_dir=tmp_path, split="tail")
    assert p.meta["source_chars"] == len("\n\n".join(r.rstrip("\n") for r in records[:50]) + "\n")
    q = prepare(f"hf:{root / 'dict'}:validation", "byte", cache_dir=tmp_path, split="tail")
    assert q.meta["source_chars"] == len("\n\n".join(r.rstrip("\n") for r in records[50:80]) + "\n")
    with pytest.raises(AblateError, match="no split 'test'"):
        prepare(f"hf:{root / 'dict'}:test", "byte", cache_dir=tmp_path)
    r = prepare(f"hf:{root / 'body'}", "byte", cache_dir=tmp_path, split="tail")  # its only string field
    assert r.meta["source_chars"] == len("only string field\n\nsecond record\n")


def test_without_the_extra_it_is_one_line_saying_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(AblateError) as err:
        prepare("hf:roneneldan/TinyStories", "byte", cache_dir=tmp_path)
    assert "pip install 'ablate[hf]'" in str(err.value) and "\n" not in str(err.value)


def test_offline_it_is_one_line_saying_so(tmp_path):
    pytest.importorskip("datasets", reason="the optional extra ablate[hf] (datasets) is not installed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = ("from ablate.data import prepare\n"
            "try:\n    prepare('hf:nobody/no-such-corpus', 'byte', cache_dir='cache')\n"
            "except Exception as e:\n    print(type(e).__name__, '|', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300).stdout.strip().splitlines()[-1]
    assert out.startswith("AblateError |") and "cannot reach the Hugging Face Hub" in out


def test_an_unreachable_hub_is_one_line_at_once(tmp_path, monkeypatch):
    """Not in offline mode and no network: said in one line before the Hub's client retries for a minute."""
    import socket
    import time

    pytest.importorskip("datasets", reason="the optional extra ablate[hf] (datasets) is not installed")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)

    def refused(*a, **k):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    started = time.perf_counter()
    with pytest.raises(AblateError, match="cannot reach the Hugging Face Hub \\(offline\\? huggingface.co: .*HF_HUB_OFFLINE=1"):
        prepare("hf:nobody/no-such-corpus", "byte", cache_dir=tmp_path)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("endpoint", ["http://localhost:99999", "https://hub.example:port"])
def test_an_hf_endpoint_that_cannot_be_read_is_one_line(endpoint, tmp_path, monkeypatch):
    """A bad port in HF_ENDPOINT raised ValueError from the reachability probe (a traceback)."""
    from ablate.data.hf import _hub_problem

    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(AblateError, match=r"HF_ENDPOINT=.* cannot be read .*write https://host\[:port\]"):
        _hub_problem()


def test_an_unreachable_hub_falls_back_to_the_cache_in_a_new_process(tmp_path):
    """A command (datasets not yet imported) that cannot reach the Hub reads datasets' cache in offline mode;
    a dataset that is not there is one line, at once."""
    pytest.importorskip("datasets", reason="the optional extra ablate[hf] (datasets) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(HF_ENDPOINT="http://127.0.0.1:1", HF_HOME=str(tmp_path / "hf"))  # nothing listens there
    code = ("import time\nfrom ablate.data import prepare\nt = time.perf_counter()\n"
            "try:\n    prepare('hf:nobody/no-such-corpus', 'byte', cache_dir='cache')\n"
            "except Exception as e:\n    print(type(e).__name__, '|', round(time.perf_counter() - t), '|', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300).stdout.strip().splitlines()[-1]
    kind, seconds, message = out.split(" | ", 2)
    assert kind == "AblateError" and "not in the Hugging Face cache" in message and int(seconds) < 30, out
