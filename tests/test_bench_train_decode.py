"""`ablate bench train` and `ablate bench decode` on a tiny size: the figures exist and agree with the
accounting (timings themselves are benchmarks, not tests)."""

import json

import torch

from ablate.bench import decode as bench_decode
from ablate.bench import train as bench_train
from ablate.cli import main


def test_train_bench_reports_step_time_throughput_and_mfu():
    cpu = torch.device("cpu")
    results, peak, source = bench_train.run_train(["baseline", "rope"], size="tiny", batch_size=2, steps=2, warmup=1,
                                                  device=cpu)
    assert peak > 0 and source.startswith("measured")
    for r in results:
        assert r.median_step_ms > 0 and r.tokens_per_s > 0 and r.tokens_per_step == 2 * 64
        assert r.achieved_flops == r.flops_per_token * r.tokens_per_s and r.mfu == r.achieved_flops / peak
    assert [r.variant for r in results] == ["baseline", "rope"]


def test_decode_bench_measures_the_cache_each_token_keeps():
    cpu = torch.device("cpu")
    mha, gqa, mqa = (bench_decode.bench_variant(v, size="tiny", prompt=4, new_tokens=4, repeats=1, device=cpu)
                     for v in ("baseline", "gqa(kv_heads=2)", "mqa"))
    assert mha.cache_bytes_per_token == 2 * gqa.cache_bytes_per_token == 4 * mqa.cache_bytes_per_token > 0
    assert (mha.kv_heads, gqa.kv_heads, mqa.kv_heads) == (4, 2, 1)
    assert mha.prefill_tokens_per_s > 0 and mha.decode_tokens_per_s > 0


def test_bench_commands_write_their_numbers(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--size", "tiny", "--variants", "baseline,mqa", "--prompt", "4",
                 "--new-tokens", "4", "--repeats", "1", "--out", str(out)]) == 0
    assert [r["kv_heads"] for r in json.loads(out.read_text())["results"]] == [4, 1]
    assert main(["bench", "train", "--size", "tiny", "--variants", "baseline", "--steps", "1", "--warmup", "0",
                 "--batch-size", "2", "--out", str(tmp_path / "train.json")]) == 0
    assert "MFU" in capsys.readouterr().out


def test_every_run_reports_mfu_against_a_peak_measured_in_the_process(small_corpus, tmp_path):
    from ablate.config import RunConfig
    from ablate.peak import run_peak
    from ablate.train import train

    cfg = RunConfig(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    result = train(cfg)
    peak = run_peak("cpu", cfg.dtype)
    assert peak > 1e8 and result.extra["mfu"] == result.cost["flops_per_token"] * result.tokens_per_s / peak
