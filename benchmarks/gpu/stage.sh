#!/usr/bin/env bash
# Stage everything benchmarks/gpu/run.sh installs on a GPU machine with torch 2.11+cu130
# and Python 3.12 but no vLLM and no network: vLLM 0.26.0 and its closure
# (../shared/device/vllm-gpu-pins.txt, read its header) plus ttsearch's own needs
# (extra-pins.txt), packed into .stage/cNN chunk folders (git-ignored).
#
#   bash benchmarks/gpu/stage.sh          # here, with network (a few minutes, ~1 GB)
#
# Then, on the device machine (one `run` per chunk, each carrying one .stage/cNN folder):
#   bash benchmarks/gpu/run.sh stage      # copies the carried chunk to /tmp/stage
# and finally, carrying the last chunk and .gpu-shared:
#   bash benchmarks/gpu/run.sh            # installs, builds the models, benchmarks, tests -> $OUT
# A call's tree (tracked files ~9 MB + what it carries) is capped at 64 MiB: chunks of
# 57.5 MB leave room for the repo, and the last, small chunk travels with .gpu-shared.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
shared="${TTSEARCH_SHARED:-$repo/../shared}"
cache="${VLLM_STAGE_CACHE:-/tmp/vllm-gpu-wheels}"
rm -rf "$cache/w" && mkdir -p "$cache/w"
plat=()
for p in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
         manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do plat+=(--platform "${p}_x86_64"); done
common=(-q --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" --platform any -d "$cache/w")
python3 -m pip download --no-deps "${common[@]}" -r "$shared/device/vllm-gpu-pins.txt"
# ttsearch's needs that the device image lacks (extra-pins.txt says why --no-deps).
python3 -m pip download --no-deps "${common[@]}" -r "$repo/benchmarks/gpu/extra-pins.txt"
(cd "$cache" && tar cf all.tar w && rm -f part.* && split -b "${VLLM_STAGE_CHUNK:-57500000}" -d all.tar part.)
cd "$repo"
grep -qxF '/.stage/' .git/info/exclude 2>/dev/null || echo '/.stage/' >> .git/info/exclude
rm -rf .stage && mkdir -p .stage
for p in "$cache"/part.*; do n="${p##*.}"; mkdir -p ".stage/c$n"; cp "$p" ".stage/c$n/"; done
# ../shared does not travel to the device machine: copy what the tests and the benchmark
# read (tokenizers, MATH-500) into .gpu-shared/ (git-ignored; ~17 MB), carried by the last call.
grep -qxF '/.gpu-shared/' .git/info/exclude 2>/dev/null || echo '/.gpu-shared/' >> .git/info/exclude
rm -rf .gpu-shared && mkdir -p .gpu-shared/data
cp -r "$shared/tokenizers" .gpu-shared/ && cp "$shared/data/math500.jsonl" .gpu-shared/data/
echo "staged: $(ls -d .stage/c* | tr '\n' ' ') and .gpu-shared"
