"""Plugins: a real install of the example package into a temporary virtual environment, a broken
plugin, autoload off, ``--plugin FILE.py``, provenance in MLflow, and the generated checks on plugins.

Registrations are process-global, so everything that involves installed plugins runs in subprocesses
of the temporary environment; in-process tests undo their registrations (``isolated_plugins``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import ablate
from ablate import plugins
from ablate.cli import main
from ablate.errors import AblateError
from ablate.plugins import PluginWarning, load_file, loaded_plugins
from ablate.catalog import ensure_loaded, lookup
from ablate.registry import REGISTRIES
from ablate.testing import check_variant, pair_variants

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ablate-dyt"

BROKEN_PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "ablate-broken"
        version = "0.0.1"

        [project.entry-points."ablate.plugins"]
        boom = "ablate_broken.boom"
        dup = "ablate_broken.dup"

        [tool.setuptools]
        packages = ["ablate_broken"]
    """,
    "ablate_broken/__init__.py": "",
    # registers a component, then fails: the component must not survive
    "ablate_broken/boom.py": '''
        from ablate.registry import register
        from ablate.slots import Norm

        @register("norm", "halfway", paper="none")
        class Halfway(Norm):
            """Registered just before its module fails."""

        raise RuntimeError("boom at import")
    ''',
    # a registration error: the name is a built-in's
    "ablate_broken/dup.py": '''
        from ablate.registry import register
        from ablate.slots import Position

        @register("position", "rope", paper="none")
        class SecondRope(Position):
            """A second rope."""
    ''',
}

LOCAL_PLUGIN = '''
import torch
from torch import nn

from ablate.registry import register
from ablate.slots import Norm


@register("norm", "scalenorm", paper="Nguyen & Salazar 2019, Transformers without Tears (ScaleNorm)")
class ScaleNorm(Norm):
    """ScaleNorm: one learned scale times x over its L2 norm."""

    def __init__(self, options, dim, bias=True):
        super().__init__(options, dim, bias)
        self.scale = nn.Parameter(torch.tensor(dim ** 0.5))

    def forward(self, x):
        return self.scale * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-5)
'''


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


# ------------------------------------------------------------------- the temporary environment
@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """A fresh virtual environment in which pip really installs (built wheels, dist-info, entry
    points) the example plugin and a broken one.

    The environment sees this checkout's ablate, torch and mlflow through a ``.pth`` file that adds
    the current interpreter's site-packages after its own (installing torch again would take minutes
    and need the network); the plugins themselves are installed only in the new environment.
    """
    missing = [m for m in ("pip", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"building the example plugin needs {' and '.join(missing)} in this environment")
    root = tmp_path_factory.mktemp("plugin-env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=60)
    bindir = "Scripts" if os.name == "nt" else "bin"
    python = root / "venv" / bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    purelib.mkdir(parents=True, exist_ok=True)
    parents = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], str(Path(ablate.__file__).parents[1])]
    (purelib / "_ablate_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dict.fromkeys(parents)) + "\n")

    example = root / "ablate-dyt"  # a copy, so the build leaves nothing behind in the checkout
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    broken = write_tree(root / "ablate-broken", BROKEN_PACKAGE)
    done = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--no-cache-dir", "--disable-pip-version-check", "--quiet", str(example), str(broken)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (purelib / "ablate_dyt").is_dir(), "ablate-dyt was not installed into the temporary environment"
    local = root / "scalenorm.py"
    local.write_text(LOCAL_PLUGIN)
    return {"root": root, "python": python, "example": example, "local": local}


def ablate_cli(env: dict, *args: str, no_plugins: bool = False) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("ABLATE_NO_PLUGINS", "PYTHONPATH", "PYTHONWARNINGS", "ABLATE_VARIANTS_PATH")}
    if no_plugins:
        environ["ABLATE_NO_PLUGINS"] = "1"
    return subprocess.run([str(env["python"]), "-m", "ablate", *args], cwd=env["root"], env=environ,
                          capture_output=True, text=True, timeout=180)


def plugin_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "PluginWarning" in line]


