// emu_selftest.cpp — the CPU lane's own semantics (cuda/emu), checked against independent expectations: warp
// shuffles, votes and barrier reductions; mma.sync m16n8k8 tf32 and m16n8k16 bf16 from fragments placed by this test
// per the PTX ISA tables against a naive product; wgmma m64n128k16 (a warpgroup collective) from operands laid out
// in shared memory per the ISA's descriptor and swizzle layouts; cooperative launches and grid syncs; CUDA's launch
// refusals; and the faults the lane must report (a deadlock, divergent warp collectives, a lane that exits before a
// collective naming it, grid.sync outside a cooperative launch, a warpgroup whose warp exits before a wgmma, a wgmma
// without wgmma.fence, without wait_group, or whose shared memory is overwritten before its wait), each run in a child
// process that must abort with sfemu's message; mbarrier phases and parity waits, the TMA copy (cp.async.bulk.tensor:
// swizzle layout, out-of-bounds zero fill, landing at the wait, tx accounting), cuTensorMapEncodeTiled's validation,
// and the mbarrier faults (a wrong expect_tx byte count, extra arrivals, uninitialised or overwritten barriers).
// Built only in the CPU lane (SF_CUDA_EMU).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/hopper.cuh"
#include "check.h"

using namespace sf::cuda;

namespace {

__global__ void shuffle_kernel(int* out) {
  const int lane = threadIdx.x % 32, t = threadIdx.x;
  int v = t + 1;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[t * 5 + 0] = v;                                              // the warp's sum of t + 1
  out[t * 5 + 1] = __shfl_sync(0xffffffffu, t * 10, 5);            // lane 5's value
  out[t * 5 + 2] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[t * 5 + 3] = __shfl_down_sync(0xffffffffu, t, 4);            // lane + 4, or own past the end
  out[t * 5 + 4] = __syncthreads_or(t == 37) + 2 * __syncthreads_or(0);
}

TEST(warp_shuffles_votes_and_barrier_reductions) {
  std::vector<int> out(64 * 5, -1);
  int* d = nullptr;
  CHECK(cudaMalloc(&d, out.size() * sizeof(int)) == cudaSuccess);
  SF_LAUNCH(shuffle_kernel, (1, 64, 0, nullptr), d);
  CHECK(cudaGetLastError() == cudaSuccess);
  cudaMemcpy(out.data(), d, out.size() * sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    const int w = t / 32, lane = t % 32;
    const int sum = (w * 32 + 1 + w * 32 + 32) * 32 / 2;
    CHECK_EQ(out[t * 5 + 0], sum);
    CHECK_EQ(out[t * 5 + 1], (w * 32 + 5) * 10);
    CHECK_EQ(static_cast<unsigned>(out[t * 5 + 2]), ballot);
    CHECK_EQ(out[t * 5 + 3], lane + 4 < 32 ? t + 4 : t);
    CHECK_EQ(out[t * 5 + 4], 1);
  }
}

// One warp: C (16 x 8) = A (16 x K) B (K x 8) through the mma wrappers, fragments placed per the PTX ISA tables
// (groupID g = lane / 4, threadID_in_group t = lane % 4).
__global__ void mma_kernel(const float* A, const float* B, float* C, int bf16) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  float c[4] = {0, 0, 0, 0};
  if (bf16) {  // K = 16: A rows g / g + 8, columns 2t, 2t+1 (+8); B rows 2t, 2t+1 (+8), column g
    auto a2 = [&](int r, int k) { return pack_bf16x2(A[r * 16 + k], A[r * 16 + k + 1]); };
    auto b2 = [&](int k, int n) { return pack_bf16x2(B[k * 8 + n], B[(k + 1) * 8 + n]); };
    mma_bf16(c, a2(g, 2 * t), a2(g + 8, 2 * t), a2(g, 2 * t + 8), a2(g + 8, 2 * t + 8), b2(2 * t, g),
             b2(2 * t + 8, g));
  } else {  // K = 8: a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4); b0 (t, g), b1 (t + 4, g)
    mma_tf32(c, to_tf32(A[g * 8 + t]), to_tf32(A[(g + 8) * 8 + t]), to_tf32(A[g * 8 + t + 4]),
             to_tf32(A[(g + 8) * 8 + t + 4]), to_tf32(B[t * 8 + g]), to_tf32(B[(t + 4) * 8 + g]));
  }
  C[g * 8 + 2 * t] = c[0];
  C[g * 8 + 2 * t + 1] = c[1];
  C[(g + 8) * 8 + 2 * t] = c[2];
  C[(g + 8) * 8 + 2 * t + 1] = c[3];
}

