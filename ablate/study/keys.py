"""Names of what ablate stores on Optuna studies and trials, and the study's timing constants."""

HEARTBEAT_SECONDS = 60.0
GRACE_SECONDS = 180.0
MAX_RETRY = 3

K_WORKER = "ablate.worker"
K_BEAT = "ablate.heartbeat"
K_RUN = "ablate.mlflow_run_id"
K_SKIP = "ablate.skipped"
K_STATUS = "ablate.status"
K_STALLED = "ablate.stalled"  # on a finished trial whose run stalled: why (ablate.report.stability)
K_FAILURE = "ablate.failure"  # a study attribute per failed trial: see failure_key
K_POINT = "ablate.point"  # the (variant, seed[, lr]) a queued trial stands for


def failure_key(number: int) -> str:
    """The study attribute that says why a reaper failed trial ``number`` (set with ``study.set_user_attr``)."""
    return f"{K_FAILURE}.{number}"