# ------------------------------------------------------------------------------ installed plugins
def test_installed_plugin_appears_in_list_and_describe_with_its_origin(venv):
    listed = ablate_cli(venv, "list", "norm")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if " dyt " in line)
    assert "plugin ablate-dyt 0.1.0" in row
    described = ablate_cli(venv, "describe", "dyt")
    assert described.returncode == 0, described.stderr
    assert "origin:   plugin ablate-dyt 0.1.0" in described.stdout
    assert "Transformers without Normalization" in described.stdout and "alpha_init=0.5" in described.stdout


def test_broken_plugin_is_one_warning_each_and_everything_else_works(venv):
    listed = ablate_cli(venv, "list")
    assert listed.returncode == 0, listed.stderr
    warned = plugin_warnings(listed.stderr)
    assert len(warned) == 2, listed.stderr
    boom = [w for w in warned if "'boom'" in w]
    dup = [w for w in warned if "'dup'" in w]
    assert len(boom) == 1 and "ablate-broken 0.0.1" in boom[0] and "RuntimeError: boom at import" in boom[0]
    assert len(dup) == 1 and "'rope' is already registered" in dup[0]
    assert "Traceback" not in listed.stderr
    assert " dyt " in listed.stdout and " rope " in listed.stdout
    assert "halfway" not in listed.stdout  # registered before its module failed: removed again
    described = ablate_cli(venv, "describe", "rope")
    assert "origin:   built-in" in described.stdout


def test_autoload_off_hides_installed_plugins(venv):
    listed = ablate_cli(venv, "list", no_plugins=True)
    assert listed.returncode == 0, listed.stderr
    assert " dyt " not in listed.stdout and not plugin_warnings(listed.stderr)
    missing = ablate_cli(venv, "inspect", "dyt+swiglu", "--size", "tiny", no_plugins=True)
    assert missing.returncode == 2
    assert "unknown component or preset 'dyt'" in missing.stderr and missing.stderr.count("\n") == 1
    # a file the user names still loads with autoload off
    local = ablate_cli(venv, "--plugin", str(venv["local"]), "describe", "scalenorm", no_plugins=True)
    assert local.returncode == 0, local.stderr
    assert f"origin:   file {venv['local']} sha256:" in local.stdout


