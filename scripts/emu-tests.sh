#!/usr/bin/env bash
# The CPU lane of the CUDA kernels (cuda/emu; docs/gpu.md "The CPU lane"): builds the kernels of cuda/ as host C++
# over the emulated CUDA execution model, runs the GPU-vs-CPU tests on it (thread order and reversed) and the planted
# bugs that must fail it. No GPU, no nvcc, no Node needed.
#   bash scripts/emu-tests.sh [build-dir]          (npm run test:emu)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-emu}
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DSHAREDFORMER_CUDA=OFF -DSHAREDFORMER_BENCH=OFF \
  >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
targets=(sf_emu emu_selftest)
for t in cuda_gemm_test cuda_attention_test cuda_kernels_test cuda_test cuda_persistent_test; do targets+=("emu_$t"); done
cmake --build "$dir" -j "$(nproc)" --target "${targets[@]}"
ctest --test-dir "$dir" --output-on-failure -R '^emu_'
