#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with the pinned dependencies.
# Usage: bash scripts/setup_env.sh [test]   ("test" adds pytest, scikit-learn and import-linter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test]"
stamp=".venv/.installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # Installs the pinned dependencies only (the project itself runs from this folder).
  .venv/bin/python -m pip install --quiet ".${extras}"
  touch "$stamp"
fi