TEST(mma_fragments_follow_the_ptx_layouts) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-8, 8);  // exact in bf16 and tf32: the products and sums are exact too
  for (int bf16 : {0, 1}) {
    const int K = bf16 ? 16 : 8;
    std::vector<float> A(16 * K), B(K * 8), C(16 * 8, NAN);
    for (float& x : A) x = static_cast<float>(small(rng)) * 0.25f;
    for (float& x : B) x = static_cast<float>(small(rng)) * 0.5f;
    float *dA, *dB, *dC;
    cudaMalloc(&dA, A.size() * 4);
    cudaMalloc(&dB, B.size() * 4);
    cudaMalloc(&dC, C.size() * 4);
    cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice);
    SF_LAUNCH(mma_kernel, (1, 32, 0, nullptr), dA, dB, dC, bf16);
    cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost);
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < 8; ++n) {
        double ref = 0;
        for (int k = 0; k < K; ++k) ref += static_cast<double>(A[r * K + k]) * B[k * 8 + n];
        CHECK_EQ(static_cast<double>(C[r * 8 + n]), ref);
      }
    cudaFree(dA);
    cudaFree(dB);
    cudaFree(dC);
  }
}

// ---- wgmma (Hopper): a warpgroup of 128 threads, operands in shared memory through matrix descriptors -------------
// The test lays the operands out itself, from the PTX ISA's "Shared Memory Matrix Layout" (core matrices of 8 rows x
// 16 bytes; a K-major operand's row r, element k): no swizzle: (r / 8) SBO + (k / 8) LBO + (r % 8) 16 + (k % 8) 2;
// a T-byte swizzle (T = 128, 64, 32): row r at (r / 8) SBO + (r % 8) T, its 16-byte chunk c = k / 8 (+ 2 per k16
// step) moved to c ^ ((r % 8) >> (log2(128 / T))) — the address bits [4, ..) XORed with bits [7, ..). The kernel
// copies the image into shared memory as bytes and issues the wgmma; D comes back per the m64nNk16 D fragment.
struct WgLayout {
  int mode;       // descriptor swizzle field: 0 none, 1 128B, 2 64B, 3 32B
  uint32_t lbo, sbo;
};
size_t wg_byte(const WgLayout& L, int r, int k) {  // k < 16 per k16 step; 128B: k < 64 (4 steps along one row)
  if (L.mode == 0) return (r / 8) * L.sbo + (k / 8) * L.lbo + (r % 8) * 16 + (k % 8) * 2;
  const int T = L.mode == 1 ? 128 : L.mode == 2 ? 64 : 32, shift = L.mode == 1 ? 0 : L.mode == 2 ? 1 : 2;
  const int c = k / 8, phase = (r % 8) >> shift;
  return (r / 8) * L.sbo + (r % 8) * T + ((c ^ phase) * 16) + (k % 8) * 2;
}
uint64_t wg_desc(uint32_t addr, const WgLayout& L) {  // "Matrix Descriptor Format", encoded by hand
  return ((addr & 0x3ffffu) >> 4) | (static_cast<uint64_t>(L.lbo >> 4) << 16) |
         (static_cast<uint64_t>(L.sbo >> 4) << 32) | (static_cast<uint64_t>(L.mode) << 62);
}
uint16_t bf16_of(float x) {  // exact for the small values used here
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>(u >> 16);
}

