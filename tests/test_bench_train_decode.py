"""`ablate bench train` and `ablate bench decode` on a tiny size: the figures exist and agree with the
accounting (timings themselves are benchmarks, not tests)."""

import json
from pathlib import Path

import pytest
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


def test_train_bench_divides_by_the_better_of_two_probes(monkeypatch):
    """The peak is probed before and after the steps; a probe slowed by a busy minute does not inflate MFU."""
    probes = iter([50e9, 100e9])
    monkeypatch.setattr(bench_train, "measured_peak", lambda device, dtype: next(probes))
    results, peak, source = bench_train.run_train(["baseline"], size="tiny", batch_size=2, steps=1, warmup=0,
                                                  device=torch.device("cpu"))
    assert peak == 100e9 and "before and after" in source
    assert results[0].peak_flops == peak and results[0].mfu == results[0].achieved_flops / 100e9


def test_decode_bench_measures_the_cache_each_token_keeps():
    cpu = torch.device("cpu")
    mha, gqa, mqa = (bench_decode.bench_variant(v, size="tiny", prompt=4, new_tokens=4, repeats=1, device=cpu)
                     for v in ("baseline", "gqa(kv_heads=2)", "mqa"))
    assert mha.cache_bytes_per_token == 2 * gqa.cache_bytes_per_token == 4 * mqa.cache_bytes_per_token > 0
    assert (mha.kv_heads, gqa.kv_heads, mqa.kv_heads) == (4, 2, 1)
    assert mha.prefill_tokens_per_s > 0 and mha.decode_tokens_per_s > 0


def test_decode_bench_in_bfloat16_keeps_a_bfloat16_cache(tmp_path, capsys):
    """--dtype bfloat16 decodes under autocast with caches of that dtype: half float32's bytes per token,
    and the same greedy tokens' worth of work for every kind of mixer."""
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--size", "tiny", "--variants", "baseline,gqa(kv_heads=2),alibi,lstm", "--prompt",
                 "4", "--new-tokens", "4", "--repeats", "1", "--dtype", "bfloat16", "--out", str(out)]) == 0
    assert "bfloat16 autocast and cache" in capsys.readouterr().out
    numbers = json.loads(out.read_text())
    assert numbers["setup"]["dtype"] == "bfloat16"
    kv = [r["cache_bytes_per_token"] for r in numbers["results"]]
    fp32 = bench_decode.bench_variant("baseline", size="tiny", prompt=4, new_tokens=4, repeats=1,
                                      device=torch.device("cpu"))
    assert kv[:3] == [fp32.cache_bytes_per_token / 2, fp32.cache_bytes_per_token / 4, fp32.cache_bytes_per_token / 2]
    lstm = bench_decode.bench_variant("lstm", size="tiny", prompt=4, new_tokens=4, repeats=1, device=torch.device("cpu"))
    assert kv[3] == 0 and numbers["results"][3]["state_bytes_per_sequence"] == lstm.state_bytes_per_sequence / 2
    gru = bench_decode.bench_variant("gru", size="tiny", prompt=4, new_tokens=4, repeats=1, dtype="bfloat16",
                                     device=torch.device("cpu"))
    held = bench_decode.bench_variant("gru", size="tiny", prompt=4, new_tokens=4, repeats=1, device=torch.device("cpu"))
    assert gru.state_bytes_per_sequence == held.state_bytes_per_sequence  # measured: the GRU's state stays float32


def test_a_size_with_its_own_vocabulary_is_benched_at_that_vocabulary():
    """gpt2-small is GPT-2's 124,439,808 parameters (50,257 tokens), not a 65-character model."""
    r = bench_decode.bench_variant("gpt2", size="gpt2-small", prompt=1, new_tokens=1, repeats=1,
                                   device=torch.device("cpu"))
    assert r.params == 124_439_808


def test_bench_commands_write_their_numbers(tmp_path, capsys):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--size", "tiny", "--variants", "baseline,mqa", "--prompt", "4",
                 "--new-tokens", "4", "--repeats", "1", "--out", str(out)]) == 0
    numbers = json.loads(out.read_text())
    assert [r["kv_heads"] for r in numbers["results"]] == [4, 1]
    assert numbers["setup"] | {"threads": 0} == {"size": "tiny", "batch": 1, "prompt": 4, "new_tokens": 4, "repeats": 1,
                                                 "dtype": "float32", "device": "cpu", "threads": 0}
    assert main(["bench", "train", "--size", "tiny", "--variants", "baseline", "--steps", "1", "--warmup", "0",
                 "--batch-size", "2", "--out", str(tmp_path / "train.json")]) == 0
    assert "MFU" in capsys.readouterr().out
    setup = json.loads((tmp_path / "train.json").read_text())["setup"]
    assert {k: setup[k] for k in ("size", "context", "batch_size", "steps", "warmup", "dtype", "compile")} == {
        "size": "tiny", "context": 64, "batch_size": 2, "steps": 1, "warmup": 0, "dtype": "float32", "compile": False}


