#!/usr/bin/env bash
# emu_mutants.sh — the CPU lane must catch planted kernel bugs (docs/gpu.md "The CPU lane").
#   bash test/native/emu_mutants.sh <c++ compiler> <cmake build dir with sf_emu>      (ctest runs it as emu_mutants)
# Each mutant is one exact textual change of a kernel source of cuda/ (a fragment-layout mistake, an off-by-one in a
# tile bound, a missing barrier). The mutated file is compiled as host C++ beside the others (its symbols replace the
# originals of libsf_emu.a at link time) and linked with the GPU-vs-CPU test that must now FAIL. A mutant whose text
# no longer occurs in the source fails this test too (update the mutant with the kernel), so it cannot pass by rot.
set -u
cxx=$1
build=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-std=c++17 -O1 -w -DSF_CUDA_EMU=1 -DSHAREDFORMER_WITH_CUDA=1 -I"$root/cuda/emu" -I"$root/native" -I"$root/test/native")
lib="$build/libsf_emu.a"
[ -f "$lib" ] || { echo "not ok - $lib is missing (build the sf_emu target first)"; echo "0 passed, 1 failed"; exit 1; }
pass=0
fail=0

# mutant NAME FILE TEST ORDER FROM TO   (FROM/TO: exact text; ORDER: forward or reverse)
# Declares a mutant; they are built and run after all are declared, $jobs at a time (each compile and run is
# single-threaded), and reported in declaration order.
names=() files=() tests=() orders=() froms=() tos=()
mutant() {
  [ -n "${SF_MUTANTS:-}" ] && [[ ",$SF_MUTANTS," != *",$1,"* ]] && return  # SF_MUTANTS=a,b runs only those
  names+=("$1") files+=("$2") tests+=("$3") orders+=("$4") froms+=("$5") tos+=("$6")
}

