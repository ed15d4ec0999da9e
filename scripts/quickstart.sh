#!/usr/bin/env bash
# The main job: set up .venv if needed, run the quickstart ablation study, print its verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# --report: the verdict table (for the same flags, e.g. --set seeds=5), then how to open the MLflow UI
.venv/bin/ablate study run studies/quickstart.toml --report "$@"
