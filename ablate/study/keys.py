"""Names of what ablate stores on Optuna studies and trials, and the study's timing constants."""

HEARTBEAT_SECONDS = 60.0
GRACE_SECONDS = 180.0
MAX_RETRY = 3

K_WORKER = "ablate.worker"
K_BEAT = "ablate.heartbeat"
K_RUN = "ablate.mlflow_run_id"
K_SKIP = "ablate.skipped"
K_STATUS = "ablate.status"
K_FAILURE = "ablate.failure"
K_POINT = "ablate.point"  # the (variant, seed[, lr]) a queued trial stands for
