#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=true
# Offline copies of the public data for the tests (the product itself never reads ../shared).
if [ -d ../shared/data ]; then
  export ABLATE_TEST_TINYSHAKESPEARE="${ABLATE_TEST_TINYSHAKESPEARE:-$(cd ../shared/data && pwd)/tinyshakespeare/input.txt}"
  export ABLATE_TEST_GPT2_RANKS="${ABLATE_TEST_GPT2_RANKS:-$(cd ../shared/data && pwd)/tiktoken/gpt2.tiktoken}"
fi
exec .venv/bin/python -m pytest "$@"
