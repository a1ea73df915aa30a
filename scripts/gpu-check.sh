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
# The one GPU run must not be lost: table.md and table.json are written on every exit path (bad tool, configure or
# build failure or timeout, no usable GPU, a driver older than the toolkit, a crash in any phase, a kill of the script
# by SIGTERM/SIGINT), saying which phases ran, which failed and why; gpu_bench writes its JSON after every group (and
# the training-step dump first); the build treats warnings as warnings (SHAREDFORMER_WERROR=OFF: a toolchain never
# tried here must not cost the run; the count is logged) and compiles CUDA with -lineinfo; a failing native test is
# rerun once with CUDA_LAUNCH_BLOCKING=1 and once under compute-sanitizer (bounded), into ctest.log; the commit, the
# device, driver, toolkit, clocks and the persisting-L2 limits are logged. scripts/gpu-check-rehearsal.sh rehearses
# every failure path on a machine without a GPU (CI runs it).
#
#   scripts/gpu-check.sh OUTDIR [--quick]
#
# OUTDIR receives at most 7 files: gpu-check.log (nvidia-smi, configure, every step's output), build.log, ctest.log
# (with the reruns of failing tests), gpu_bench.json, torch_ref.json, table.md, table.json. Exit status: 0 when every
# check passed; 1 when a check failed (the build, a native test, a NaN in a benchmark output, the training-step replay
# in PyTorch, a driver that cannot run the build) — the table is printed anyway; 2 on bad usage or a missing tool;
# 77 when the build succeeded but no usable GPU is present; 130/143 when interrupted (the table says so).
# Environment: SF_CUDA_ARCHS (default 90), SF_GPU_CHECK_BUDGET_S (default 470: the whole run's time budget, each phase
# gets what is left of it), SF_GPU_CHECK_BUILD_S (default 330: the most the build may take), SF_BUILD_DIR (default
# build-gpu-check), PYTHON (default python3), NVCC (default: nvcc on the PATH, else /usr/local/cuda/bin/nvcc),
# COMPUTE_SANITIZER (default: on the PATH, else beside nvcc).
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
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo '+changes')

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
# What each phase did, for the table written on every exit path: "phase|status|detail" (status: ok, failed, skipped).
phases=()
phase() { phases+=("$1|$2|$3"); }
table_done=0
json_escape() { local x=${1//\\/\\\\}; x=${x//\"/\\\"}; x=${x//$'\n'/ }; x=${x//$'\t'/ }; printf '%s' "$x"; }
# Writes table.md / table.json from the phases when the full table (phase 5) was not written: why the run ended.
write_status_table() {
  local why=$1 md="$out/table.md" json="$out/table.json" p name st detail first=1
  {
    printf '# GPU check\n\n%s\n\n' "$why"
    printf 'Commit %s; %s.\n\n| phase | status | detail |\n|---|---|---|\n' "$commit" "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    for p in "${phases[@]+"${phases[@]}"}"; do
      IFS='|' read -r name st detail <<<"$p"
      printf '| %s | %s | %s |\n' "$name" "$st" "$detail"
    done
    [ ${#failed_steps[@]} -gt 0 ] && printf '\nFailed: %s\n' "${failed_steps[*]}"
    [ -f "$out/gpu_bench.json" ] && printf '\nRows measured before the end: see gpu_bench.json.\n'
  } >"$md"
  {
    printf '{"complete": false, "reason": "%s", "commit": "%s", "failed": [' "$(json_escape "$why")" "$commit"
    for p in "${failed_steps[@]+"${failed_steps[@]}"}"; do
      [ $first = 1 ] || printf ', '
      first=0
      printf '"%s"' "$(json_escape "$p")"
    done
    printf '], "phases": ['
    first=1
    for p in "${phases[@]+"${phases[@]}"}"; do
      IFS='|' read -r name st detail <<<"$p"
      [ $first = 1 ] || printf ', '
      first=0
      printf '{"phase": "%s", "status": "%s", "detail": "%s"}' "$(json_escape "$name")" "$st" "$(json_escape "$detail")"
    done
    printf '], "rows": []}\n'
  } >"$json"
  table_done=1
}
# Every exit path ends here: a table exists, whatever happened.
on_exit() {
  local rc=$?
  rm -rf "$tmp"
  if [ "$table_done" = 0 ] && [ -n "${out:-}" ] && [ -d "$out" ]; then
    write_status_table "${end_reason:-gpu-check stopped (exit $rc) before writing the table}"
    say "gpu-check: table written: $out/table.md"
    cat "$out/table.md"
  fi
  exit "$rc"
}
end_reason=
interrupted() { end_reason="gpu-check was interrupted ($1) after $(elapsed)s"; mark_failed "interrupted ($1)"; exit "$2"; }

trap on_exit EXIT
trap 'interrupted SIGINT 130' INT
trap 'interrupted SIGTERM 143' TERM
say "gpu-check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on ${HOSTNAME:-?}, repo $root, commit $commit"
say "gpu-check: out $out, build $build, CUDA archs $archs, $jobs jobs, budget ${budget}s"

# ---- 0. tools and the GPU -----------------------------------------------------------------------------------------
for tool in cmake ctest; do
  if ! command -v "$tool" >/dev/null; then
    end_reason="'$tool' is not on the PATH: install CMake >= 3.18"
    phase tools failed "$end_reason"
    say "gpu-check: $end_reason"
    exit 2
  fi
done
if [ -n "${NVCC:-}" ]; then
  nvcc_bin=$NVCC
  [ -x "$nvcc_bin" ] || nvcc_bin=
else
  nvcc_bin=$(command -v nvcc || true)
  [ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_bin=/usr/local/cuda/bin/nvcc
fi
if [ -z "$nvcc_bin" ]; then
  end_reason="no CUDA compiler: 'nvcc' is neither ${NVCC:+at $NVCC nor }on the PATH nor at /usr/local/cuda/bin/nvcc; install the CUDA toolkit"
  phase tools failed "$end_reason"
  say "gpu-check: $end_reason"
  exit 2
fi
sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}
[ -z "$sanitizer" ] && [ -x "$(dirname "$nvcc_bin")/compute-sanitizer" ] && sanitizer=$(dirname "$nvcc_bin")/compute-sanitizer
say "gpu-check: $("$nvcc_bin" --version | tail -n 1)"
phase tools ok "$("$nvcc_bin" --version | tail -n 1); compute-sanitizer: ${sanitizer:-not found}"
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
    -DCMAKE_CUDA_ARCHITECTURES="$archs" -DCMAKE_CUDA_COMPILER="$nvcc_bin" -DSHAREDFORMER_TESTS=ON -DSHAREDFORMER_BENCH=ON \
    -DSHAREDFORMER_WERROR=OFF -DSHAREDFORMER_CUDA_LINEINFO=ON
} >"$out/build.log" 2>&1
cfg=$?
if [ $cfg -eq 0 ]; then
  echo "---- build" >>"$out/build.log"
  timeout "$(allow "$build_cap" 200)" cmake --build "$build" -j "$jobs" --target "${tests[@]}" gpu_bench >>"$out/build.log" 2>&1
  cfg=$?
fi
cat "$out/build.log" >>"$log"
if [ $cfg -ne 0 ]; then
  why="the build failed (exit $cfg) after $(($(date +%s) - t0))s"
  [ $cfg -eq 124 ] && why="the build ran out of time ($(($(date +%s) - t0))s; SF_GPU_CHECK_BUILD_S=$build_cap)"
  say "gpu-check: BUILD FAILED: $why; the end of $out/build.log:"
  tail -n 60 "$out/build.log"
  phase build failed "$why; first error: $(grep -m1 -E '(^|[^A-Za-z_])([Ee]rror|ERROR)([: ]|$)' "$out/build.log" | cut -c1-200)"
  mark_failed "build"
  end_reason="Build failed: $why; see build.log."
  exit 1
fi
warnings=$(grep -ciE 'warning' "$out/build.log")
say "gpu-check: built in $(($(date +%s) - t0))s ($warnings warning lines, not fatal here; see build.log)"
phase build ok "$(($(date +%s) - t0))s, $warnings warning lines"

# ---- no GPU: the build is all that can be checked here ------------------------------------------------------------
"$build/gpu_bench" --probe >>"$log" 2>&1
probe=$?
# (the probe decides; nvidia-smi only informs: it may be missing where the driver works)
[ $probe -eq 0 ] && [ "$have_gpu" = 0 ] && say "gpu-check: nvidia-smi failed or is missing, but CUDA sees a device"
probe_line=$(grep -E '^gpu_bench: ' "$log" | tail -n 1)
if [ $probe -eq 77 ]; then
  say "gpu-check: NO USABLE NVIDIA GPU on this machine ($probe_line): the build passed; the GPU-vs-CPU checks and"
  say "gpu-check: the benchmarks need a GPU and were not run. Run this script on a machine with an NVIDIA GPU (exit 77)."
  phase probe skipped "no usable GPU: $probe_line"
  end_reason="No usable NVIDIA GPU ($probe_line): the build passed; nothing else could run."
  exit 77
elif [ $probe -ne 0 ]; then
  # A GPU may be there but unusable (a driver older than the toolkit: exit 78), or the probe crashed: a failure.
  say "gpu-check: CUDA CANNOT USE THE GPU (probe exit $probe): $probe_line"
  phase probe failed "exit $probe: $probe_line"
  mark_failed "probe (exit $probe)"
  end_reason="CUDA cannot use the GPU (probe exit $probe): $probe_line"
  exit 1
fi
grep -E '^gpu_bench: ' "$log" | tail -n 2 | while read -r l; do say "gpu-check: $l"; done
phase probe ok "$probe_line"

# ---- 2. every native test, the GPU-vs-CPU checks included ---------------------------------------------------------
say "gpu-check: [2/4] ctest (all native tests, the CUDA checks included)"
t0=$(date +%s)
timeout "$(allow 150 130)" ctest --test-dir "$build" -V -j "$jobs" >"$out/ctest.log" 2>&1
rc=$?
cat "$out/ctest.log" >>"$log"
grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|Not Run|Skipped' "$out/ctest.log" | tail -n 40
if [ $rc -ne 0 ]; then
  [ $rc -eq 124 ] && say "gpu-check: ctest ran out of time"
  mark_failed "ctest (exit $rc)"
  # Each failing test (at most 3) once more with CUDA_LAUNCH_BLOCKING=1 (the error at the launch that caused it), then
  # under compute-sanitizer (memcheck; bounded), into ctest.log.
  mapfile -t failed_tests < <(grep -E '^\s+[0-9]+ - [A-Za-z0-9_]+ \(' "$out/ctest.log" | sed -E 's/^\s+[0-9]+ - ([A-Za-z0-9_]+) .*/\1/' | head -n 3)
  for t in "${failed_tests[@]+"${failed_tests[@]}"}"; do
    say "gpu-check: rerunning $t with CUDA_LAUNCH_BLOCKING=1"
    { echo "---- rerun: $t with CUDA_LAUNCH_BLOCKING=1"
      CUDA_LAUNCH_BLOCKING=1 timeout "$(allow 60 120)" ctest --test-dir "$build" -V -R "^$t\$"
      echo "---- exit $?"; } >>"$out/ctest.log" 2>&1
    if [ -n "$sanitizer" ] && [ -x "$build/$t" ]; then
      say "gpu-check: rerunning $t under compute-sanitizer"
      { echo "---- rerun: $t under $sanitizer"
        timeout "$(allow 120 110)" "$sanitizer" --tool memcheck --print-limit 20 "$build/$t"
        echo "---- exit $?"; } >>"$out/ctest.log" 2>&1
    fi
  done
  phase ctest failed "exit $rc; failing: ${failed_tests[*]:-?} (reruns in ctest.log)"
else
  phase ctest ok "$(grep -E 'tests passed' "$out/ctest.log" | tail -n 1)"
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
  phase gpu_bench failed "exit $rc$([ "$rc" -eq 124 ] && echo ' (time limit)'); rows so far in gpu_bench.json"
else
  phase gpu_bench ok "$(($(date +%s) - t0))s"
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
    0) phase pytorch ok "measured; the training-step replay agreed" ;;
    3) say "gpu-check: PyTorch with CUDA not available: torch columns skipped"; phase pytorch skipped "no PyTorch with CUDA" ;;
    5) mark_failed "training step replayed in PyTorch disagrees"; phase pytorch failed "the training-step replay disagrees" ;;
    *) say "gpu-check: gpu_torch_ref.py failed (exit $rc): torch columns incomplete"; phase pytorch failed "exit $rc" ;;
  esac
