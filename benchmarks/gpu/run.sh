#!/usr/bin/env bash
# The GPU check of issue 8, as prepared commands on a fresh GPU machine (torch only, no network):
#
#   bash benchmarks/gpu/run.sh stage          # once per staged chunk (see stage.sh): copy it to /tmp/stage
#   SKIP_TESTS=1 bash benchmarks/gpu/run.sh   # install, models, benchmark (~6 min; carry the last
#                                             # chunk and .gpu-shared: tokenizers, MATH-500)
#   SKIP_BENCH=1 bash benchmarks/gpu/run.sh   # on the same warm machine: the integration tests (~4 min)
#
# (one call without SKIP_* does both, but runs past the device tool's 10 minutes a call).
# 1. installs vLLM 0.26 and ttsearch's needs from /tmp/stage into /tmp/site (skipped when
#    `import vllm` already works, or /tmp/site holds them);
# 2. builds a Llama-3.2-1B-shaped calibrated policy with the real Llama 3 tokenizer
#    (benchmarks/gpu/build_models.py) and a Llama-3.1-8B-shaped PRM whose random weights
#    vLLM draws itself (load_format "dummy": the cost of an 8B PRM, no 16 GB to write);
#    both are kept in $MODELS for the next call;
# 3. runs benchmarks/throughput.py on MATH-500 prompts (beam search, DVTS, best-of-N at N
#    in $NS, ttsearch vs the lockstep baseline; a lockstep run starts no new batch after
#    $LOCKSTEP_LIMIT s and is compared per problem) -> $OUT/throughput.json, throughput.log
#    (a progress line every 15 s: problems done, policy / PRM calls and tokens);
# 4. runs the integration tests (real vLLM engines on tiny models) -> $OUT/tests.log.
#
# Every phase has its own time limit and runs in its own process group, killed whole when
# it ends, so a phase cut short leaves no engine holding GPU memory for the next.
# throughput.json is rewritten after every method x N, so a cut-short run keeps what it
# measured. Knobs: NS ("16 64"), PROBLEMS (20), MAX_TOKENS (1024), LOCKSTEP_LIMIT (60 s),
# BENCH_TIMEOUT (330 s), TEST_TIMEOUT (240 s), SKIP_TESTS=1, SKIP_BENCH=1, MODELS
# (/tmp/models). Engines start with enforce_eager (--eager): CUDA graphs would take minutes.
#
# Seen on an H200 (2026-12-04, vLLM 0.26.0, torch 2.11.0+cu130): staging 7 chunks ~25 s
# after a ~40 s start; install 23 s; models 23 s; both engines up ~25 s after the
# benchmark starts.
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
OUT="${OUT:-/tmp/ttsearch-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"

# Chunks carried by this call go to /tmp/stage (the last one travels with the final call).
copy_chunks() { ls .stage/c*/part.* >/dev/null 2>&1 && mkdir -p /tmp/stage && cp .stage/c*/part.* /tmp/stage/; }
if [ "${1:-all}" = "stage" ]; then
  copy_chunks; ls -la /tmp/stage
  exit 0
fi
copy_chunks

started=$(date +%s)
log() { echo "[$(( $(date +%s) - started ))s] $*" | tee -a "$OUT/run.log"; }

# phase NAME LIMIT CMD...: CMD in a new process group with a time limit, output to
# $OUT/NAME.log; afterwards the whole group is killed (vLLM engine processes included).
phase() {
  local name=$1 limit=$2; shift 2
  log "$name (limit ${limit}s)"
  setsid timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  wait "$pid"; local rc=$?
  kill -9 -- "-$pid" 2>/dev/null
  sleep 1
  log "$name exit $rc$( [ "$rc" = 124 ] && echo ' (time limit)')"
  return "$rc"
}

# -- 1. vLLM --------------------------------------------------------------------------
if ! python3 -c "import vllm" 2>/dev/null; then
  if [ ! -d /tmp/site/vllm ]; then
    if ! ls /tmp/stage/part.* >/dev/null 2>&1; then
      log "no vLLM and nothing staged in /tmp/stage: run benchmarks/gpu/stage.sh here and 'run.sh stage' there first"
      exit 2
    fi
    log "installing vLLM from /tmp/stage ($(ls /tmp/stage | wc -l) chunks)"
    (cd /tmp/stage && cat part.* > all.tar && tar xf all.tar && \
     python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site w/*.whl) \
      > "$OUT/install.log" 2>&1 || { log "install failed (see install.log)"; tail -5 "$OUT/install.log"; exit 3; }
  fi
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$repo:${PYTHONPATH:-}"
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" \
  2>&1 | tail -1 | tee -a "$OUT/run.log"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader >> "$OUT/run.log" 2>&1 || true

# -- 2. models ------------------------------------------------------------------------
MODELS="${MODELS:-/tmp/models}"
export TTSEARCH_SHARED="${TTSEARCH_SHARED:-$repo/../shared}"
# ../shared does not travel to a device machine: stage.sh copies what is needed to .gpu-shared.
[ -d "$TTSEARCH_SHARED/tokenizers/llama3" ] || export TTSEARCH_SHARED="$repo/.gpu-shared"
phase models 120 python3 benchmarks/gpu/build_models.py --out "$MODELS" --prm-weights dummy
tail -2 "$OUT/models.log" | tee -a "$OUT/run.log"

# -- 3. the benchmark ------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" != "1" ]; then
  phase throughput "${BENCH_TIMEOUT:-330}" python3 benchmarks/throughput.py --models "$MODELS" \
    --dataset "$TTSEARCH_SHARED/data/math500.jsonl" --problems "${PROBLEMS:-20}" --ns ${NS:-16 64} \
    --max-tokens "${MAX_TOKENS:-1024}" --max-model-len 4096 --policy-memory 0.3 --prm-memory 0.5 \
    --gpu-kv-gib 24 40 --prm-dummy-weights --max-concurrent 64 --prm-in-flight 1024 --eager \
    --lockstep-time-limit "${LOCKSTEP_LIMIT:-60}" --heartbeat 15 --out "$OUT/throughput.json"
  grep -E "engines started|N=|speed-up|Error|error" "$OUT/throughput.log" | grep -v WARNING | tail -30
fi

# -- 4. integration tests --------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" != "1" ]; then
  # Warnings are errors in the CPU suite (pyproject); here a new vLLM/torch's warnings would
  # hide the behaviour under test, so they are only reported.
  phase tests "${TEST_TIMEOUT:-240}" python3 -m pytest -v --tb=short -p no:cacheprovider -o "filterwarnings=ignore::Warning" \
    -rfE --timeout 120 tests/integration/test_prm_single_pass.py tests/integration/test_vllm_prm.py \
    tests/integration/test_vllm_policy.py tests/integration/test_search_vllm.py
  grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/tests.log" | tail -60
fi
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$OUT/run.log" 2>&1 || true
log "done"
