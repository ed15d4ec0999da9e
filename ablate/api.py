"""The Python API for notebooks: keyword-argument functions over what the commands do.

``ablate.train`` and ``ablate.compare`` are the library functions themselves; ``ablate.run_study``
runs a study file through the very command functions of ``ablate study run`` and ``ablate study
report --json`` (same checks, same defaults, same files), and returns the report as a dict. A user's
mistake raises :class:`ablate.errors.AblateError` with the one-line message the CLI would print.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any


def _flags(options: dict[str, Any]) -> list[str]:
    """Keyword arguments as the command's flags: ``state_dir="x"`` -> ``--state-dir x``, ``fresh=True``
    -> ``--fresh``, ``set={"seeds": 5}`` -> ``--set seeds=5``; None and False are left out."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if key == "set":
            if not isinstance(value, dict):
                raise TypeError(f"set= takes a dict of study settings, e.g. set={{\"seeds\": 5}}, got {value!r}")
            for name, setting in value.items():
                argv += ["--set", f"{name}={json.dumps(setting) if not isinstance(setting, str) else setting}"]
        elif value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def _command(argv: list[str]):
    from ablate.cli import build_parser
    from ablate.errors import AblateError

    parser = build_parser()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # argparse's own message: an unknown option or a bad value
            message = err.getvalue().strip().splitlines()[-1].removeprefix("ablate: error: ")
            raise AblateError(message.split(" (see ablate")[0]) from None  # the CLI's prefix and --help hint
    return args


def run_study(file: str | Path, *, workers: int = 1, report: bool = True, **options: Any) -> dict[str, Any] | None:
    """Run the study in ``file`` (a ``studies/*.toml``) as ``ablate study run`` does, and return its
    report as ``ablate study report --json`` prints it: ``rows`` (one dict per variant: verdict,
    difference, interval, p), ``runs_used``, ``warnings`` and the study's own tables. Progress is
    printed as in the terminal; ``report.md`` and the figures are written as usual.

    ``options`` are the command's flags as keywords: ``set={"seeds": 5, "budget": "100steps"}``,
    ``name=``, ``state_dir=``, ``storage=``, ``tracking_uri=``, ``experiment=``, ``threads=``,
    ``fresh=True``, ``until_decided=True``, ``margin=``. With ``report=False`` nothing is reported and
    None is returned. A failed trial raises :class:`~ablate.errors.AblateError`.
    """
    from ablate.errors import AblateError

    file = str(file)
    if report:
        from ablate.study import load_study

        if load_study(file).pretrain is not None:  # before training, not after
            raise AblateError("run_study cannot return the report of a pretrain-then-finetune study yet; pass "
                              "report=False, then run `ablate study report` with the same flags and read its report.md")
    from ablate.cli import build_parser

    takes = set(vars(build_parser().parse_args(["study", "run", file]))) - {"func", "file", "command", "study_command",
                                                                          "plugin"}
    unknown = sorted(set(options) - takes)  # exact names: argparse would take --until for --until-decided
    if unknown:
        raise TypeError(f"run_study() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    shared = {k: options.pop(k) for k in ("storage", "state_dir", "gpu", "set", "name", "tracking_uri", "experiment")
              if k in options}
    run = _command(["study", "run", file, "--workers", str(workers), *_flags(shared), *_flags(options)])
    code = run.func(run)
    if code == 130:  # Ctrl-C in a notebook or script: an interrupt, as Python gives it (the study resumes)
        raise KeyboardInterrupt
    if code not in (0, None):
        raise AblateError(f"the study did not complete (exit {code}); see the lines above, then run it again "
                          "to resume")
    if not report:
        return None
    shown = _command(["study", "report", file, "--json", *_flags(shared)])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        shown.func(shown)
    return json.loads(out.getvalue())
