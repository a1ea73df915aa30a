#!/usr/bin/env bash
# gpu-check-rehearsal.sh — rehearses every failure path of scripts/gpu-check.sh on a machine without a GPU, so that the
# one GPU run a task may get cannot be lost to a path never tried (issue 14). CI runs it; it ends with
# `N passed, N failed`.
#
# Two real paths (the tools as they are): bad usage, and no CUDA compiler. One real CMake path: a configure failure
# (an invalid CUDA architecture). The other paths need a GPU or a long build to happen for real, so they run against
# stand-ins of the tools gpu-check calls (cmake, ctest, nvcc, nvidia-smi, compute-sanitizer and the built gpu_bench),
# put first on the PATH, each told by an environment variable what to do: the build fails, the build runs out of
# time, no usable GPU (probe exit 77), a driver older than the toolkit (probe exit 78), a native test that crashes
# (reruns with CUDA_LAUNCH_BLOCKING=1 and under compute-sanitizer), gpu_bench crashing after some groups (its partial
# JSON is kept), and SIGTERM in the middle of a phase. For each, the exit status, table.md and table.json (valid
# JSON, naming what failed and why) are checked: a table must exist on every exit path.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sf-gpu-rehearsal.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
notok() { echo "not ok - $*"; fail=$((fail + 1)); }

# ---- stand-ins ------------------------------------------------------------------------------------------------------
stubs="$tmp/stubs"
mkdir -p "$stubs"
cat >"$stubs/nvcc" <<'EOF'
#!/usr/bin/env bash
echo "Cuda compilation tools, release 13.0 (stand-in for the rehearsal)"
EOF
cat >"$stubs/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
[ "${REHEARSE_PROBE:-0}" = 77 ] && { echo "NVIDIA-SMI has failed (rehearsal)"; exit 9; }
echo "NVIDIA H200 (rehearsal), 550.00, 143771 MiB"
EOF
cat >"$stubs/compute-sanitizer" <<'EOF'
#!/usr/bin/env bash
echo "========= COMPUTE-SANITIZER (rehearsal) running $*"
echo "========= Invalid __global__ read of size 4 (rehearsal)"
exit 1
EOF
# cmake: configure writes a cache; --build does what REHEARSE_BUILD says and leaves stand-in binaries.
cat >"$stubs/cmake" <<'EOF'
#!/usr/bin/env bash
build=
gen="Unix Makefiles"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -B) build=${args[i + 1]} ;;
    --build) build=${args[i + 1]}; mode=build ;;
    -G) gen=${args[i + 1]} ;;
  esac
done
if [ "${mode:-configure}" = configure ]; then
  mkdir -p "$build" && echo "CMAKE_GENERATOR:INTERNAL=$gen" >"$build/CMakeCache.txt"
  echo "-- configured (rehearsal): $*"
  exit 0
fi
case "${REHEARSE_BUILD:-ok}" in
  fail) echo "cuda/attention.cu(12): error: identifier \"oops\" is undefined (rehearsal)"; exit 1 ;;
  slow) sleep 20; exit 0 ;;
esac
echo "cuda/gemm.cu(7): warning #177-D: variable \"x\" was declared but never referenced (rehearsal)"
for t in core_test cuda_attention_test; do
  printf '#!/usr/bin/env bash\necho "%s (rehearsal)"\n[ "${REHEARSE_CTEST:-ok}" = crash ] && [ "%s" = cuda_attention_test ] && kill -SEGV $$\nexit 0\n' "$t" "$t" >"$build/$t"
  chmod +x "$build/$t"
done
cat >"$build/gpu_bench" <<'BENCH'
#!/usr/bin/env bash
if [ "$1" = --probe ]; then
  case "${REHEARSE_PROBE:-0}" in
    77) echo "gpu_bench: no usable CUDA device (no CUDA-capable device is detected)"; exit 77 ;;
    78) echo "gpu_bench: the NVIDIA driver cannot run this build (CUDA driver version is insufficient for CUDA runtime version): driver supports CUDA 12020, the toolkit's runtime is 13000; update the driver or build with an older toolkit"; exit 78 ;;
  esac
  echo "gpu_bench: NVIDIA H200 (rehearsal) (sm_90, 132 SMs, L2 60.0 MiB, 139.8 GiB), driver 13000, runtime 13000"
  echo "gpu_bench: L2 62914560 bytes, persisting L2 at most 47185920 bytes, access-policy window at most 134213632 bytes"
  exit 0
