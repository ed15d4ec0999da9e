"""One process's view of a study: its spec, storage, MLflow tracking and how it reports."""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.study.keys import GRACE_SECONDS, HEARTBEAT_SECONDS
from ablate.study.spec import StudySpec
from ablate.study.storage import open_storage
from ablate.urls import redact, sqlite_path

@dataclass
class WorkSummary:
    ran: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Context:
    """One process's view of a study: spec, storage, tracking, and how this process reports."""

    spec: StudySpec
    storage_url: str
    tracking_uri: str | None = None
    experiment: str | None = None
    log_checkpoint: bool = False
    label: str = ""
    echo: Callable[[str], None] = print
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    grace_seconds: float = GRACE_SECONDS
    worker_index: int = 0
    must_exist: bool = False  # report / status / worker: never create a journal file
    summary: WorkSummary = field(default_factory=lambda: WorkSummary())
    current_trial: int | None = None  # the trial this process trains now (or trained last)
    _storage: Any = None
    _client: Any = None

    @property
    def storage(self):
        if self._storage is None:
            if self.must_exist and "://" not in self.storage_url and not Path(self.storage_url).exists():
                raise AblateError(f"no study state at {self.storage_url}; run `{self.run_command()}` "
                                  "first, or pass the --storage / --state-dir it used")
            self._storage = open_storage(self.storage_url)
        return self._storage

    def run_command(self) -> str:
        """`ablate study run FILE` with the --gpu, --set and --name that made this study, quoted for a shell."""
        spec = self.spec
        default = spec.file_name + ("-gpu" if spec.gpu else "")
        words = ["ablate", "study", "run", str(spec.path), *(["--gpu"] if spec.gpu else [])]
        words += [w for item in spec.overrides for w in ("--set", item)]  # the --set that made its settings
        words += ["--name", spec.name] if spec.name != default else []
        return shlex.join(words)

    def say(self, text: str) -> None:
        self.echo(f"{self.label}{text}")

    # -- Optuna studies of this study
    def stage_names(self) -> list[str]:
        spec = self.spec
        names = []
        if spec.protocol == "tune-then-compare":
            names += [tune_study_name(spec)] if spec.tune_is_grid else [tune_study_name(spec, v) for v in spec.variants]
        if spec.pretrain is not None:
            names.append(pretrain_study_name(spec))
        names.append(spec.name)
        return names

    def load(self, name: str, sampler=None, pruner=None):
        import optuna

        try:
            return optuna.load_study(study_name=name, storage=self.storage, sampler=sampler, pruner=pruner)
        except KeyError:
            raise AblateError(f"study {name!r} does not exist in {self.storage_url}; create it with "
                              f"`{self.run_command()}` (with the same --storage)") from None

    def main(self, sampler=None, pruner=None):
        return self.load(self.spec.name, sampler, pruner)

    def create_study(self, name: str):
        """Create the Optuna study ``name`` (or open it) with the study's direction and its metric's name,
        which optuna-dashboard and ``trials_dataframe`` show instead of "Objective 0"."""
        import optuna

        from ablate.metrics import direction

        study = optuna.create_study(study_name=name, storage=self.storage, direction=direction(self.spec.metric),
                                    load_if_exists=True)
        if study.metric_names != [self.spec.metric]:  # also names the metric of a study made before
            study.set_metric_names([self.spec.metric])
        return study

    # -- MLflow
    def adopt_tracking(self, attrs: dict[str, Any]) -> None:
        """Unless told otherwise (flag, $MLFLOW_TRACKING_URI), log where the study was created to."""
        stored = attrs.get("ablate.tracking_uri")
        given = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if given and stored and not _same_store(given, stored):  # its runs would be split over two stores
            raise AblateError(f"study {self.spec.name!r} logs to {stored}, not {redact(given)}; leave --tracking-uri "
                              "and $MLFLOW_TRACKING_URI out (or give that store), or run it as a new study with "
                              "--name NEW")
        if self.tracking_uri is None:
            self.tracking_uri = given or stored
            if self.tracking_uri and ":***@" in self.tracking_uri:  # stored without its password
                raise AblateError(f"this study logs to {stored}; give its password through --tracking-uri or "
                                  "$MLFLOW_TRACKING_URI (ablate never stores it)")
        if self.experiment is None:
            self.experiment = attrs.get("ablate.experiment")

    def client(self):
        if self._client is None:
            from ablate.track import client_for

            self._client, self.tracking_uri = client_for(self.tracking_uri)
        return self._client


def _same_store(given: str, stored: str) -> bool:
    """Whether a tracking URI names the store a study recorded (stored redacted; SQLite by its file)."""
    given = redact(given)
    if (path := sqlite_path(given)) is not None and (was := sqlite_path(stored)) is not None:
        return path.resolve() == was.resolve()
    return given.rstrip("/") == stored.rstrip("/")


def tune_study_name(spec: StudySpec, variant: str | None = None) -> str:
    return f"{spec.name}:tune" + (f":{variant}" if variant else "")


def pretrain_study_name(spec: StudySpec) -> str:
    return f"{spec.name}:pretrain"


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*GridSampler.*re-evaluating.*")
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")


def study_role(spec: StudySpec, name: str) -> str:
    if name.startswith(f"{spec.name}:tune"):
        return "tune"
    if spec.pretrain is not None:
        return "pretrain" if name == pretrain_study_name(spec) else "finetune"
    return "search" if spec.protocol == "search" else "compare"