def test_run_with_plugins_records_their_provenance_in_mlflow(venv, small_corpus):
    from mlflow import MlflowClient

    root = venv["root"]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = ablate_cli(venv, "--plugin", str(venv["local"]), "run", "--variant", "dyt+swiglu", "--size", "tiny",
                      "--context", "32", "--budget", "5steps", "--batch-size", "4", "--eval-points", "1",
                      "--eval-batches", "1", "--data", str(small_corpus), "--tracking-uri", uri,
                      "--no-log-checkpoint", "--out-dir", str(root / "runs"), "--cache-dir", str(root / "cache"),
                      "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["variant"] == "dyt+swiglu"

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    assert run.data.tags["ablate.slot.norm"] == "dyt"
    provenance = json.loads(run.data.tags["ablate.plugins"])
    assert {"kind": "entry_point", "name": "dyt", "value": "ablate_dyt", "distribution": "ablate-dyt",
            "version": "0.1.0"} in provenance
    digest = hashlib.sha256(venv["local"].read_bytes()).hexdigest()
    assert {"kind": "file", "path": str(venv["local"]), "sha256": digest} in provenance
    assert not any(p.get("distribution") == "ablate-broken" for p in provenance)  # it loaded nothing
    assert json.loads(run.data.tags["ablate.components"]) == {"dyt": "plugin ablate-dyt 0.1.0"}  # what compare reads


def test_example_plugin_tests_pass_once_installed(venv):
    """The plugin author's own test file: the one-liner ``check_component("dyt")`` and a unit test."""
    done = subprocess.run([str(venv["python"]), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=venv["example"], capture_output=True, text=True, timeout=180,
                          env={k: v for k, v in os.environ.items() if k != "ABLATE_NO_PLUGINS"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


# ------------------------------------------------------------------------------------ in process
@pytest.fixture
def isolated_plugins(monkeypatch):
    """Undo whatever a test registers or records, so the rest of the suite sees the built-ins only."""
    ensure_loaded()
    before = {slot: set(reg.names()) for slot, reg in REGISTRIES.items()}
    modules = set(sys.modules)
    monkeypatch.setattr(plugins, "_LOADED", list(plugins._LOADED))
    monkeypatch.setattr(plugins, "_FILES", dict(plugins._FILES))
    yield
    for slot, reg in REGISTRIES.items():
        for name in set(reg.names()) - before[slot]:
            reg.remove(name)
    for name in set(sys.modules) - modules:
        if name.startswith(("ablate_plugin_", "ablate_test_")):
            del sys.modules[name]


def test_load_file_records_path_and_hash(tmp_path, isolated_plugins):
    path = tmp_path / "scalenorm.py"
    path.write_text(LOCAL_PLUGIN)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    load_file(path)
    load_file(str(path))  # the same file again: nothing new
    spec = lookup("scalenorm")
    assert spec.origin == f"file {path.resolve()} sha256:{digest[:12]}"
    assert loaded_plugins().count({"kind": "file", "path": str(path.resolve()), "sha256": digest}) == 1


def test_generated_checks_run_on_a_file_plugin(isolated_plugins, monkeypatch):
    """check_component("dyt") on the installed plugin runs in test_example_plugin_tests_pass_once_installed;
    here the same checks run on a file plugin, alone and through a variant file that names it."""
    from ablate.variant import parse_variant

    load_file(EXAMPLE / "ablate_dyt" / "__init__.py")  # a one-file plugin loads without installing
    assert lookup("dyt").origin.startswith("file ")
    assert "dyt+swiglu" in set(pair_variants("dyt"))
    check_variant("dyt")
    monkeypatch.setenv("ABLATE_VARIANTS_PATH", str(EXAMPLE / "variants"))
    variant = parse_variant("llama-dyt")  # a variant file naming a plugin component
    assert variant["norm"].name == "dyt" and variant["position"].name == "rope"
    check_variant("llama-dyt")


@pytest.mark.parametrize(
    "text,needle",
    [
        (None, "not found"),
        ("x = (\n", "syntax error in plugin file"),
        (LOCAL_PLUGIN.replace('"scalenorm"', '"rmsnorm"'), "'rmsnorm' is already registered"),
        (LOCAL_PLUGIN.replace('"scalenorm"', '"baseline"'), "is an architecture preset's"),
        (LOCAL_PLUGIN.replace("(Norm)", "(object)"), "does not subclass Norm"),
        (LOCAL_PLUGIN.replace(', paper="Nguyen & Salazar 2019, Transformers without Tears (ScaleNorm)"', ""),
         "needs paper="),
        ("from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Opts:\n    eps: float\n"
         + LOCAL_PLUGIN.replace('paper="Nguyen', 'options=Opts, paper="Nguyen'),
         "need a default for every field; eps has none"),
        ("from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Opts:\n    eps: float = None\n"
         + LOCAL_PLUGIN.replace('paper="Nguyen', 'options=Opts, paper="Nguyen'),
         "eps is declared float but defaults to None"),
        ("from ablate.registry import option\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\n"
         "class Opts:\n    eps: float = option(0.0, gt=0)\n"
         + LOCAL_PLUGIN.replace('paper="Nguyen', 'options=Opts, paper="Nguyen'),
         "the default eps=0.0 is outside its own range (> 0)"),
        ("from dataclasses import dataclass, field\n\n@dataclass(frozen=True)\nclass Opts:\n"
         "    sizes: list = field(default_factory=lambda: [1, 2])\n"
         + LOCAL_PLUGIN.replace('paper="Nguyen', 'options=Opts, paper="Nguyen'),
         "sizes defaults to a default_factory; an option is a number, boolean or string"),
        (LOCAL_PLUGIN.replace('"scalenorm"', '"tiny"'), "is a size preset's"),
        (LOCAL_PLUGIN.replace('"scalenorm"', '"tie"'), "is a model option's (written tie=... in a variant)"),
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) while loading, line 2; a plugin file only registers"),
    ],
)
def test_bad_plugin_files_are_one_line_errors(tmp_path, text, needle, capsys, isolated_plugins):
    path = tmp_path / "plug.py"
    if text is not None:
        path.write_text(text)
    assert main(["--plugin", str(path), "list", "norm"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert lookup("rmsnorm").origin == "built-in" and "scalenorm" not in REGISTRIES["norm"]
    assert not any(p["kind"] == "file" for p in loaded_plugins())


def test_a_bug_in_a_plugin_file_is_one_line_naming_its_line_and_registers_nothing(tmp_path, isolated_plugins):
    path = tmp_path / "buggy.py"
    path.write_text(LOCAL_PLUGIN + "\nraise RuntimeError('bug in the plugin')\n")
    line = len(LOCAL_PLUGIN.splitlines()) + 2
    with pytest.raises(AblateError, match=f"raised RuntimeError while loading, line {line}: bug in the plugin; fix"):
        load_file(path)
    assert "scalenorm" not in REGISTRIES["norm"]
    with pytest.raises(AblateError, match="not a .py file"):
        load_file(tmp_path / "plugin.txt")


def test_a_plugin_file_whose_dependency_is_missing_is_a_one_line_error(tmp_path, isolated_plugins):
    path = tmp_path / "needs.py"
    path.write_text("import ablate_no_such_dependency\n" + LOCAL_PLUGIN)
    with pytest.raises(AblateError, match="imports ablate_no_such_dependency, which is not installed") as err:
        load_file(path)
    assert "\n" not in str(err.value) and "scalenorm" not in REGISTRIES["norm"]
    path.write_text("from . import helpers\n" + LOCAL_PLUGIN)
    with pytest.raises(AblateError, match="uses a relative import"):
        load_file(path)


def test_failing_entry_point_is_one_warning_and_leaves_nothing(tmp_path, monkeypatch, isolated_plugins):
    write_tree(tmp_path, {"ablate_test_boom.py": BROKEN_PACKAGE["ablate_broken/boom.py"]})
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="boom", value="ablate_test_boom", group=plugins.ENTRY_POINT_GROUP)
    with pytest.warns(PluginWarning) as caught:
        assert plugins._load_entry_point(ep) is False
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'boom'" in message and "RuntimeError: boom at import" in message
    assert caught[0].filename.endswith("ablate_test_boom.py")  # points at the plugin's failing line
    assert "halfway" not in REGISTRIES["norm"]
    assert not any(p.get("name") == "boom" for p in loaded_plugins())


def test_entry_point_imported_early_gets_its_plugin_origin(tmp_path, monkeypatch, isolated_plugins):
    write_tree(tmp_path, {"ablate_test_early.py": LOCAL_PLUGIN})
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("ablate_test_early")  # e.g. by the plugin's own tests, before autoload
    assert lookup("scalenorm").origin == "module ablate_test_early"
    ep = EntryPoint(name="early", value="ablate_test_early", group=plugins.ENTRY_POINT_GROUP)
    assert plugins._load_entry_point(ep) is True
    assert lookup("scalenorm").origin == "plugin unknown unknown"  # no distribution behind this one


def test_autoload_runs_once_and_not_when_switched_off(monkeypatch):
    calls = []
    monkeypatch.setattr(plugins, "_entry_points", lambda: calls.append(1) or [])
    monkeypatch.setattr(plugins, "_AUTOLOADED", False)
    monkeypatch.setenv("ABLATE_NO_PLUGINS", "1")
    plugins.autoload()
    assert calls == []
    monkeypatch.setenv("ABLATE_NO_PLUGINS", "0")
    plugins.autoload()
    plugins.autoload()
    assert calls == [1]


@pytest.mark.parametrize("path", sorted((REPO / "variants").glob("*.toml")), ids=lambda p: p.stem)
def test_named_variant_files_resolve(path, monkeypatch):
    from ablate.variant import parse_variant, read_variant_file

    monkeypatch.setenv("ABLATE_VARIANTS_PATH", str(REPO / "variants"))
    assert read_variant_file(path)
    variant = parse_variant(path.stem)
    assert variant.name != "baseline"


def test_a_plugin_study_hints_its_report_with_the_plugin(tmp_path, isolated_plugins, small_corpus, mlflow_uri, capsys):
    """The hint at the end of `study run` must work when followed: it repeats --plugin; without the plugin, the
    unknown component's message names --plugin."""
    from test_study import write_study

    path = tmp_path / "scalenorm.py"
    path.write_text(LOCAL_PLUGIN)
    file = write_study(tmp_path / "plug.toml", small_corpus, name="plug", seeds=1, variants=["baseline", "scalenorm"])
    where = ["--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]
    assert main(["--plugin", str(path), "study", "run", str(file), *where]) == 0
    assert f"verdict: ablate --plugin {path} study report {file}" in capsys.readouterr().out
    for slot, reg in REGISTRIES.items():  # as a new process without --plugin would be
        if "scalenorm" in reg.names():
            reg.remove("scalenorm")
    assert main(["study", "status", str(file), *where]) == 2
    assert "needs --plugin FILE.py" in capsys.readouterr().err


def test_a_study_refuses_another_version_of_its_plugins_code(tmp_path, isolated_plugins, small_corpus, mlflow_uri,
                                                             capsys, monkeypatch):
    """Runs of two versions of a plugin component were pooled in one verdict: the study's identity now holds
    the origin (file and content hash) of every plugin component its variants use."""
    import ablate.cli.study as cli_study
    from test_study import write_study

    monkeypatch.setattr(cli_study, "_run_round", lambda args, ctx, threads: 0)  # train nothing
    path = tmp_path / "scalenorm.py"
    path.write_text(LOCAL_PLUGIN)
    file = write_study(tmp_path / "plug.toml", small_corpus, name="plugv", seeds=1, variants=["baseline", "scalenorm"])
    where = ["--tracking-uri", mlflow_uri, "--state-dir", str(tmp_path)]
    assert main(["--plugin", str(path), "study", "run", str(file), *where]) == 1  # 1: its trials are not done
    assert main(["--plugin", str(path), "study", "run", str(file), *where]) == 1  # the same code: no refusal

    def as_a_new_process():
        for slot, reg in REGISTRIES.items():
            if "scalenorm" in reg.names():
                reg.remove("scalenorm")
        plugins._FILES.clear()

    as_a_new_process()
    moved = tmp_path / "elsewhere" / "scalenorm.py"  # the same code at another path (a moved checkout, another host)
    moved.parent.mkdir()
    moved.write_text(LOCAL_PLUGIN)
    assert main(["--plugin", str(moved), "study", "run", str(file), *where]) == 1
    as_a_new_process()
    path.write_text(LOCAL_PLUGIN + "\n# tuned\n")
    capsys.readouterr()
    assert main(["--plugin", str(path), "study", "run", str(file), *where]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with other settings (plugins.scalenorm:" in err and "--name NEW" in err, err
    from ablate.study import Context, load_study, storage_url

    spec = load_study(file)  # a study made before plugin code was part of its identity: no record to compare
    main_study = Context(spec, storage_url(spec, None, tmp_path), tracking_uri=mlflow_uri).main()
    identity = dict(main_study.user_attrs["ablate.identity"])
    identity.pop("plugins")
    main_study.set_user_attr("ablate.identity", identity)
    assert main(["--plugin", str(path), "study", "run", str(file), *where]) == 1


@pytest.mark.parametrize("edit,needle", [
    (("self.scale = nn.Parameter(torch.tensor(dim ** 0.5))", "raise RuntimeError('boom in init')"),
     "cannot be built with its plugin component brokennorm: RuntimeError: boom in init at {path}, line"),
    (("return self.scale * x", "return (self.scale * x)[..., :-1]"),
     "fails a forward or backward pass with its plugin component brokennorm: RuntimeError: mat1 and mat2 shapes"),
    (("return self.scale * x", "return x.sum()"),
     "fails a forward or backward pass with its plugin component brokennorm"),
    (("self.scale = nn.Parameter(torch.tensor(dim ** 0.5))", "raise ValueError('bad width')"),  # named, with its line
     "cannot build brokennorm at width 64, 4 heads: bad width (raised at {path}, line"),
    (("return self.scale * x", "y = torch.sigmoid(x)\n        y.mul_(x)\n        return y"),  # breaks its backward
     "fails a forward or backward pass with its plugin component brokennorm: RuntimeError: one of the variables "
     "needed for gradient computation has been modified by an inplace operation"),
    (("return self.scale * x", "return x + x.roll(-1, dims=1) if self.training else x"),  # only while training
     "changing the last token changed earlier positions' logits, or another sequence's in training mode"),
    (("self.scale = nn.Parameter(torch.tensor(dim ** 0.5))", "self.table = nn.Parameter(torch.ones(24, dim))"),
     "failed at step 0 with its plugin component brokennorm: RuntimeError"),
    (("return self.scale * x", "return x.mean(dim=1, keepdim=True) + 0 * x"),  # broadcasts: the shape is right
     "changing the last token changed earlier positions' logits, or another sequence's"),
    (("return self.scale * x", "return x.mean(dim=0, keepdim=True) + 0 * x"),  # mixes the batch
     "changing the last token changed earlier positions' logits, or another sequence's"),
])
def test_a_plugin_component_that_breaks_at_run_time_is_one_line(edit, needle, tmp_path, isolated_plugins, capsys):
    """An exception in a plugin component's __init__, or a forward of the wrong shape, was a traceback from
    inside torch; the variant is now built and run forward once on a few tokens, and a failure names it."""
    assert edit[0] in LOCAL_PLUGIN
    path = tmp_path / "brokennorm.py"
    text = LOCAL_PLUGIN.replace(edit[0], edit[1]).replace('"scalenorm"', '"brokennorm"')
    if "self.table" in text:  # positions past the 24th fail: beyond the probe's 16, within the run's 64
        text = text.replace("return self.scale * x", "return x * self.table[: x.shape[-2]]")
    path.write_text(text)
    assert main(["--plugin", str(path), "run", "--variant", "brokennorm", "--size", "tiny", "--budget", "2steps",
                 "--no-track", "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle.format(path=path) in err and "check_component('brokennorm')" in err, err


@pytest.mark.parametrize("forward,match", [
    ("return self.scale * x.mean(dim=1, keepdim=True) + 0 * x", "changed earlier logits by"),
    ("return self.scale * (x - x.mean(dim=0, keepdim=True))", "changed another sequence's logits by .*mixes the sequences"),
    ("return self.scale * (x + x.roll(-1, dims=1) if self.training else x)", "changed earlier logits by .* in "
                                                                             "training mode"),
    ("return self.scale * x * torch.ones(24, x.shape[-1])[: x.shape[-2]]", "The size of tensor a"),  # a length fixed in the code
])
def test_check_component_keeps_its_own_diagnosis_of_a_broken_plugin(forward, match, tmp_path, isolated_plugins):
    """ablate.testing builds without the run's probe: a causality bug fails check_component's own assertion
    (which says what changed where), not a message that points back at check_component. It checks what the
    run's probe checks and more: the batch kept apart, training mode, and a context longer than its own."""
    from ablate.testing import check_component

    path = tmp_path / "leaky.py"
    path.write_text(LOCAL_PLUGIN.replace("return self.scale * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-5)",
                                         forward).replace('"scalenorm"', '"leakynorm"'))
    load_file(path)
    with pytest.raises((AssertionError, RuntimeError), match=match):
        check_component("leakynorm")


def test_a_plugin_file_with_module_level_argparse_sees_no_ablate_flags(tmp_path, isolated_plugins):
    path = tmp_path / "argp.py"
    path.write_text("import argparse\nARGS = argparse.ArgumentParser().parse_args()\n" + LOCAL_PLUGIN)
    load_file(path)  # sys.argv holds only the file while it loads, so parse_args() finds nothing to refuse
    assert "scalenorm" in REGISTRIES["norm"]


def test_a_float_option_with_an_int_default_takes_a_float(tmp_path, isolated_plugins):
    path = tmp_path / "intdefault.py"
    path.write_text("from dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass Opts:\n    scale: float = 1\n"
                    + LOCAL_PLUGIN.replace('paper="Nguyen', 'options=Opts, paper="Nguyen'))
    load_file(path)
    assert lookup("scalenorm").make_options({"scale": 0.5}).scale == 0.5
    with pytest.raises(AblateError, match="must be float"):
        lookup("scalenorm").make_options({"scale": "big"})


NO_CACHE_PLUGIN = '''
from ablate.components.attention.mha import MHAOptions, MultiHeadAttention
from ablate.registry import register


@register("attention", "nocache", paper="a test", options=MHAOptions)
class NoCache(MultiHeadAttention):
    """Multi-head attention that cannot decode with a cache."""

    def forward(self, x, position, pos, cache=None):
        if cache is not None:
            raise NotImplementedError("no KV cache here")
        return super().forward(x, position, pos)
'''


def test_a_mixer_without_a_kv_cache_samples_without_one(tmp_path, isolated_plugins, capsys):
    """sample (and the run's own sample) fall back to uncached decoding; bench decode, which times the cache,
    says in one line that the variant has none."""
    path = tmp_path / "nocache.py"
    path.write_text(NO_CACHE_PLUGIN)
    with pytest.warns(UserWarning, match="decode speed not measured"):  # the run's own decode timing
        assert main(["--plugin", str(path), "run", "--variant", "nocache", "--size", "tiny", "--budget", "2steps",
                     "--no-track", "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["--plugin", str(path), "sample", "--run", str(run_dir), "--tokens", "20"]) == 0
    assert len(capsys.readouterr().out.strip()) >= 20
    assert main(["--plugin", str(path), "bench", "decode", "--variants", "nocache", "--size", "tiny", "--repeats", "1",
                 "--prompt", "2", "--new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot decode with a KV cache (no KV cache here)" in err, err


def test_an_edited_plugin_is_another_run_not_the_finished_one(tmp_path, isolated_plugins, capsys):
    """A run's directory hashes its plugin components' code: after an edit the same command trains the new
    code (it answered "this run has finished already" with the old code's result), and --resume of the old
    code's checkpoint starts over, saying why."""
    path = tmp_path / "scalenorm.py"
    path.write_text(LOCAL_PLUGIN)
    common = ["run", "--variant", "scalenorm", "--size", "tiny", "--budget", "2steps", "--no-track",
              "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["--plugin", str(path), *common]) == 0
    assert main(["--plugin", str(path), *common]) == 0
    assert "has finished already" in capsys.readouterr().err  # the same code: the same run
    assert len(list((tmp_path / "runs").iterdir())) == 1
    plugins._FILES.clear()  # a new process, with the file edited
    REGISTRIES["norm"].remove("scalenorm")
    path.write_text(LOCAL_PLUGIN.replace("clamp_min(1e-5)", "clamp_min(1e-6)"))
    assert main(["--plugin", str(path), *common, "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_check_component_catches_an_attention_that_ignores_the_rotary_it_provides(tmp_path, isolated_plugins):
    """An attention that declares rotary/attn_bias but never calls them passed check_component, and
    norotate+rope trained with no position signal at all."""
    from ablate.testing import check_component

    path = tmp_path / "norotate.py"
    path.write_text(textwrap.dedent('''
        from ablate.components.attention.mha import MHAOptions, MultiHeadAttention
        from ablate.registry import register


        class Blind:
            def rotate(self, q, k, pos):
                return q, k

            def attn_bias(self, n_heads, pos_q, pos_k):
                return None


        @register("attention", "norotate", paper="a test", options=MHAOptions,
                  provides=("rotary", "attn_bias", "kv_cache"))
        class NoRotate(MultiHeadAttention):
            """Multi-head attention that never lets the position act."""

            def forward(self, x, position, pos, cache=None):
                return super().forward(x, Blind(), pos, cache)
    '''))
    load_file(path)
    with pytest.raises(AssertionError, match=r"norotate provides '(attn_bias|rotary)' but its forward called "
                                             r"position\.(attn_bias|rotate)\(\) 0 times"):
        check_component("norotate")


def test_the_readme_component_example_loads_and_passes_the_checks(tmp_path, isolated_plugins):
    """The README's "Add a component in three steps" file, as printed there, registers and passes."""
    readme = (REPO / "README.md").read_text()
    code = readme.split("```python\n# my_mlp.py\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my_mlp.py"
    path.write_text(code)
    load_file(path)
    assert lookup("silu").slot == "mlp"
    check_variant("silu")
    check_variant("silu+rope")


def test_the_reserved_model_option_names_are_the_model_options():
    """registry cannot import ablate.variant (an import cycle), so it keeps the model options' names as a
    tuple: this keeps the copy true."""
    import dataclasses

    from ablate.registry import MODEL_OPTION_NAMES
    from ablate.variant import ModelOptions

    assert set(MODEL_OPTION_NAMES) == {f.name for f in dataclasses.fields(ModelOptions)}
