#!/usr/bin/env bash
# The GPU check of issue 8, as one command on a fresh GPU machine (torch only, no network):
#
#   bash benchmarks/gpu/run.sh stage   # once per staged chunk (see stage.sh): copy it to /tmp/stage
#   bash benchmarks/gpu/run.sh         # everything below, ~8-10 minutes on an H200
#                                      # (the `run` call carries .gpu-shared: tokenizers, MATH-500)
#
# 1. installs vLLM 0.26 and ttsearch's needs from /tmp/stage into /tmp/site (skipped when
#    `import vllm` already works, or /tmp/site holds them);
# 2. builds a Llama-3.2-1B-shaped calibrated policy and a Llama-3.1-8B-shaped PRM with the
#    real Llama 3 tokenizer (benchmarks/gpu/build_models.py; random weights);
# 3. runs the integration tests (tests/integration, real vLLM engines) -> $OUT/tests.log;
# 4. runs benchmarks/throughput.py on MATH-500 prompts (beam search, DVTS, best-of-N at N
#    in $NS, ttsearch vs the lockstep baseline) -> $OUT/throughput.json, $OUT/throughput.log.
#
# Knobs: NS ("16 64"), PROBLEMS (20), MAX_TOKENS (1024), SKIP_TESTS=1, MODELS (/tmp/models),
# BENCH_TIMEOUT (330 s; throughput.json is rewritten after every method x N, so a cut-short
# run still returns what it measured). Engines start with enforce_eager (--eager): CUDA
# graphs would take ~3 min of the 10.
# Run it with PYTHONUNBUFFERED=1 so the logs come back even if the call is cut short.
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
OUT="${OUT:-/tmp/ttsearch-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"

if [ "${1:-all}" = "stage" ]; then
  mkdir -p /tmp/stage && cp .stage/c*/part.* /tmp/stage/ && ls -la /tmp/stage
  exit 0
fi

started=$(date +%s)
log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$OUT/run.log"; }

# -- 1. vLLM --------------------------------------------------------------------------
if ! python3 -c "import vllm" 2>/dev/null; then
  if [ ! -d /tmp/site/vllm ]; then
    if ! ls /tmp/stage/part.* >/dev/null 2>&1; then
      log "no vLLM and nothing staged in /tmp/stage: run benchmarks/gpu/stage.sh here and 'run.sh stage' there first"
      exit 2
    fi
    log "installing vLLM from /tmp/stage"
    (cd /tmp/stage && cat part.* > all.tar && tar xf all.tar && \
     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site w/*.whl) \
      >> "$OUT/install.log" 2>&1 || { log "install failed (see install.log)"; exit 3; }
  fi
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$repo:${PYTHONPATH:-}"
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" \
  2>&1 | tee -a "$OUT/run.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/run.log" 2>&1 || true

# -- 2. models ------------------------------------------------------------------------
MODELS="${MODELS:-/tmp/models}"
export TTSEARCH_SHARED="${TTSEARCH_SHARED:-$repo/../shared}"
# ../shared does not travel to a device machine: stage.sh copies what is needed to .gpu-shared.
[ -d "$TTSEARCH_SHARED/tokenizers/llama3" ] || export TTSEARCH_SHARED="$repo/.gpu-shared"
log "building models under $MODELS"
python3 benchmarks/gpu/build_models.py --out "$MODELS" 2>&1 | tee -a "$OUT/run.log"

# -- 3. integration tests ------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  log "integration tests"
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/integration/test_prm_single_pass.py \
    tests/integration/test_vllm_prm.py > "$OUT/tests.log" 2>&1
  log "tests exit $? ($(tail -1 "$OUT/tests.log"))"
fi

# -- 4. the benchmark ------------------------------------------------------------------
log "throughput benchmark"
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/throughput.py --models "$MODELS" \
  --dataset "$TTSEARCH_SHARED/data/math500.jsonl" --problems "${PROBLEMS:-20}" --ns ${NS:-16 64} \
  --max-tokens "${MAX_TOKENS:-1024}" --max-model-len 4096 --policy-memory 0.25 --prm-memory 0.5 \
  --max-concurrent 64 --prm-in-flight 1024 --eager --out "$OUT/throughput.json" 2>&1 | grep -v "WARNING" | tee "$OUT/throughput.log"
log "done"
