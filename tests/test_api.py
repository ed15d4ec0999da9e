"""The Python API: `from ablate import train, compare` are things you call."""

import ablate
from ablate import RunConfig, compare, parse_variant, train
from ablate.report import RunRecord


def test_train_and_compare_are_callable(small_corpus, tmp_path):
    settings = dict(size="tiny", context=16, data=str(small_corpus), budget="3steps", batch_size=2, eval_points=1,
                    eval_batches=1, out_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    a = train(**settings)
    b = train(RunConfig(**settings, variant="rope"))
    assert a.status == b.status == "finished" and b.variant == parse_variant("rope").name
    assert train.train is ablate.train.train  # still the module too
    fair = {"budget": "3steps"}
    records = [RunRecord(f"{v}{s}", v, s, 2.0 + (0.1 if v == "rope" else 0.0) + 0.01 * s, fairness=fair)
               for v in ("baseline", "rope") for s in range(3)]
    table = compare(records)
    assert table.row("rope").verdict == "hurts" and compare.compare is ablate.compare.compare


def test_importing_ablate_stays_light():
    import subprocess
    import sys

    code = "import sys, ablate; ablate.__version__; print('torch' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
