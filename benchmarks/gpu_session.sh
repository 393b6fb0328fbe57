#!/usr/bin/env bash
# The GPU session in one call (docs/runtime.md), within TILUS_SESSION_SECONDS (default 530 s):
#   1. the GPU tests (pytest -m gpu tests/gpu)                      -> gpu_tests.log
#   2. compute-sanitizer memcheck, then racecheck, over tests/gpu/sanitize.py
#      (the example kernels and one QuantMatmul per bit width)      -> sanitizer.log
#   3. benchmarks/launch_overhead.py                                -> launch_overhead.json
#   4. benchmarks/bench_matmul.py (the copy bandwidth, cuBLAS fp16, dequantize + cuBLAS, the
#      Triton baseline), given what time is left                    -> bench_matmul.log and
#                                                                      <device>-<date>.json, .png
# and session.log (what ran, for how long, with what exit status). Every kernel comes from the
# bundle that `make gpu-bundle` made here: .bundle/, or .bundle.tgz (unpacked to .bundle/).
#
#   OUT=/some/folder bash benchmarks/gpu_session.sh
#
# Each step is limited to its share of the time left (`timeout`); a failed step does not stop the
# others. The exit status is 0 when every step that ran passed, else 1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${OUT:?set OUT to the folder for the logs and JSON}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUNDLE="${TILUS_BUNDLE:-$ROOT/.bundle}"
BUDGET="${TILUS_SESSION_SECONDS:-530}"
export PYTHONUNBUFFERED=1
LOG="$OUT/session.log"
STATUS=0

say() { echo "[gpu_session +${SECONDS}s] $*" | tee -a "$LOG"; }

# step NAME CAP LOGFILE COMMAND...: runs COMMAND with at most CAP seconds (less if less is left)
step() {
  local name=$1 cap=$2 log=$3 left rc
  shift 3
  left=$(( BUDGET - SECONDS ))
  if [ "$cap" -gt "$left" ]; then cap=$left; fi
  if [ "$cap" -lt 30 ]; then
    say "$name: skipped (${cap} s for it, ${left} s left in all)"
    STATUS=1
    return 0
  fi
  say "$name: start (limit ${cap} s): $*"
  timeout -k 15 "$cap" "$@" >>"$log" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ]; then STATUS=1; fi
  say "$name: exit status $rc$([ "$rc" -eq 124 ] && echo ' (time limit)')"
}

say "start in $ROOT; OUT=$OUT; budget ${BUDGET} s"
if [ ! -x "$BUNDLE/run_on_gpu.sh" ] && [ -f "$ROOT/.bundle.tgz" ]; then
  mkdir -p "$BUNDLE" && tar -xzf "$ROOT/.bundle.tgz" -C "$BUNDLE"
  say "unpacked .bundle.tgz into $BUNDLE"
fi
RUN="$BUNDLE/run_on_gpu.sh"
if [ ! -x "$RUN" ]; then
  say "no bundle at $BUNDLE (make gpu-bundle here, carry .bundle.tgz)"
  exit 1
fi
if [ -f "$BUNDLE/manifest.json" ]; then
  GIT_COMMIT="$(sed -n 's/.*"git_commit": *"\([^"]*\)".*/\1/p' "$BUNDLE/manifest.json" | head -1)"
  export TILUS_GIT_COMMIT="${TILUS_GIT_COMMIT:-$GIT_COMMIT}"
  KERNELS="$(grep -o '"key"' "$BUNDLE/manifest.json" | wc -l)"
  FAILED="$(grep -o '"state": "failed"' "$BUNDLE/manifest.json" | wc -l)"
  say "bundle: $KERNELS kernels, $FAILED of them failed to build, commit ${TILUS_GIT_COMMIT:-?}"
fi
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } \
  >>"$LOG" 2>&1 || say "nvidia-smi failed"

# 1. the GPU tests (a per-test limit where pytest-timeout is installed)
PER_TEST=()
if "${PYTHON:-python3}" -c "import pytest_timeout" 2>/dev/null; then PER_TEST=(--timeout 120); fi
step gpu_tests 240 "$OUT/gpu_tests.log" \
  bash "$RUN" -m gpu tests/gpu -v -rA --durations 15 "${PER_TEST[@]}"

# 2. compute-sanitizer over the example kernels and one QuantMatmul per bit width
SANITIZER="$(command -v compute-sanitizer || true)"
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/compute-sanitizer; do
  if [ -z "$SANITIZER" ] && [ -x "$d/compute-sanitizer" ]; then SANITIZER="$d/compute-sanitizer"; fi
done
if [ -z "$SANITIZER" ]; then
  say "compute-sanitizer: not found, skipped"
  STATUS=1
else
  for tool in memcheck racecheck; do
    echo "==== $tool ====" >>"$OUT/sanitizer.log"
    TILUS_RUN_PREFIX="$SANITIZER --tool $tool --error-exitcode 9 --print-limit 30" \
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      step "$tool" 100 "$OUT/sanitizer.log" bash "$RUN" python tests/gpu/sanitize.py
  done
fi

# 3. launch overhead (a few seconds)
step launch_overhead 45 "$LOG" bash "$RUN" python benchmarks/launch_overhead.py --out "$OUT"

# 4. bench_matmul with the time left (it stops measuring after --budget-s and writes what it has)
LEFT=$(( BUDGET - SECONDS - 20 ))
step bench_matmul "$LEFT" "$OUT/bench_matmul.log" \
  bash "$RUN" python benchmarks/bench_matmul.py --out "$OUT" --budget-s $(( LEFT - 40 ))

say "done in ${SECONDS} s, status $STATUS"
ls -l "$OUT" >>"$LOG"
exit "$STATUS"