fi
json= md=
while [ $# -gt 0 ]; do [ "$1" = --json ] && json=$2; [ "$1" = --md ] && md=$2; shift; done
echo '{"device": "rehearsal", "complete": false, "rows": [{"group": "gemm", "key": "g", "name": "gemm", "ms": 1.0}]}' >"$json"
echo "[gemm] (rehearsal)"
[ "${REHEARSE_BENCH:-ok}" = crash ] && kill -SEGV $$
[ "${REHEARSE_BENCH:-ok}" = hang ] && sleep 60
echo '{"device": "rehearsal", "complete": true, "rows": [{"group": "gemm", "key": "g", "name": "gemm", "ms": 1.0}]}' >"$json"
printf '| row | ms |\n|---|---:|\n| gemm (rehearsal) | 1.0 |\n' >"$md"
exit 0
BENCH
chmod +x "$build/gpu_bench"
exit 0
EOF
# ctest: the suite fails (a crashing CUDA test) when REHEARSE_CTEST=crash, or hangs (hang).
cat >"$stubs/ctest" <<'EOF'
#!/usr/bin/env bash
[ "${REHEARSE_CTEST:-ok}" = hang ] && sleep 60
if [ "${REHEARSE_CTEST:-ok}" = crash ]; then
  case " $* " in *" -R "*) echo "rerun (rehearsal) CUDA_LAUNCH_BLOCKING=${CUDA_LAUNCH_BLOCKING:-unset}: $*"; exit 8 ;; esac
  echo "1/2 Test #1: core_test ........................   Passed    0.04 sec"
  echo "2/2 Test #2: cuda_attention_test ..............***Exception: SegFault  0.50 sec"
  echo "50% tests passed, 1 tests failed out of 2"
  echo "The following tests FAILED:"
  printf '\t  2 - cuda_attention_test (SEGFAULT)\n'
  exit 8