// D = sum over `steps` k16 steps of A_s B_s; A at shared offset 0, B at b_off; the descriptors' start advanced by
// `adv` bytes per step. out[t * 64 + i] = thread t's d[i]; before[t] = its d[0] read right after the issue (before
// the wait: the old value in the lane). flags: 1 no wgmma.fence, 2 no wait_group, 4 shared memory written before the
// wait, 8 warp 3 exits first.
__global__ void wgmma_kernel(const unsigned char* image, int bytes, uint32_t b_off, uint64_t da, uint64_t db,
                             int steps, uint32_t adv, float* out, float* before, int flags) {
  SF_DYNAMIC_SMEM(raw);
  if ((flags & 8) && threadIdx.x >= 96) return;
  for (int i = threadIdx.x; i < bytes; i += blockDim.x) raw[i] = image[i];
  __syncthreads();
  float d[64];
  for (float& x : d) x = 0.0f;
  if (!(flags & 1)) wgmma_fence();
  for (int s = 0; s < steps; ++s) wgmma_m64n128k16_bf16(d, da + (adv * s >> 4), db + (adv * s >> 4), 1);
  wgmma_commit();
  before[threadIdx.x] = d[0];
  if (flags & 4) {
    __syncthreads();
    if (threadIdx.x == 0) raw[b_off] ^= 0x40;
  }
  if (!(flags & 2)) wgmma_wait<0>();
  for (int i = 0; i < 64; ++i) out[threadIdx.x * 64 + i] = d[i];
}

struct WgRun {
  std::vector<float> A, B;  // A[r][k] (64 x K), B[n][k] (128 x K): exact small values
  std::vector<unsigned char> image;
  uint32_t b_off;
  int K;
};
WgRun wg_setup(const WgLayout& L, int K, std::mt19937& rng) {
  std::uniform_int_distribution<int> small(-8, 8);
  WgRun w;
  w.K = K;
  w.A.resize(64 * K), w.B.resize(128 * K);
  for (float& x : w.A) x = static_cast<float>(small(rng)) * 0.5f;
  for (float& x : w.B) x = static_cast<float>(small(rng)) * 0.25f;
  size_t a_end = 0;
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < K; ++k) a_end = std::max(a_end, wg_byte(L, r, k) + 2);
  w.b_off = static_cast<uint32_t>((a_end + 1023) / 1024 * 1024);
  size_t b_end = 0;
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < K; ++k) b_end = std::max(b_end, wg_byte(L, n, k) + 2);
  w.image.assign(w.b_off + b_end, 0xff);  // NaN bytes wherever the layout puts nothing
  auto put = [&](size_t at, float x) {
    const uint16_t h = bf16_of(x);
    std::memcpy(&w.image[at], &h, 2);
  };
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < K; ++k) put(wg_byte(L, r, k), w.A[r * K + k]);
  for (int n = 0; n < 128; ++n)
    for (int k = 0; k < K; ++k) put(w.b_off + wg_byte(L, n, k), w.B[n * K + k]);
  return w;
}
void wg_launch(const WgRun& w, const WgLayout& L, int steps, uint32_t adv, std::vector<float>& out,
               std::vector<float>& before, int flags = 0) {
  unsigned char* dimg;
  float *dout, *dbefore;
  cudaMalloc(&dimg, w.image.size());
  cudaMalloc(&dout, 128 * 64 * 4);
  cudaMalloc(&dbefore, 128 * 4);
  cudaMemcpy(dimg, w.image.data(), w.image.size(), cudaMemcpyHostToDevice);
  CHECK(cudaFuncSetAttribute(wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024) == cudaSuccess);
  SF_LAUNCH(wgmma_kernel, (1, 128, w.image.size(), nullptr), dimg, static_cast<int>(w.image.size()), w.b_off,
            wg_desc(0, L), wg_desc(w.b_off, L), steps, adv, dout, dbefore, flags);
  out.assign(128 * 64, NAN);
  before.assign(128, NAN);
  cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(before.data(), dbefore, before.size() * 4, cudaMemcpyDeviceToHost);
  cudaFree(dimg);
  cudaFree(dout);
  cudaFree(dbefore);
}

