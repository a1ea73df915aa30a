#!/usr/bin/env bash
# gpu-check.sh — the GPU check (issue 6, point 7; docs/gpu.md "The GPU check"). On a machine with an NVIDIA GPU,
# CUDA and CMake (Node not needed, ninja optional), within ~8 minutes on an H200:
#
#   1. configures and builds, for sm_90, only the native tests (test/native) and the GPU benchmark (gpu_bench);
#   2. runs ctest: every native test, including every GPU-vs-CPU check (test/native/cuda_*_test.cpp);
#   3. runs gpu_bench: CUDA-event timings of every kernel, the shared-weight path and the training steps;
#   4. where python3 has PyTorch with CUDA, runs scripts/gpu_torch_ref.py in the same run (torch.matmul, flash SDPA,
#      an eager PyTorch model of the same configurations, and a replay of our fp32 training step in PyTorch);
#   5. writes the table (table.md, table.json) with ratio columns and prints it.
#
#   scripts/gpu-check.sh OUTDIR [--quick]
#
# OUTDIR receives at most 7 files: gpu-check.log (nvidia-smi, configure, every step's output), build.log, ctest.log,
# gpu_bench.json, torch_ref.json, table.md, table.json. Exit status: 0 when every check passed; 1 when a check failed
# (a native test, a NaN in a benchmark output, the training-step replay in PyTorch) — the table is printed anyway;
# 2 on bad usage or a missing tool; 77 when the build succeeded but no usable GPU is present.
# Environment: SF_CUDA_ARCHS (default 90), SF_GPU_CHECK_BUDGET_S (default 470: the whole run's time budget, each phase
# gets what is left of it), SF_GPU_CHECK_BUILD_S (default 330: the most the build may take), SF_BUILD_DIR (default
# build-gpu-check), PYTHON (default python3).
set -uo pipefail

usage() { echo "usage: scripts/gpu-check.sh OUTDIR [--quick]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
out_arg=$1
shift
quick=()
for a in "$@"; do
  case "$a" in
    --quick) quick=(--quick) ;;
    *) usage ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out_arg" || { echo "gpu-check: cannot create $out_arg" >&2; exit 2; }
out=$(cd "$out_arg" && pwd)
build=${SF_BUILD_DIR:-$root/build-gpu-check}
archs=${SF_CUDA_ARCHS:-90}
budget=${SF_GPU_CHECK_BUDGET_S:-470}
build_cap=${SF_GPU_CHECK_BUILD_S:-330}
py=${PYTHON:-python3}
log=$out/gpu-check.log
: >"$log"
start=$(date +%s)
jobs=$(nproc 2>/dev/null || echo 4)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() { printf '%s\n' "$*" | tee -a "$log"; }
elapsed() { echo $(($(date +%s) - start)); }
# seconds a phase may take: at most $1, and no more than what is left of the budget minus $2 kept for later phases
allow() {
  local left=$((budget - $(elapsed) - $2))
  [ "$left" -lt "$1" ] && echo $((left > 10 ? left : 10)) || echo "$1"
}
fail=0
failed_steps=()
mark_failed() { fail=1; failed_steps+=("$1"); }

say "gpu-check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on ${HOSTNAME:-?}, repo $root, commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with local changes)')"
say "gpu-check: out $out, build $build, CUDA archs $archs, $jobs jobs, budget ${budget}s"

# ---- 0. tools and the GPU -----------------------------------------------------------------------------------------
for tool in cmake ctest; do
  command -v "$tool" >/dev/null || { say "gpu-check: '$tool' is not on the PATH: install CMake >= 3.18"; exit 2; }
done
nvcc_bin=$(command -v nvcc || true)
[ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_bin=/usr/local/cuda/bin/nvcc
if [ -z "$nvcc_bin" ]; then
  say "gpu-check: no CUDA compiler: 'nvcc' is neither on the PATH nor at /usr/local/cuda/bin/nvcc; install the CUDA toolkit"
  exit 2
fi
say "gpu-check: $("$nvcc_bin" --version | tail -n 1)"
have_gpu=1
{
  echo "---- nvidia-smi"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi 2>&1 || have_gpu=0
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,utilization.gpu --format=csv 2>&1 || true
  else
    echo "nvidia-smi: not installed"
    have_gpu=0
  fi
} >>"$log" 2>&1
[ "$have_gpu" = 1 ] && say "gpu-check: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"

# ---- 1. configure and build (only the native tests and gpu_bench) -------------------------------------------------
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
tests=()
for f in "$root"/test/native/*_test.cpp; do
  f=${f##*/}
  tests+=("${f%.cpp}")
