#!/usr/bin/env bash
# The main job: set up .venv if needed, then run `ttsearch demo` (extra args go to it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/ttsearch demo "$@"