else
  say "gpu-check: no $py: PyTorch reference skipped"
  phase pytorch skipped "no $py"
fi
say "gpu-check: PyTorch reference took $(($(date +%s) - t0))s"

# ---- 5. the table -------------------------------------------------------------------------------------------------
if [ ! -f "$out/gpu_bench.json" ]; then
  write_status_table "gpu_bench wrote no results; see gpu-check.log."
else
  merged=0
  if [ $have_py = 1 ]; then
    failed_json=$(printf '%s\n' "${failed_steps[@]+"${failed_steps[@]}"}")
    "$py" "$root/scripts/gpu_torch_ref.py" --merge "$out/gpu_bench.json" --torch "$out/torch_ref.json" \
      --failed "$failed_json" --md "$out/table.md" --json "$out/table.json" >>"$log" 2>&1 && merged=1 ||
      say "gpu-check: merging the tables failed; the table is gpu_bench's alone"
  fi
  if [ $merged = 0 ]; then
    if [ -f "$tmp/bench.md" ]; then
      cp "$tmp/bench.md" "$out/table.md"
      cp "$out/gpu_bench.json" "$out/table.json"
    else
      write_status_table "gpu_bench wrote no table (its rows so far are in gpu_bench.json); see gpu-check.log."
    fi
  fi
  # what each phase did, under the table
  if [ "$table_done" = 0 ]; then
    {
      printf '\n| phase | status | detail |\n|---|---|---|\n'
      for p in "${phases[@]+"${phases[@]}"}"; do
        IFS='|' read -r name st detail <<<"$p"
        printf '| %s | %s | %s |\n' "$name" "$st" "$detail"
      done
      [ ${#failed_steps[@]} -gt 0 ] && printf '\nFailed: %s\n' "${failed_steps[*]}"
    } >>"$out/table.md"
  fi
fi
table_done=1
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
