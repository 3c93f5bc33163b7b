#!/usr/bin/env bash
# Run the test suite (sets up .venv first if needed). Extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast unit tests only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