TEST(wgmma_reads_descriptors_and_swizzles_per_the_ptx_layouts) {
  std::mt19937 rng(11);
  // {layout, K, steps, advance}: 128B with 64 k per row (4 k16 steps, start +32 bytes each, as gemm_sm90.cu), one
  // k16 step in each other mode, and two core-matrix arrangements without swizzle (K-adjacent first, or M-adjacent)
  struct Case {
    WgLayout L;
    int K, steps;
    uint32_t adv;
  };
  const Case cases[] = {{{1, 16, 1024}, 64, 4, 32}, {{1, 16, 1024}, 16, 1, 0}, {{2, 16, 512}, 16, 1, 0},
                        {{3, 16, 256}, 16, 1, 0},   {{0, 128, 256}, 16, 1, 0}, {{0, 2048, 128}, 16, 1, 0}};
  for (const Case& c : cases) {
    WgRun w = wg_setup(c.L, c.K, rng);
    std::vector<float> out, before;
    wg_launch(w, c.L, c.steps, c.adv, out, before);
    int bad = 0;
    for (int t = 0; t < 128; ++t) {
      CHECK_EQ(before[t], 0.0f);  // the accumulators before the wait: not yet written
      const int wq = t / 32, g = (t % 32) / 4, tq = t % 4;
      for (int j = 0; j < 16; ++j)
        for (int e = 0; e < 4; ++e) {
          const int r = 16 * wq + g + (e >= 2 ? 8 : 0), n = 8 * j + 2 * tq + (e & 1);
          double ref = 0;
          for (int k = 0; k < c.K; ++k) ref += static_cast<double>(w.A[r * c.K + k]) * w.B[n * c.K + k];
          if (static_cast<double>(out[t * 64 + 4 * j + e]) != ref) ++bad;
        }
    }
    std::printf("  swizzle mode %d, LBO %u, SBO %u, K %d: %d wrong\n", c.L.mode, c.L.lbo, c.L.sbo, c.K, bad);
    CHECK_EQ(bad, 0);
  }
  // the same 128B image read as 64B-swizzled, or with the wrong SBO, gives other values (what the mutants rely on)
  WgRun w = wg_setup({1, 16, 1024}, 16, rng);
  std::vector<float> good, other, before;
  wg_launch(w, {1, 16, 1024}, 1, 0, good, before);
  wg_launch(w, {2, 16, 1024}, 1, 0, other, before);
  CHECK(good != other);
  wg_launch(w, {1, 16, 512}, 1, 0, other, before);
  CHECK(good != other);
}

// Each block writes its index, the grid syncs, then every block reads all the others' (and twice more, reversed).
__global__ void coop_kernel(int* slots, int* out) {
  const int b = blockIdx.x, n = gridDim.x;
  if (threadIdx.x == 0) slots[b] = b + 1;
  grid_sync();
  int s = 0;
  for (int i = 0; i < n; ++i) s += slots[i];
  grid_sync();
  if (threadIdx.x == 0) slots[b] = -(b + 1);
  grid_sync();
  int s2 = 0;
  for (int i = 0; i < n; ++i) s2 += slots[i];
  out[b * blockDim.x + threadIdx.x] = s * 1000 - s2;
}

TEST(cooperative_launch_meets_at_grid_syncs) {
  int per_sm = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, coop_kernel, 128, 0) == cudaSuccess);
  CHECK(per_sm >= 1);
  const int blocks = 6, threads = 128;
  int *slots, *out;
  cudaMalloc(&slots, blocks * 4);
  cudaMalloc(&out, blocks * threads * 4);
  CHECK(SF_LAUNCH_COOPERATIVE(coop_kernel, (blocks, threads, 0, nullptr), slots, out) == cudaSuccess);
  std::vector<int> h(blocks * threads);
  cudaMemcpy(h.data(), out, h.size() * 4, cudaMemcpyDeviceToHost);
  const int s = blocks * (blocks + 1) / 2;
  for (int v : h) CHECK_EQ(v, s * 1000 + s);
  // more blocks than can be resident at once: refused, as CUDA does
  CHECK(SF_LAUNCH_COOPERATIVE(coop_kernel, (per_sm * 8 + 1, threads, 0, nullptr), slots, out) ==
        cudaErrorCooperativeLaunchTooLarge);
  cudaFree(slots);
  cudaFree(out);
}

__global__ void nothing_kernel() {}
__global__ void smem_kernel() {
  SF_DYNAMIC_SMEM(raw);
  raw[0] = 1;
}