# Builds and runs mutant i; prints one ok/not ok line (and the evidence) to stdout; creates $tmp/caught.i when the
# test failed as it must.
run_mutant() {
  local i=$1
  local name=${names[$i]} file=${files[$i]} test=${tests[$i]} order=${orders[$i]}
  local dir="$tmp/$name"
  mkdir -p "$dir/cuda"
  ln -s "$root/native" "$dir/native"
  for f in "$root"/cuda/*.cuh "$root"/cuda/*.h; do ln -s "$f" "$dir/cuda/"; done
  if ! FROM="${froms[$i]}" TO="${tos[$i]}" python3 - "$root/cuda/$file" "$dir/cuda/$file" <<'PY'
import os, sys
src = open(sys.argv[1]).read()
a, b = os.environ["FROM"], os.environ["TO"]
n = src.count(a)
if n != 1:
    sys.exit(f"the mutant's text occurs {n} times in {sys.argv[1]} (must be once)")
open(sys.argv[2], "w").write(src.replace(a, b))
PY
  then
    echo "not ok - $name: the mutant no longer applies to cuda/$file"
    return
  fi
  if [ ! -f "$tmp/$test.o" ]; then
    echo "not ok - $name: $test.cpp does not compile"; cat "$tmp/$test.log"
    return
  fi
  if ! "$cxx" "${flags[@]}" -x c++ -c "$dir/cuda/$file" -o "$dir/mutant.o" 2>"$dir/cc.log" ||
     ! "$cxx" "$tmp/$test.o" "$dir/mutant.o" "$lib" -pthread -o "$dir/t" 2>>"$dir/cc.log"; then
    echo "not ok - $name: the mutant does not build"; cat "$dir/cc.log"
    return
  fi
  local env=()
  [ "$order" = reverse ] && env=(SFEMU_ORDER=reverse)
  env "${env[@]}" timeout 600 "$dir/t" >"$dir/run.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ $rc -ne 124 ]; then
    echo "ok - $name: $test fails (exit $rc): $(grep -m1 -E 'FAIL|not ok|sfemu: FAULT' "$dir/run.log" | cut -c1-160)"
    : >"$tmp/caught.$i"
  else
    echo "not ok - $name: $test still passes (exit $rc) with the planted bug"
    tail -n 5 "$dir/run.log"
  fi
}

# 1. fragment layout: the tf32/bf16 A fragment's registers 1 and 2 swapped (rows g+8 and columns t+4 exchanged)
mutant fragment-layout gemm.cu cuda_gemm_test forward \
'          af[i][1] = as[(r + 8) * kTS + kw + tq];
          af[i][2] = as[r * kTS + kw + tq + 4];' \
'          af[i][1] = as[r * kTS + kw + tq + 4];
          af[i][2] = as[(r + 8) * kTS + kw + tq];'

# 2. off-by-one in a tile bound: the k edge of a panel lets k == K through (reads the next row's first element)
mutant tile-bound-off-by-one gemm.cu cuda_gemm_test forward \
'  if (r >= R || k >= K) return 0.0f;' \
'  if (r >= R || k > K) return 0.0f;'

# 3. missing barrier (read after write): in the fp32 tile kernel, the next k stage is stored and read with no
#    __syncthreads between
mutant missing-barrier-gemm gemm.cu cuda_gemm_test forward \
'      __syncthreads();  // the next stage is written; this one may be overwritten from now on' \
'      // (barrier removed)'

# 4. missing barrier (write after read, and read after write): the tiled bf16 attention forward refills the stage of
#    key tile jt - 1 with the next tile while other warps may still read it (and reads tile jt before the other
#    threads' copies of it are known to have landed)
mutant missing-barrier-attention attention.cu cuda_attention_test forward \
'    __syncthreads();  // everyone'"'"'s have, and every warp is done with key tile jt - 1, whose stage is refilled below' \
'    // (barrier removed)'

# 5. missing grid sync (read after write across blocks): the persistent kernel's Wo phase starts while other blocks
#    may still be writing the attention output it reads
mutant missing-grid-sync-persistent persistent.cu cuda_persistent_test forward \
'    attend(geo, d.k_cache[l], d.v_cache[l], scr.q, scr.o, scale);
    grid_sync();' \
'    attend(geo, d.k_cache[l], d.v_cache[l], scr.q, scr.o, scale);
    // (grid sync removed)'

# 6. missing barrier (write after read): the persistent kernel's cross-warp reduction buffer is rewritten by the next
#    group of tiles while other threads may still be adding the current one
mutant missing-barrier-persistent persistent.cu cuda_persistent_test reverse \
'      __syncthreads();  // red is rewritten by the next group' \
'      // (barrier removed)'

# 7. off-by-one in the key length: the new token's own key (at its position) is not attended
mutant key-length-off-by-one persistent.cu cuda_persistent_test forward \
'    const int64_t L = (pos < 0 || pos >= Tmax) ? 0 : pos + 1;' \
'    const int64_t L = (pos < 0 || pos >= Tmax) ? 0 : pos;'

# 8. ldmatrix .trans dropped: the pipelined bf16 kernel loads an r-contiguous (transposed) A tile without transposing it
mutant ldmatrix-trans-dropped gemm.cu cuda_gemm_test forward \
'            ldmatrix_x4_trans(af, as + swz<false>(krow, (wm + i * 16) / 8 + (lj & 1)));' \
'            ldmatrix_x4(af, as + swz<false>(krow, (wm + i * 16) / 8 + (lj & 1)));'

# 9. ldmatrix x4 register order: B's registers 1 and 2 swapped (the k 8-15 half of n tile 2jp taken from tile 2jp+1)
mutant ldmatrix-x4-order gemm.cu cuda_gemm_test forward \
'          bf[2 * jp][1] = r[1];
          bf[2 * jp + 1][0] = r[2];' \
'          bf[2 * jp][1] = r[2];
          bf[2 * jp + 1][0] = r[1];'

# 10. missing cp.async wait: the k loop waits for one group too few, so k tile kt is read before its copies land
mutant missing-cp-async-wait gemm.cu cuda_gemm_test forward \
'      cp_async_wait<kPStages - 2>();  // this thread'"'"'s copies of k tile kt have landed' \
'      cp_async_wait<kPStages - 1>();  // (one group too few)'

# 11. wrong swizzle on the read side: A fragments (k-contiguous tile) read at the unswizzled slot
mutant swizzle-read-side gemm.cu cuda_gemm_test forward \
'            ldmatrix_x4(af, as + swz<true>(row, ks * 2 + (lj >> 1)));' \
'            ldmatrix_x4(af, as + row * 4 + ks * 2 + (lj >> 1));'

# 12. off-by-one in the pipeline stage index: k tile next is written one stage further than the loop reads it
mutant pipeline-stage-off-by-one gemm.cu cuda_gemm_test forward \
'      if (next < nk) load_stage(static_cast<int>(next % kPStages), next);' \
'      if (next < nk) load_stage(static_cast<int>((next + 1) % kPStages), next);'

# 13. ldmatrix .trans dropped (tiled bf16 attention forward): V fragments loaded from the row-major V tile untransposed
mutant ldmatrix-trans-dropped-attention attention.cu cuda_attention_test forward \
'          ldmatrix_x4_trans(r, Vs + fa_swz<DP>(kk * 16 + (lj & 1) * 8 + li, dp * 2 + (lj >> 1)));' \
'          ldmatrix_x4(r, Vs + fa_swz<DP>(kk * 16 + (lj & 1) * 8 + li, dp * 2 + (lj >> 1)));'

# 14. cp.async wait off by one (tiled bf16 attention forward): key tile jt is read while its copies may be in flight
mutant missing-cp-async-wait-attention attention.cu cuda_attention_test reverse \
'    cp_async_wait<kFStages - 2>();  // this thread'"'"'s copies of key tile jt have landed' \
'    cp_async_wait<kFStages - 1>();  // (one group too few)'

# 15. wrong swizzle on the read side (tiled bf16 attention forward): K fragments read at the unswizzled slots
mutant swizzle-read-side-attention attention.cu cuda_attention_test forward \
'        ldmatrix_x4(r, Ks + fa_swz<DP>(np * 16 + (lj >> 1) * 8 + li, ks * 2 + (lj & 1)));' \
'        ldmatrix_x4(r, Ks + (np * 16 + (lj >> 1) * 8 + li) * (DP / 8) + ks * 2 + (lj & 1));'

# 16. NaN flag never raised (tiled bf16 attention forward): a tile holding keys masked for some query is not scanned
#     for Inf / NaN values, so a masked P = 0 meets an Inf value in the mma (0 * Inf = NaN where the CPU has a number)
mutant nan-scan-skipped-attention attention.cu cuda_attention_test forward \
'    if (j0 + kFTK > nmin) {' \
'    if (j0 + kFTK > nmax) {'

# 17. ldmatrix .trans dropped (tiled bf16 attention dQ pass): K fragments of dQ += dS K loaded untransposed
mutant ldmatrix-trans-dropped-attention-dq attention.cu cuda_attention_test forward \
'            ldmatrix_x4_trans(r, Ks + fa_swz<DP>(kh + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));' \
'            ldmatrix_x4(r, Ks + fa_swz<DP>(kh + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));'

# 18. NaN flag never raised (tiled bf16 attention dQ pass): masked keys' K values not scanned for Inf / NaN
mutant nan-scan-skipped-attention-dq attention.cu cuda_attention_test forward \
'    if (j0 + kBT > nmin) {' \
'    if (j0 + kBT > nmax) {'

# 19. ldmatrix .trans dropped (tiled bf16 attention dK/dV pass): the Q and dO fragments of dK += dS^T Q and
#     dV += P^T dO loaded untransposed
mutant ldmatrix-trans-dropped-attention-dkv attention.cu cuda_attention_test forward \
'      ldmatrix_x4_trans(r, tile + fa_swz<DP>(c0 + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));' \
'      ldmatrix_x4(r, tile + fa_swz<DP>(c0 + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));'

# 20. NaN flag never raised (tiled bf16 attention dK/dV pass): the Q and dO rows of queries that miss a key are not
#     scanned for Inf / NaN
mutant nan-scan-skipped-attention-dkv attention.cu cuda_attention_test forward \
'    if (i0 < qall) {' \
'    if (i0 < 0) {'

# 21. missing barrier (tiled bf16 attention dK/dV pass): the next query tile (and its statistics) refill the stage of
#     tile t - 1 while other warps may still read it
mutant missing-barrier-attention-dkv attention.cu cuda_attention_test reverse \
'    __syncthreads();  // everyone'"'"'s have (and its stats, K, V are staged); every warp is done with query tile t - 1' \
'    // (barrier removed)'

# 22. wrong swizzle mode in the wgmma descriptors (Hopper kernels: the k-tile helper both use): the A operand
#     described as 64-byte swizzled while the tiles are stored with the 128-byte pattern
mutant wgmma-descriptor-swizzle-mode gemm_sm90.cu cuda_gemm_test forward \
'    wgmma_m64n128k16_bf16(acc, wgmma_desc(a_addr + 32 * ks, 16, 1024, kSwizzle128B),' \
'    wgmma_m64n128k16_bf16(acc, wgmma_desc(a_addr + 32 * ks, 16, 1024, 2),'

# 23. wgmma.wait_group off by one (Hopper kernels' k-tile helper): each k tile's group is left pending, so the last
#     one is never waited for before the epilogue reads the accumulators
mutant wgmma-wait-group-off-by-one gemm_sm90.cu cuda_gemm_test forward \
'  wgmma_wait<0>();' \
'  wgmma_wait<1>();'

# 24. wrong stride byte offset in the B descriptor (Hopper kernels' k-tile helper): 512 for the 1024 bytes between
#     8-row groups
mutant wgmma-descriptor-stride-offset gemm_sm90.cu cuda_gemm_test forward \
'                          wgmma_desc(b_addr + 32 * ks, 16, 1024, kSwizzle128B), 1);' \
'                          wgmma_desc(b_addr + 32 * ks, 16, 512, kSwizzle128B), 1);'

# 25. tiles stored unswizzled (Hopper kernel): the cp.async writes ignore the 128-byte swizzle the descriptors declare
mutant wgmma-store-unswizzled gemm_sm90.cu cuda_gemm_test forward \
'    uint4* dst = tile + row * 8 + (chunk ^ (row & 7));' \
'    uint4* dst = tile + row * 8 + chunk;'

# 26. missing barrier before the wgmma (Hopper kernel): a warpgroup multiplies a k tile whose other half (the other
#     warpgroup's copies) has not landed, and refills a stage the other warpgroup may still read
mutant wgmma-missing-barrier gemm_sm90.cu cuda_gemm_test forward \
'      __syncthreads();                // everyone'"'"'s, and both warpgroups are done with k tile kt - 1 (refilled below)' \
'      // (barrier removed)'

# 27. consumer skips the full-barrier wait (Hopper TMA kernel): a stage is multiplied before its bulk copies have
#     landed (the lane lands them only at a wait: the consumers read the poison, or an older k tile)
mutant tma-consumer-skips-full-wait gemm_sm90.cu cuda_gemm_test forward \
'        mbar_wait(&full[st], (it / kTStages) & 1u);  // k tile kt has landed in the stage' \
'        // (full-barrier wait removed)'

# 28. producer skips the empty-barrier wait (Hopper TMA kernel): a stage is refilled while the consumers may still
#     read its previous k tile
mutant tma-producer-skips-empty-wait gemm_sm90.cu cuda_gemm_test reverse \
'          mbar_wait(&empty[st], (round & 1u) ^ 1u);  // the consumers are done with the stage'"'"'s previous k tile' \
'          // (empty-barrier wait removed)'

# 29. wrong expect_tx byte count (Hopper TMA kernel): 16 bytes more than the two copies bring, so the full barrier's
#     phase never completes (the lane reports the deadlock)
mutant tma-wrong-expect-tx gemm_sm90.cu cuda_gemm_test forward \
'          mbar_arrive_expect_tx(&full[st], kHStageBytes);' \
'          mbar_arrive_expect_tx(&full[st], kHStageBytes + 16);'

# 30. tensor maps without swizzle (Hopper TMA kernel): the copies write the tiles unswizzled while the wgmma
#     descriptors read the 128-byte swizzle
mutant tma-map-swizzle-none gemm_sm90.cu cuda_gemm_test forward \
'CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,' \
'CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,'

# The GPU-vs-CPU test programs the mutants link with, each compiled once (in parallel), then the mutants.
jobs=${SF_MUTANT_JOBS:-$(nproc 2>/dev/null || echo 2)}
for test in $(printf '%s\n' "${tests[@]}" | sort -u); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  { "$cxx" "${flags[@]}" -c "$root/test/native/$test.cpp" -o "$tmp/$test.o.part" >"$tmp/$test.log" 2>&1 &&
    mv "$tmp/$test.o.part" "$tmp/$test.o"; } &
done
wait
for i in "${!names[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_mutant "$i" >"$tmp/result.$i" 2>&1 &
done
wait
for i in "${!names[@]}"; do
  cat "$tmp/result.$i"
  if [ -e "$tmp/caught.$i" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
