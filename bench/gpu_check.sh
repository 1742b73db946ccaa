#!/usr/bin/env bash
# The one script for a machine with a GPU (no network): build spattn for the card, run the CUDA tests,
# compute-sanitizer (memcheck + racecheck) on a tiny case, then the benchmarks; a summary table comes last.
#
#   bash bench/gpu_check.sh            # from the repository root; logs go to $OUT (if set) or /tmp/spattn_gpu_check
#
# Every stage runs under `timeout` within an overall budget (SPATTN_CHECK_BUDGET_S, default 450 s, under
# 8 minutes), prints timestamped progress, and a failing stage does not stop the next ones; the exit status
# is non-zero when any stage failed. PYTHON overrides the interpreter (default python3).
set -u

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOG_DIR=${OUT:-/tmp/spattn_gpu_check}
mkdir -p "$LOG_DIR"
export SPATTN_BENCH_RESULTS="$LOG_DIR/bench_results.jsonl"
rm -f "$SPATTN_BENCH_RESULTS"
BUDGET_S=${SPATTN_CHECK_BUDGET_S:-450}
START_S=$(date +%s)
FAILED=()
SUMMARY=()

log() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START_S ))s] $*"; }

# stage NAME LIMIT_S COMMAND...: runs COMMAND with its output in $LOG_DIR/NAME.log, within what is left of
# the budget (10 s kept for the table).
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$(( BUDGET_S - 10 - ($(date +%s) - START_S) ))
  if (( left < 5 )); then
    log "SKIP $name: out of time budget"
    FAILED+=("$name(skipped)"); SUMMARY+=("$name: skipped, no time left")
    return 1
  fi
  (( limit > left )) && limit=$left
  log "START $name (limit ${limit}s)"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$LOG_DIR/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  tail -n "${TAIL_LINES:-12}" "$LOG_DIR/$name.log" | sed "s/^/    [$name] /"
  if (( rc == 0 )); then
    log "OK    $name (${took}s)"; SUMMARY+=("$name: ok (${took}s)")
  else
    (( rc == 124 || rc == 137 )) && log "TIMEOUT $name after ${took}s" || log "FAIL  $name (rc=$rc, ${took}s)"
    FAILED+=("$name"); SUMMARY+=("$name: FAILED rc=$rc (${took}s), log $LOG_DIR/$name.log")
  fi
  return $rc
}

# ---- the machine -----------------------------------------------------------------------------------------
stage nvidia_smi 20 nvidia-smi
CAPABILITY=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
ARCHS=${SPATTN_CUDA_ARCHITECTURES:-${CAPABILITY:-80;90}}
log "building for CUDA architectures: $ARCHS"

# ---- build (only the card's architecture, to save time) --------------------------------------------------
if ! command -v nvcc > /dev/null; then
  for candidate in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$candidate/nvcc" ]; then export PATH="$candidate:$PATH"; break; fi
  done
fi
log "nvcc: $(command -v nvcc || echo 'not found') $(nvcc --version 2>/dev/null | tail -n 1)"
if ! stage install 200 "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e . \
    -Cbuild-dir=/tmp/spattn-gpu-build "-Ccmake.define.SPATTN_CUDA_ARCHITECTURES=$ARCHS" -Ccmake.define.SPATTN_CUDA=ON; then
  log "the build failed: nothing else can run"
  printf '%s\n' "${SUMMARY[@]}"
  exit 1
fi
stage build_info 30 "$PYTHON" -c "import spattn, spattn.ops_cuda; print(spattn.build_info())"

# ---- correctness -----------------------------------------------------------------------------------------
TAIL_LINES=40 stage pytest_cuda 150 "$PYTHON" -m pytest tests/test_cuda.py -q -rf --no-header -p no:cacheprovider

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [ -z "$SANITIZER" ]; then
  log "compute-sanitizer not found"; FAILED+=("sanitizer(missing)"); SUMMARY+=("sanitizer: not found")
else
  # "clean" only when the tool's own summary reports 0 errors and the case reached its end. Without torch's
  # caching allocator every tensor is its own allocation, so memcheck sees reads just past a tensor's end.
  for tool in memcheck racecheck; do
    stage "sanitizer_$tool" 75 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" \
      --error-exitcode 1 --print-limit 20 "$PYTHON" bench/sanitizer_case.py
    if grep -qE "(ERROR SUMMARY|RACECHECK SUMMARY).*[ (]0 errors" "$LOG_DIR/sanitizer_$tool.log" \
        && grep -q "every kernel ran" "$LOG_DIR/sanitizer_$tool.log"; then
      SUMMARY+=("sanitizer $tool: clean (0 errors)")
    else
      SUMMARY+=("sanitizer $tool: NOT clean or did not run, see $LOG_DIR/sanitizer_$tool.log")
    fi
  done
fi

# ---- benchmarks (most informative first, so a tight budget loses the least) ------------------------------
stage bench_spattn 60 "$PYTHON" bench/gpu_bench.py attention --method spattn
stage bench_window_sdpa 30 "$PYTHON" bench/gpu_bench.py attention --method window_sdpa
stage bench_bandwidth 20 "$PYTHON" bench/gpu_bench.py bandwidth
stage bench_cusparse 40 "$PYTHON" bench/gpu_bench.py attention --method cusparse
if [ -f python/spattn/timm.py ]; then
  stage bench_timm 90 "$PYTHON" bench/gpu_bench.py timm
fi
stage bench_dense_mask 45 "$PYTHON" bench/gpu_bench.py attention --method dense_mask
stage bench_flex 90 "$PYTHON" bench/gpu_bench.py attention --method flex

# ---- summary, last ---------------------------------------------------------------------------------------
echo
log "stages:"
printf '  %s\n' "${SUMMARY[@]}"
timeout 10 "$PYTHON" bench/gpu_bench.py table | tee "$LOG_DIR/table.txt"
if (( ${#FAILED[@]} > 0 )); then
  log "FAILED: ${FAILED[*]}"
  exit 1
fi
log "all stages passed"