TEST(launch_configurations_cuda_refuses) {
  SF_LAUNCH(nothing_kernel, (1, 2048, 0, nullptr));
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  SF_LAUNCH(nothing_kernel, (dim3(1, 70000), 32, 0, nullptr));
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  SF_LAUNCH(smem_kernel, (1, 32, 64 * 1024, nullptr));  // over the 48 KiB default
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess);
  SF_LAUNCH(smem_kernel, (1, 32, 64 * 1024, nullptr));
  CHECK(cudaGetLastError() == cudaSuccess);
}

// ---- faults: each in a child process that must abort with sfemu's message ----------------------------------------

__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x % 32 < 16)
    __syncthreads();
  else
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);  // waits for lanes 0..15, which wait at the barrier
}
__global__ void divergent_kernel(int* out) {
  if (threadIdx.x < 16)
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  else
    out[threadIdx.x] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
}
__global__ void exited_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}
__global__ void sync_outside_kernel() { grid_sync(); }

// Runs fn in a child; true when it died of SIGABRT after printing a line with `needle` on stderr.
template <typename F>
bool faults_with(F fn, const char* needle) {
  int fd[2];
  if (pipe(fd) != 0) return false;
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 2);
    close(fd[0]);
    fn();
    _exit(0);
  }
  close(fd[1]);
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = read(fd[0], buf, sizeof buf)) > 0) err.append(buf, static_cast<size_t>(n));
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const bool ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && err.find(needle) != std::string::npos;
  std::printf("  child: %s", err.empty() ? "(no message)\n" : err.c_str());
  return ok;
}

TEST(the_lane_reports_faults_a_gpu_would_hang_or_misbehave_on) {
  int* d = nullptr;
  cudaMalloc(&d, 64 * 4);
  CHECK(faults_with([&] { SF_LAUNCH(deadlock_kernel, (1, 32, 0, nullptr), d); }, "deadlock"));
  CHECK(faults_with([&] { SF_LAUNCH(divergent_kernel, (1, 32, 0, nullptr), d); }, "divergent warp collectives"));
  CHECK(faults_with([&] { SF_LAUNCH(exited_kernel, (1, 32, 0, nullptr), d); }, "exited"));
  CHECK(faults_with([&] { SF_LAUNCH(sync_outside_kernel, (2, 32, 0, nullptr)); }, "cudaLaunchCooperativeKernel"));
  // wgmma: a warp of the warpgroup that never arrives, no wgmma.fence, no wait_group, shared memory overwritten before
  // the wait
  {
    std::mt19937 rng(12);
    const WgLayout L{1, 16, 1024};
    WgRun w = wg_setup(L, 16, rng);
    std::vector<float> out, before;
    CHECK(faults_with([&] { wg_launch(w, L, 1, 0, out, before, 8); }, "warpgroup"));
    CHECK(faults_with([&] { wg_launch(w, L, 1, 0, out, before, 1); }, "wgmma.fence"));
    CHECK(faults_with([&] { wg_launch(w, L, 1, 0, out, before, 2); }, "wgmma.wait_group"));
    CHECK(faults_with([&] { wg_launch(w, L, 1, 0, out, before, 4); }, "modified before"));
  }
  cudaFree(d);
}

// ---- mbarrier and TMA (Hopper) ----------------------------------------------------------------------------------
// A 2-D bf16 box through a tensor map into shared memory at offset 1024 (the mbarrier at offset 0): what the lane
// reads before the wait (out[n]: must still be the poison), then the box as it landed. flags: 1 the barrier is never
// initialised, 2 nobody waits (the copy is still in flight at the end), 4 the barrier's memory is overwritten before
// the wait, 8 one arrival more than the barrier's count.
__global__ void tma_kernel(const __grid_constant__ CUtensorMap map, int c0, int c1, uint32_t expect, int flags,
                           uint16_t* out, int n) {
  SF_DYNAMIC_SMEM(smem);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem);
  uint16_t* box = reinterpret_cast<uint16_t*>(smem + 1024);
  if (threadIdx.x == 0 && !(flags & 1)) {
    mbar_init(bar, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    mbar_arrive_expect_tx(bar, expect);
    tma_load_2d(box, &map, c0, c1, bar);
    out[n] = box[0];  // not landed yet: no thread has waited
    if (flags & 8) mbar_arrive(bar);
    if (flags & 4) *bar = 0;
  }
  if (!(flags & 2)) mbar_wait(bar, 0);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = box[i];
}