done
say "gpu-check: [1/4] configure + build ${#tests[@]} native tests and gpu_bench ($([ ${#gen[@]} -gt 0 ] && echo ninja || echo make))"
t0=$(date +%s)
# a build dir configured by another generator cannot be reused
if [ -f "$build/CMakeCache.txt" ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=$([ ${#gen[@]} -gt 0 ] && echo Ninja || echo 'Unix Makefiles')\$" "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
{
  echo "---- configure"
  cmake -S "$root" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DSHAREDFORMER_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$archs" -DCMAKE_CUDA_COMPILER="$nvcc_bin" -DSHAREDFORMER_TESTS=ON -DSHAREDFORMER_BENCH=ON
} >"$out/build.log" 2>&1
cfg=$?
if [ $cfg -eq 0 ]; then
  echo "---- build" >>"$out/build.log"
  timeout "$(allow "$build_cap" 200)" cmake --build "$build" -j "$jobs" --target "${tests[@]}" gpu_bench >>"$out/build.log" 2>&1
  cfg=$?
fi
cat "$out/build.log" >>"$log"
if [ $cfg -ne 0 ]; then
  [ $cfg -eq 124 ] && say "gpu-check: the build ran out of time"
  say "gpu-check: BUILD FAILED (exit $cfg) after $(($(date +%s) - t0))s; the end of $out/build.log:"
  tail -n 60 "$out/build.log"
  printf '# GPU check\n\nBuild failed (exit %s); see build.log.\n' "$cfg" >"$out/table.md"
  printf '{"failed": ["build"], "rows": []}\n' >"$out/table.json"
  exit 1
fi
say "gpu-check: built in $(($(date +%s) - t0))s"

# ---- no GPU: the build is all that can be checked here ------------------------------------------------------------
"$build/gpu_bench" --probe >>"$log" 2>&1
probe=$?
# (the probe decides; nvidia-smi only informs: it may be missing where the driver works)
[ $probe -eq 0 ] && [ "$have_gpu" = 0 ] && say "gpu-check: nvidia-smi failed or is missing, but CUDA sees a device"
if [ $probe -ne 0 ]; then
  say "gpu-check: NO USABLE NVIDIA GPU on this machine ($(tail -n 1 "$log")): the build passed; the GPU-vs-CPU checks and"
  say "gpu-check: the benchmarks need a GPU and were not run. Run this script on a machine with an NVIDIA GPU (exit 77)."
  exit 77
fi

# ---- 2. every native test, the GPU-vs-CPU checks included ---------------------------------------------------------
say "gpu-check: [2/4] ctest (all native tests, the CUDA checks included)"
t0=$(date +%s)
timeout "$(allow 150 130)" ctest --test-dir "$build" --output-on-failure -j "$jobs" >"$out/ctest.log" 2>&1
rc=$?
cat "$out/ctest.log" >>"$log"
grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|Not Run|Skipped' "$out/ctest.log" | tail -n 40
if [ $rc -ne 0 ]; then
  [ $rc -eq 124 ] && say "gpu-check: ctest ran out of time"
  mark_failed "ctest (exit $rc)"
fi
if grep -E 'cuda_[A-Za-z0-9_]*test .*Skipped' "$out/ctest.log" >/dev/null; then
  say "gpu-check: a CUDA test SKIPPED although a GPU is present"
  mark_failed "CUDA test skipped"
fi
say "gpu-check: ctest took $(($(date +%s) - t0))s"

# ---- 3. the benchmark ---------------------------------------------------------------------------------------------
say "gpu-check: [3/4] gpu_bench"
t0=$(date +%s)
timeout "$(allow 180 50)" "$build/gpu_bench" "${quick[@]}" --json "$out/gpu_bench.json" --md "$tmp/bench.md" \
  --dump-train "$tmp" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 124 ] && say "gpu-check: gpu_bench ran out of time"
  mark_failed "gpu_bench (exit $rc)"
fi
say "gpu-check: gpu_bench took $(($(date +%s) - t0))s"

# ---- 4. PyTorch in the same run, when there ----------------------------------------------------------------------
say "gpu-check: [4/4] PyTorch reference"
t0=$(date +%s)
have_py=0
command -v "$py" >/dev/null && have_py=1
if [ $have_py = 1 ]; then
  check_args=()
  [ -f "$tmp/train_check.json" ] && check_args=(--train-check "$tmp/train_check.json")
  PYTHONUNBUFFERED=1 timeout "$(allow 120 5)" "$py" "$root/scripts/gpu_torch_ref.py" "${quick[@]}" \
    --out "$out/torch_ref.json" "${check_args[@]}" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  # 0: measured (and the replay agreed); 3: no torch with CUDA (skipped, noted in the JSON); 5: the replay disagreed
  case $rc in
    0) ;;
    3) say "gpu-check: PyTorch with CUDA not available: torch columns skipped" ;;
    5) mark_failed "training step replayed in PyTorch disagrees" ;;
    *) say "gpu-check: gpu_torch_ref.py failed (exit $rc): torch columns incomplete" ;;
  esac
else
  say "gpu-check: no $py: PyTorch reference skipped"
fi
say "gpu-check: PyTorch reference took $(($(date +%s) - t0))s"

# ---- 5. the table -------------------------------------------------------------------------------------------------
if [ ! -f "$out/gpu_bench.json" ]; then
  printf '# GPU check\n\ngpu_bench wrote no results (exit %s); see gpu-check.log.\n' "$rc" >"$out/table.md"
  printf '{"failed": ["gpu_bench"], "rows": []}\n' >"$out/table.json"
elif [ $have_py = 1 ]; then
  failed_json=$(printf '%s\n' "${failed_steps[@]+"${failed_steps[@]}"}")
  "$py" "$root/scripts/gpu_torch_ref.py" --merge "$out/gpu_bench.json" --torch "$out/torch_ref.json" \
    --failed "$failed_json" --md "$out/table.md" --json "$out/table.json" >>"$log" 2>&1 ||
    { say "gpu-check: merging the tables failed; the table is gpu_bench's alone"; cp "$tmp/bench.md" "$out/table.md"; cp "$out/gpu_bench.json" "$out/table.json"; }
else
  cp "$tmp/bench.md" "$out/table.md"
  cp "$out/gpu_bench.json" "$out/table.json"
fi
echo
cat "$out/table.md"
cat "$out/table.md" >>"$log"
echo
# the summary again, last (a reader of only the end of the output sees it)
grep -E '^(Device|Checks|Training step replayed)' "$out/table.md" || true
if [ $fail -ne 0 ]; then
  say "gpu-check: FAILED after $(elapsed)s: ${failed_steps[*]}"
  exit 1
fi
say "gpu-check: all checks passed in $(elapsed)s; results in $out"
exit 0