@pytest.mark.parametrize("dtype, matmuls", [("auto", "float32"), ("float32", "float32"), ("bfloat16", "bfloat16")])
def test_every_run_reports_mfu_against_a_peak_measured_in_the_process(dtype, matmuls, small_corpus, tmp_path,
                                                                     monkeypatch, capsys):
    """MFU divides by the peak of the type the run's matmuls run in (auto is float32 on the CPU), probed when
    the run starts and again when it ends."""
    import ablate.train as trainer
    from ablate.config import RunConfig

    asked = []
    monkeypatch.setattr(trainer, "run_peak", lambda device, kind: asked.append((device, kind)) or 1e11)
    cfg = RunConfig(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"), dtype=dtype)
    result = trainer.train(cfg)
    assert asked == [("cpu", matmuls)] * 2
    assert result.extra["peak_flops"] == 1e11
    assert result.extra["mfu"] == result.cost["flops_per_token"] * result.tokens_per_s / 1e11
    if dtype == "auto":  # the summary names the peak it divided by (on a known GPU in bf16: its data sheet's)
        from ablate.cli.run import print_summary

        print_summary(result)
        assert "MFU (per device, of 100.0GFLOP/s)" in capsys.readouterr().out


def test_the_run_peak_is_the_best_probe_of_the_process(monkeypatch):
    """A probe slowed by a busy minute does not lower the peak (and inflate MFU) once a better one was seen;
    a known GPU's data-sheet peak is for bf16 work only."""
    import ablate.peak as peak

    probes = iter([80e9, 40e9, 120e9])
    monkeypatch.setattr(peak, "measured_peak", lambda device, dtype, size, repeats: next(probes))
    monkeypatch.setattr(peak, "_BEST", {})
    assert [peak.run_peak("cpu", "float32") for _ in range(3)] == [80e9, 80e9, 120e9]
    monkeypatch.setattr(peak, "known_peak", lambda device: 989e12)
    monkeypatch.setattr(peak, "measured_peak", lambda device, dtype, size, repeats: 50e12)
    assert peak.run_peak("cuda", "bfloat16") == 989e12 and peak.run_peak("cuda", "float32") == 50e12


def test_the_session_rate_leaves_out_the_first_step_unless_it_is_the_only_one():
    from ablate.pacing import Meter

    meter = Meter()
    meter.add(100, 20.0)  # the step that compiled
    assert meter.session_rate == 5.0
    meter.add(100, 0.5)
    meter.add(100, 0.5)
    assert meter.session_rate == 200.0
    assert meter.window_rate() == 300 / 21.0  # a logging window is what it is


def test_waiting_for_the_device_counts_with_the_steps_it_waits_for():
    """The loss read after a one-step run's only step (0 tokens, some seconds) made its tokens/s 0."""
    from ablate.pacing import Meter

    meter = Meter()
    meter.add(0, 9.0)  # nothing trained yet: no rate to charge it to
    meter.add(100, 1.0)
    meter.add(0, 1.0)  # waiting for that first step
    assert meter.session_rate == 50.0
    meter.add(100, 0.5)
    meter.add(0, 0.5)
    assert meter.session_rate == 100.0


def test_a_one_step_run_reports_the_rate_of_its_step(small_corpus, tmp_path):
    from ablate.config import RunConfig
    from ablate.train import train

    cfg = RunConfig(size="tiny", context=16, data=str(small_corpus), budget="1steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    result = train(cfg)
    assert result.steps == 1 and result.tokens_per_s > 0 and result.extra["mfu"] > 0


def test_every_finished_run_measures_its_decode_speed(small_corpus, tmp_path, monkeypatch):
    """The report's cost columns include decode throughput: each finished run times KV-cached decoding of
    its own model (half the context as the prompt), recurrent mixers included; an unfinished run does not."""
    from ablate.bench import decode
    from ablate.config import RunConfig
    from ablate.train import Callback, StopRun, train

    calls = []
    real = decode.time_decode
    monkeypatch.setattr(decode, "time_decode", lambda model, **kw: calls.append(kw) or real(model, **kw))
    for variant in ("baseline", "lstm"):
        cfg = RunConfig(variant=variant, size="tiny", context=16, data=str(small_corpus), budget="2steps",
                        batch_size=2, eval_points=1, eval_batches=1, out_dir=str(tmp_path / "runs"),
                        cache_dir=str(tmp_path / "cache"))
        result = train(cfg)
        assert result.status == "finished" and result.extra["decode_tokens_per_s"] > 0
        saved = json.loads((Path(result.run_dir) / "result.json").read_text())
        assert saved["extra"]["decode_tokens_per_s"] == result.extra["decode_tokens_per_s"]
    assert [(c["prompt"], c["new_tokens"]) for c in calls] == [(8, 8), (8, 8)]

    class Stop(Callback):
        def on_eval(self, run, row):
            raise StopRun("pruned", "stopped by a test")

    stopped = train(RunConfig(size="tiny", context=16, data=str(small_corpus), budget="2steps", batch_size=2,
                              eval_points=1, eval_batches=1, seed=1, out_dir=str(tmp_path / "runs"),
                              cache_dir=str(tmp_path / "cache")), [Stop()])
    assert stopped.status == "pruned" and "decode_tokens_per_s" not in stopped.extra and len(calls) == 2

    def cannot_decode(model, **kw):
        raise NotImplementedError("this mixer keeps no cache")

    monkeypatch.setattr(decode, "time_decode", cannot_decode)  # e.g. a plugin's mixer
    with pytest.warns(UserWarning, match="decode speed not measured.*keeps no cache"):
        plugin_like = train(RunConfig(size="tiny", context=16, data=str(small_corpus), budget="2steps",
                                      batch_size=2, eval_points=1, eval_batches=1, seed=2,
                                      out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache")))
    assert plugin_like.status == "finished" and "decode_tokens_per_s" not in plugin_like.extra


def test_compile_with_a_short_warmup_is_warned_about(tmp_path, capsys, monkeypatch):
    """Compilation spans the first steps: timed from step 1 it reads as a 1-second step."""
    from ablate.bench import train as bench_train

    monkeypatch.setattr(bench_train, "run_train", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):
        main(["bench", "train", "--size", "tiny", "--compile", "--warmup", "1", "--out", str(tmp_path / "t.json")])
    assert "--compile with --warmup 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "train", "--size", "tiny", "--compile", "--warmup", "3", "--out", str(tmp_path / "t.json")])
    assert "warning" not in capsys.readouterr().err
    assert main(["bench", "mixers", "--width", "0", "--out", str(tmp_path / "m.png")]) == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_data_sheet_peaks_match_the_card_not_a_fragment_of_its_name():
    """"L4" matched "NVIDIA L40S" (121 instead of 362 TFLOP/s) and a PCIe H100 got the SXM part's peak."""
    from ablate.peak import peak_for_name

    names = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H100 NVL": 835e12,
             "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12,
             "NVIDIA L4": 121e12, "NVIDIA L40S": 362e12, "NVIDIA L40": 181e12, "NVIDIA GeForce RTX 4090": 165e12,
             "NVIDIA GH200 480GB": 989e12, "NVIDIA GeForce RTX 3090": None, "Tesla T4": None}
    assert {name: peak_for_name(name) for name in names} == names


def test_bench_numbers_go_to_a_json_file(tmp_path, capsys):
    """`bench train --out x.png` wrote JSON into a .png; a device (/dev/null) still takes the numbers."""
    for command in (["train", "--size", "tiny"], ["decode", "--size", "tiny"], ["attention"]):
        assert main(["bench", *command, "--out", str(tmp_path / "x.png")]) == 2
        assert "the numbers are written as JSON; give a file name ending .json" in capsys.readouterr().err
    assert main(["bench", "decode", "--size", "tiny", "--variants", "mqa", "--prompt", "2", "--new-tokens", "2",
                 "--repeats", "1", "--out", "/dev/null"]) == 0
    assert main(["bench", "mixers", "--out", str(tmp_path / "m.json")]) == 2
    assert "the plot is written as .png, .svg, .pdf; give a file name ending .png or .svg or .pdf" in capsys.readouterr().err