struct TmaRun {
  std::vector<uint16_t> src;  // rows x ld, the tensor rows x cols
  int64_t rows = 10, cols = 40, ld = 48;
  uint16_t* d = nullptr;
  CUtensorMap map{};
};

CUresult tma_encode(TmaRun& r, CUtensorMapSwizzle swz, uint32_t box0 = 64, uint32_t box1 = 16) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess || !fn)
    return CUDA_ERROR_NOT_SUPPORTED;
  auto encode = reinterpret_cast<decltype(&cuTensorMapEncodeTiled)>(fn);
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(r.cols), static_cast<cuuint64_t>(r.rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(r.ld) * 2};
  const cuuint32_t box[2] = {box0, box1}, es[2] = {1, 1};
  return encode(&r.map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, r.d, dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                swz, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

TmaRun tma_setup() {
  TmaRun r;
  r.src.resize(static_cast<size_t>(r.rows * r.ld));
  for (size_t i = 0; i < r.src.size(); ++i) r.src[i] = static_cast<uint16_t>(0x1000 + i);
  CHECK(cudaMalloc(&r.d, r.src.size() * 2) == cudaSuccess);
  cudaMemcpy(r.d, r.src.data(), r.src.size() * 2, cudaMemcpyHostToDevice);
  return r;
}

std::vector<uint16_t> tma_launch(const TmaRun& r, int c0, int c1, uint32_t expect, int flags, int n = 64 * 16) {
  uint16_t* d = nullptr;
  CHECK(cudaMalloc(&d, static_cast<size_t>(n + 1) * 2) == cudaSuccess);
  SF_LAUNCH(tma_kernel, (1, 64, 1024 + 2 * n, nullptr), r.map, c0, c1, expect, flags, d, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  std::vector<uint16_t> out(static_cast<size_t>(n + 1));
  cudaMemcpy(out.data(), d, out.size() * 2, cudaMemcpyDeviceToHost);
  cudaFree(d);
  return out;
}

// The box of 64 x 16 at (c0, c1) of the 10 x 40 tensor (row stride 48): element (r, k) at byte r * 128 + 2 k, its
// 16-byte chunk XORed with r % 8 under the 128-byte swizzle (the destination is 1024-byte aligned); elements outside
// the tensor (negative coordinates, or past 40 columns / 10 rows) are zeros; nothing has landed before the wait.
TEST(tma_copy_swizzles_fills_out_of_bounds_with_zeros_and_lands_at_the_wait) {
  TmaRun r = tma_setup();
  for (CUtensorMapSwizzle swz : {CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_SWIZZLE_NONE})
    for (const auto& c : {std::array<int, 2>{0, 0}, std::array<int, 2>{-8, 3}, std::array<int, 2>{16, -2}}) {
      CHECK(tma_encode(r, swz) == CUDA_SUCCESS);
      const std::vector<uint16_t> out = tma_launch(r, c[0], c[1], 64 * 16 * 2, 0);
      CHECK_EQ(out[64 * 16], 0xffff);  // the poison: the copy lands only when a thread waits on its barrier
      int bad = 0;
      for (int row = 0; row < 16; ++row)
        for (int k = 0; k < 64; ++k) {
          const int x = c[0] + k, y = c[1] + row;
          const uint16_t want = x >= 0 && x < r.cols && y >= 0 && y < r.rows ? r.src[static_cast<size_t>(y * r.ld + x)] : 0;
          const int chunk = k / 8, slot = swz == CU_TENSOR_MAP_SWIZZLE_128B ? chunk ^ (row % 8) : chunk;
          if (out[static_cast<size_t>(row * 64 + slot * 8 + k % 8)] != want) ++bad;
        }
      CHECK_EQ(bad, 0);
    }
  cudaFree(r.d);
}

// cuTensorMapEncodeTiled refuses what the driver documents as invalid: a global address not 16-byte aligned, a row
// stride not a multiple of 16 bytes, a box dimension over 256, an inner box dimension that is not a multiple of 16
// bytes or wider than the swizzle span.
TEST(tensor_map_encoding_validates_like_the_driver) {
  TmaRun r = tma_setup();
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_SUCCESS);
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_64B) == CUDA_ERROR_INVALID_VALUE);         // 128-byte rows, 64-byte span
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_64B, 32) == CUDA_SUCCESS);
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_NONE, 4) == CUDA_ERROR_INVALID_VALUE);     // 8-byte inner box
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_NONE, 64, 257) == CUDA_ERROR_INVALID_VALUE);
  TmaRun odd = r;
  odd.ld = 44;  // 88-byte rows
  CHECK(tma_encode(odd, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_ERROR_INVALID_VALUE);
  odd = r;
  odd.d = r.d + 1;  // 2 bytes past 16
  CHECK(tma_encode(odd, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_ERROR_INVALID_VALUE);
  void* fn = &fn;
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSuccess;
  CHECK(cudaGetDriverEntryPointByVersion("cuNoSuchFunction", &fn, 12000, cudaEnableDefault, &q) == cudaSuccess);
  CHECK(fn == nullptr && q == cudaDriverEntryPointSymbolNotFound);
  cudaFree(r.d);
}

// A producer warp and a consumer warp hand 4 rounds of data through one shared slot with a "full" and an "empty"
// mbarrier (count 32 each), waiting by phase parity; the consumers must see every round's data, in either order.
__global__ void mbar_pingpong_kernel(int* out) {
  SF_DYNAMIC_SMEM(smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);
  uint64_t* empty = full + 1;
  int* slot = reinterpret_cast<int*>(smem + 16);
  const int t = threadIdx.x, lane = t % 32;
  if (t == 0) {
    mbar_init(full, 32);
    mbar_init(empty, 32);
    fence_mbarrier_init();
  }
  __syncthreads();
  for (uint32_t round = 0; round < 4; ++round) {
    if (t < 32) {
      mbar_wait(empty, (round & 1u) ^ 1u);
      slot[lane] = static_cast<int>(round * 100) + lane;
      mbar_arrive(full);
    } else {
      mbar_wait(full, round & 1u);
      out[round * 32 + lane] = slot[lane];
      mbar_arrive(empty);
    }
  }
}

TEST(mbarrier_phases_hand_data_over_by_parity) {
  int* d = nullptr;
  CHECK(cudaMalloc(&d, 4 * 32 * 4) == cudaSuccess);
  SF_LAUNCH(mbar_pingpong_kernel, (1, 64, 1024, nullptr), d);
  CHECK(cudaGetLastError() == cudaSuccess);
  std::vector<int> out(4 * 32);
  cudaMemcpy(out.data(), d, out.size() * 4, cudaMemcpyDeviceToHost);
  cudaFree(d);
  for (int round = 0; round < 4; ++round)
    for (int l = 0; l < 32; ++l) CHECK_EQ(out[static_cast<size_t>(round * 32 + l)], round * 100 + l);
}

// The mbarrier and TMA faults: an expect_tx of more bytes than the copies bring (the phase never completes: a
// deadlock), of fewer (the tx-count would go below zero), an arrival beyond the count, a barrier never initialised
// or overwritten by ordinary stores, a copy nobody waits for.
TEST(the_lane_reports_mbarrier_and_tma_faults) {
  TmaRun r = tma_setup();
  CHECK(tma_encode(r, CU_TENSOR_MAP_SWIZZLE_128B) == CUDA_SUCCESS);
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2 + 16, 0); }, "mbarrier.try_wait.parity"));
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2 - 16, 0); }, "more than the expect-tx"));
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2, 8); }, "more arrivals than its count"));
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2, 1); }, "no mbarrier was initialised"));
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2, 4); }, "overwritten"));
  CHECK(faults_with([&] { tma_launch(r, 0, 0, 64 * 16 * 2, 2); }, "in flight"));
  cudaFree(r.d);
}

}  // namespace

TEST_MAIN()