fi
echo "1/2 Test #1: core_test ........................   Passed    0.04 sec"
echo "2/2 Test #2: cuda_attention_test ..............   Passed    0.50 sec"
echo "100% tests passed, 0 tests failed out of 2"
EOF
chmod +x "$stubs"/*

# ---- the checks -----------------------------------------------------------------------------------------------------
# run NAME EXPECTED_EXIT [ENV=VALUE ...]: gpu-check.sh with the stand-ins first on the PATH (unless STUBS=0)
run() {
  local name=$1 want=$2
  shift 2
  local out="$tmp/$name" path="$stubs:$PATH"
  for kv in "$@"; do [ "$kv" = STUBS=0 ] && path=$PATH; done
  rc=0
  env PATH="$path" SF_BUILD_DIR="$tmp/build-$name" PYTHON=/nonexistent/python3 COMPUTE_SANITIZER="$stubs/compute-sanitizer" \
    NVCC="$stubs/nvcc" "$@" bash "$root/scripts/gpu-check.sh" "$out" >"$tmp/$name.out" 2>&1 || rc=$?
  if [ "$rc" = "$want" ]; then ok "$name: exit $rc"; else notok "$name: exit $rc, expected $want"; tail -20 "$tmp/$name.out"; fi
}
# table NAME REGEX...: table.md exists and matches every REGEX; table.json is valid JSON
table() {
  local name=$1 md="$tmp/$1/table.md" json="$tmp/$1/table.json" bad=
  shift
  [ -s "$md" ] || bad="no table.md"
  [ -z "$bad" ] && ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$json" 2>/dev/null && bad="table.json is not valid JSON"
  for rx in "$@"; do [ -z "$bad" ] && ! grep -qE "$rx" "$md" && bad="table.md lacks /$rx/"; done
  if [ -z "$bad" ]; then ok "$name: table.md and table.json written ($*)"; else notok "$name: $bad"; [ -f "$md" ] && cat "$md"; fi
}

rc=0
bash "$root/scripts/gpu-check.sh" >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] && ok "usage: exit 2" || notok "usage: exit $rc, expected 2"

run no-nvcc 2 STUBS=0 NVCC=/nonexistent/nvcc
table no-nvcc 'no CUDA compiler' 'tools \| failed'

if command -v nvcc >/dev/null && command -v cmake >/dev/null; then
  # a real configure that fails: an architecture nvcc does not know
  run configure-fails 1 STUBS=0 NVCC="$(command -v nvcc)" SF_CUDA_ARCHS=not_an_arch SF_GPU_CHECK_BUILD_S=120
  table configure-fails 'Build failed' 'build \| failed'
else
  echo "# no nvcc or cmake here: the real configure failure is not rehearsed"
fi

run build-fails 1 REHEARSE_BUILD=fail
table build-fails 'Build failed' 'identifier .*oops'
run build-timeout 1 REHEARSE_BUILD=slow SF_GPU_CHECK_BUILD_S=1
table build-timeout 'ran out of time'
run no-gpu 77 REHEARSE_PROBE=77
table no-gpu 'No usable NVIDIA GPU' 'build \| ok' 'probe \| skipped'
run old-driver 1 REHEARSE_PROBE=78
table old-driver 'CUDA cannot use the GPU' 'driver' 'probe \| failed'
run test-crashes 1 REHEARSE_CTEST=crash
table test-crashes 'gemm \(rehearsal\)' 'ctest \| failed' 'cuda_attention_test' 'gpu_bench \| ok'
if grep -q 'rerun: cuda_attention_test with CUDA_LAUNCH_BLOCKING=1' "$tmp/test-crashes/ctest.log" &&
  grep -q 'CUDA_LAUNCH_BLOCKING=1: ' "$tmp/test-crashes/ctest.log" &&
  grep -q 'COMPUTE-SANITIZER (rehearsal)' "$tmp/test-crashes/ctest.log"; then
  ok "test-crashes: the failing test was rerun with CUDA_LAUNCH_BLOCKING=1 and under compute-sanitizer (ctest.log)"
else
  notok "test-crashes: no reruns in ctest.log"; tail -20 "$tmp/test-crashes/ctest.log"
fi
grep -q 'L2 62914560 bytes, persisting L2 at most' "$tmp/test-crashes/gpu-check.log" &&
  ok "test-crashes: the persisting-L2 limits are logged" || notok "test-crashes: no L2 limits in gpu-check.log"
grep -qE 'warning lines' "$tmp/test-crashes/gpu-check.log" &&
  ok "test-crashes: build warnings are counted, not fatal" || notok "test-crashes: build warnings not reported"
run bench-crashes 1 REHEARSE_BENCH=crash
table bench-crashes 'gpu_bench'
grep -q '"complete": false' "$tmp/bench-crashes/gpu_bench.json" 2>/dev/null &&
  ok "bench-crashes: gpu_bench.json keeps the rows measured before the crash" || notok "bench-crashes: no partial gpu_bench.json"

# SIGTERM to the process group in the middle of ctest: the table says it was interrupted
name=interrupted
setsid env PATH="$stubs:$PATH" SF_BUILD_DIR="$tmp/build-$name" PYTHON=/nonexistent/python3 NVCC="$stubs/nvcc" \
  REHEARSE_CTEST=hang bash "$root/scripts/gpu-check.sh" "$tmp/$name" >"$tmp/$name.out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q '\[2/4\] ctest' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
kill -TERM -- "-$pid" 2>/dev/null
rc=0
wait "$pid" || rc=$?
[ "$rc" = 143 ] && ok "interrupted: exit 143 after SIGTERM" || { notok "interrupted: exit $rc, expected 143"; tail -5 "$tmp/$name.out"; }
table interrupted 'interrupted \(SIGTERM\)' 'build \| ok'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
