#!/usr/bin/env bash
# Builds and runs the native tests (test/native) with CMake and ctest — no Node needed.
#   bash scripts/native-tests.sh [build-dir] [extra cmake args...]
# On a machine with nvcc the CUDA kernels are built too, and the CUDA tests run when a GPU is present (else skip).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-native}
shift || true
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j "$(nproc)"
ctest --test-dir "$dir" --output-on-failure
