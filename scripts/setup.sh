#!/usr/bin/env bash
# Create .venv in the repo root and install ablate into it (idempotent; re-runs only when
# pyproject.toml changes). The pinned CPU torch goes in first so pip never resolves a CUDA build.
# GPU users: ABLATE_TORCH="torch==2.13.0" ABLATE_TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${ABLATE_TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"
stamp=".venv/.ablate-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv (torch: $TORCH_SPEC): a few minutes the first time, nothing after that" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "  1/2 installing $TORCH_SPEC (the pinned build first, so pip never picks another) ..." >&2
if [ -n "${ABLATE_TORCH_INDEX:-}" ]; then
  .venv/bin/pip install -q "$TORCH_SPEC" --index-url "$ABLATE_TORCH_INDEX"
else
  .venv/bin/pip install -q "$TORCH_SPEC"
fi
echo "  2/2 installing ablate and its dependencies (numpy, tiktoken, optuna, mlflow, rich, scipy, matplotlib) ..." >&2
.venv/bin/pip install -q -e ".[dev,postgres]"
echo "  .venv ready" >&2
echo "$want" > "$stamp"
