#!/usr/bin/env bash
# Run the static checks, then the test suite (sets up .venv first if needed). Extra args
# go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast unit tests only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
bin=.venv/bin
echo "== ruff check" && "$bin/ruff" check .
echo "== ruff format --check" && "$bin/ruff" format --check .
echo "== mypy" && "$bin/mypy"
echo "== lint-imports" && "$bin/lint-imports"
echo "== pytest"
exec "$bin/python" -m pytest -q -p no:cacheprovider "$@"
