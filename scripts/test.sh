#!/usr/bin/env bash
# Set up .venv (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# The layer contracts in pyproject.toml ([tool.importlinter]); see docs/extending.md#layers.
.venv/bin/lint-imports --no-logo
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python -m pytest -q "$@"
