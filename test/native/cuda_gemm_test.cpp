// cuda_gemm_test.cpp — cuda::matmul (fp32 SIMT, tf32 and bf16 tensor cores: the pipelined bf16 kernel, the legacy one
// selected with GemmImpl::Legacy, and matmul_bf16 on operands that are bf16 in memory) and cuda::bias_grad against
// the CPU kernels on fresh random inputs: sizes that are not multiples of the 128 x 128 tiles (nor of the k stages), all four
// transpose combinations, batches with a broadcast operand (stride 0) and padded strides, alpha, beta = 0 over a
// NaN-poisoned C, beta = 1 accumulation, bias + GELU with the pre-activation stored, K = 0. Every output is poisoned
// first and followed by a guard zone that must come back untouched. Relative error (max |gpu - cpu| / max |cpu|):
// fp32 <= 1e-5, tf32 <= 1e-3, bf16 <= 1e-2; NaN never passes. The bf16 paths are also held to 1e-4 against the CPU
// kernel on the operands rounded to bf16 (what they multiply exactly: only the summation order differs), which a
// wrong fragment, swizzle or pipeline stage cannot pass. Skips (exit 77) without CUDA or a GPU.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "check.h"

#ifndef SHAREDFORMER_WITH_CUDA
int main() {
  std::printf("SKIP: this build has no CUDA kernels (SHAREDFORMER_CUDA=OFF or nvcc not found)\n");
  return 77;
}
#else
#include "../../cuda/kernels.h"
#include "core/backend.h"
#include "core/context.h"
#include "cuda_util.h"

using namespace sf;
using sfcuda::DeviceBuf;

namespace {

using sfcuda::name_of;
using sfcuda::tol_of;

struct Case {
  int64_t batch, M, N, K;
  bool ta, tb;
  int a_mode = 0, b_mode = 0;  // 0: dense per batch, 1: broadcast (stride 0), 2: padded stride
  float alpha = 1.0f, beta = 0.0f;
  bool bias = false, gelu = false, preact = false;
  int64_t c_pad = 0;  // extra elements between batch entries of C (left untouched: checked)
};

// How the product is computed: cuda::matmul at a precision (BF16 with the pipelined or the legacy kernel), or
// cuda::matmul_bf16 on operands rounded to bf16 on the host (misalign > 0: A and B start that many elements past a
// 16-byte boundary, so that the kernel must load them without cp.async).
// BF16Wgmma / BF16OperandsWgmma: the same with GemmImpl::Wgmma (the Hopper kernel for !trans_a, trans_b on a device of
// compute capability 9.0, as the lane's; the pipelined kernel otherwise). The other transposes fall back to the
// pipelined kernel, tested above, so the wgmma modes run them only where a case says so (fallback).
enum class Mode { F32, TF32, BF16, BF16Legacy, BF16Operands, BF16Wgmma, BF16OperandsWgmma };
const Mode kAll[] = {Mode::F32,          Mode::TF32,      Mode::BF16,
                     Mode::BF16Legacy,   Mode::BF16Operands, Mode::BF16Wgmma,
                     Mode::BF16OperandsWgmma};
bool is_wgmma(Mode m) { return m == Mode::BF16Wgmma || m == Mode::BF16OperandsWgmma; }
bool is_operands(Mode m) { return m == Mode::BF16Operands || m == Mode::BF16OperandsWgmma; }
// Whether a case runs in this mode: the wgmma modes take the K-major case (the kernel's), or any with fallback.
bool wanted(Mode m, bool ta, bool tb, bool fallback = false) { return !is_wgmma(m) || (!ta && tb) || fallback; }

cuda::Precision prec_of(Mode m) {
  return m == Mode::F32 ? cuda::Precision::F32 : (m == Mode::TF32 ? cuda::Precision::TF32 : cuda::Precision::BF16);
}
const char* mode_name(Mode m) {
  switch (m) {
    case Mode::F32: return "f32";
    case Mode::TF32: return "tf32";
    case Mode::BF16: return "bf16";
    case Mode::BF16Legacy: return "bf16-legacy";
    case Mode::BF16Wgmma: return "bf16-wgmma";
    case Mode::BF16OperandsWgmma: return "bf16-operands-wgmma";
    default: return "bf16-operands";
  }
}

uint16_t bf16_bits(float x) {  // round to nearest even, as __float2bfloat16_rn (the inputs here are finite)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float bf16_value(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::string describe(const Case& c, Mode mode, int misalign) {
  return cat(mode_name(mode), " batch=", c.batch, " M=", c.M, " N=", c.N, " K=", c.K, c.ta ? " At" : "",
             c.tb ? " Bt" : "", c.a_mode == 1 ? " A-bcast" : (c.a_mode == 2 ? " A-padded" : ""),
             c.b_mode == 1 ? " B-bcast" : (c.b_mode == 2 ? " B-padded" : ""), " alpha=", c.alpha, " beta=", c.beta,
             c.bias ? " bias" : "", c.gelu ? " gelu" : "", c.preact ? " preact" : "", c.c_pad ? " C-padded" : "",
             misalign ? cat(" misaligned+", misalign) : std::string());
}

// Which kernel ran the product, in the lane (where the emulator counts launches): "tma" (the warp-specialized TMA
// Hopper kernel), "cp.async" (the Hopper kernel with cp.async staging) or "other"; "?" on a GPU.
struct LaunchCount {
#if defined(SF_CUDA_EMU)
  long tma = sfemu::launches("gemm_wgmma_tma_kernel"), cpa = sfemu::launches("gemm_wgmma_kernel");
  std::string since() const {
    return sfemu::launches("gemm_wgmma_tma_kernel") > tma   ? "tma"
           : sfemu::launches("gemm_wgmma_kernel") > cpa ? "cp.async"
                                                          : "other";
  }
#else
  std::string since() const { return "?"; }
#endif
};

std::string run_case(const Case& c, Mode mode, std::mt19937& rng, Context& ctx, const sfcuda::TestStream& st,
                     int misalign = 0) {
  const cuda::Precision p = prec_of(mode);
  const int64_t a_elems = c.M * c.K, b_elems = c.K * c.N;
  const int64_t sa = c.a_mode == 1 ? 0 : a_elems + (c.a_mode == 2 ? 13 : 0);
  const int64_t sb = c.b_mode == 1 ? 0 : b_elems + (c.b_mode == 2 ? 5 : 0);
  const int64_t sc = c.M * c.N + c.c_pad;
  const int64_t na = c.a_mode == 1 ? a_elems : sa * c.batch, nb = c.b_mode == 1 ? b_elems : sb * c.batch;
  const int64_t nc = sc * c.batch;
  std::vector<float> A = sfcuda::uniform(na, rng), B = sfcuda::uniform(nb, rng), bias = sfcuda::uniform(c.N, rng);
  // C: NaN when beta = 0 (it must be ignored), random otherwise; the padding between batch entries is a marker
  std::vector<float> C0 = c.beta == 0.0f ? sfcuda::nans(nc) : sfcuda::uniform(nc, rng, -2.0f, 2.0f);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t x = c.M * c.N; x < sc; ++x) C0[static_cast<size_t>(b * sc + x)] = -777.0f;
  std::vector<float> P0 = sfcuda::nans(nc);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t x = c.M * c.N; x < sc; ++x) P0[static_cast<size_t>(b * sc + x)] = -777.0f;
  // the operands rounded to bf16: what the bf16 paths multiply
  std::vector<uint16_t> A16(static_cast<size_t>(misalign + na)), B16(static_cast<size_t>(misalign + nb));
  std::vector<float> Ar(A.size()), Br(B.size());
  for (size_t i = 0; i < A.size(); ++i) A16[misalign + i] = bf16_bits(A[i]), Ar[i] = bf16_value(A16[misalign + i]);
  for (size_t i = 0; i < B.size(); ++i) B16[misalign + i] = bf16_bits(B[i]), Br[i] = bf16_value(B16[misalign + i]);

  DeviceBuf<float> dA(A), dB(B), dbias(bias), dC(C0), dP(P0);
  DeviceBuf<uint16_t> dA16(A16), dB16(B16);
  cpu::MatmulDesc d;
  d.batch = c.batch, d.M = c.M, d.N = c.N, d.K = c.K, d.trans_a = c.ta, d.trans_b = c.tb;
  d.a_stride = sa, d.b_stride = sb, d.c_stride = sc, d.alpha = c.alpha, d.beta = c.beta;
  d.act = c.gelu ? cpu::Activation::Gelu : cpu::Activation::None;
  d.a = dA.get(), d.b = dB.get(), d.c = dC.get();
  d.bias = c.bias ? dbias.get() : nullptr;
  d.preact = c.preact ? dP.get() : nullptr;
  const cuda::GemmImpl impl = mode == Mode::BF16Legacy ? cuda::GemmImpl::Legacy
                              : is_wgmma(mode)           ? cuda::GemmImpl::Wgmma
                                                         : cuda::GemmImpl::Pipelined;
  const LaunchCount launches;
  if (is_operands(mode)) {
    d.a = nullptr, d.b = nullptr;  // not read
    cuda::matmul_bf16(st.get(), d, dA16.get() + misalign, dB16.get() + misalign, impl);
  } else {
    cuda::matmul(st.get(), d, p, impl);
  }
  st.sync();
  const std::string path = launches.since();
  std::vector<float> Cg = dC.download(), Pg = dP.download();

  const std::string what = describe(c, mode, misalign) + " [" + path + "]";
  // The padding between batch entries must be untouched; the error is measured over the M x N entries only (the
  // -777 markers would otherwise dominate max |ref| and hide errors).
  auto dense = [&](std::vector<float>& x, const char* name) {
    std::vector<float> out;
    out.reserve(static_cast<size_t>(c.batch * c.M * c.N));
    for (int64_t b = 0; b < c.batch; ++b) {
      for (int64_t e = 0; e < c.M * c.N; ++e) out.push_back(x[static_cast<size_t>(b * sc + e)]);
      for (int64_t e = c.M * c.N; e < sc; ++e)
        if (x[static_cast<size_t>(b * sc + e)] != -777.0f)
          sfcheck::fail(__FILE__, __LINE__, what + ": padding of " + name + " overwritten");
    }
    return out;
  };
  // the CPU reference on the given operands (fp32, or rounded to bf16)
  auto reference = [&](const std::vector<float>& a, const std::vector<float>& b, std::vector<float>& Cc,
                       std::vector<float>& Pc) {
    Cc = C0, Pc = P0;
    cpu::MatmulDesc r = d;
    r.a = a.data(), r.b = b.data(), r.c = Cc.data();
    r.bias = c.bias ? bias.data() : nullptr;
    r.preact = c.preact ? Pc.data() : nullptr;
    cpu::matmul(ctx.pool(), r);
  };
  std::vector<float> Cc, Pc;
  reference(A, B, Cc, Pc);
  EXPECT_ERR(what + " C", sfcuda::rel_err(dense(Cg, "C"), dense(Cc, "C")), tol_of(p));
  if (c.preact) EXPECT_ERR(what + " preact", sfcuda::rel_err(dense(Pg, "preact"), dense(Pc, "preact")), tol_of(p));
  if (p == cuda::Precision::BF16) {
    std::vector<float> Cr, Pr;
    reference(Ar, Br, Cr, Pr);
    EXPECT_ERR(what + " C vs bf16 operands", sfcuda::rel_err(dense(Cg, "C"), dense(Cr, "C")), 1e-4);
    if (c.preact)
      EXPECT_ERR(what + " preact vs bf16 operands", sfcuda::rel_err(dense(Pg, "preact"), dense(Pr, "preact")), 1e-4);
  }
  if (!c.preact && !std::equal(Pg.begin(), Pg.end(), Pc.begin(), [](float x, float y) {
        return (std::isnan(x) && std::isnan(y)) || x == y;
      }))
    sfcheck::fail(__FILE__, __LINE__, what + ": preact written although null");
  if (!dA.guard_intact() || !dB.guard_intact() || !dC.guard_intact() || !dP.guard_intact() || !dbias.guard_intact() ||
      !dA16.guard_intact() || !dB16.guard_intact())
    sfcheck::fail(__FILE__, __LINE__, what + ": a guard zone was overwritten");
  return path;
}

TEST(gemm_odd_sizes_all_transposes) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(1);
  const int64_t shapes[][3] = {{77, 129, 65}, {1, 1, 1}, {128, 128, 32}, {300, 257, 515}, {5, 300, 17}, {129, 3, 200}};
  for (Mode p : kAll)
    for (const auto& s : shapes)
      for (int t = 0; t < 4; ++t)
        if (wanted(p, (t & 1) != 0, (t & 2) != 0, s[0] == 1))  // 1 x 1 x 1: the wgmma modes' fallback too
          run_case(Case{1, s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0}, p, rng, ctx, st);
}

TEST(gemm_batch_broadcast_and_strides) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(2);
  for (Mode p : kAll)
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      if (!wanted(p, ta, tb)) continue;
      Case c{3, 77, 129, 65, ta, tb};
      c.b_mode = 1;  // a weight shared by the batch
      c.a_mode = 2;
      run_case(c, p, rng, ctx, st);
      c.a_mode = 1;
      c.b_mode = 2;
      c.c_pad = 9;
      run_case(c, p, rng, ctx, st);
    }
}

TEST(gemm_alpha_beta_accumulate) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(3);
  for (Mode p : kAll)
    for (int t = 0; t < 4; ++t) {
      if (!wanted(p, (t & 1) != 0, (t & 2) != 0)) continue;
      Case c{2, 100, 70, 130, (t & 1) != 0, (t & 2) != 0};
      c.beta = 1.0f;  // gradient accumulation
      run_case(c, p, rng, ctx, st);
      c.alpha = 0.5f;
      c.beta = -0.75f;
      run_case(c, p, rng, ctx, st);
      c.alpha = 2.0f;
      c.beta = 0.0f;  // C poisoned with NaN: must be ignored
      run_case(c, p, rng, ctx, st);
    }
}

TEST(gemm_bias_gelu_preact) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(4);
  for (Mode p : kAll)
    for (int t = 0; t < 4; ++t) {
      if (!wanted(p, (t & 1) != 0, (t & 2) != 0)) continue;
      Case c{2, 77, 129, 65, (t & 1) != 0, (t & 2) != 0};
      c.bias = true;
      run_case(c, p, rng, ctx, st);
      c.gelu = true;
      c.preact = true;
      run_case(c, p, rng, ctx, st);
      c.preact = false;
      c.beta = 1.0f;
      c.alpha = 0.7f;
      run_case(c, p, rng, ctx, st);
    }
}

TEST(gemm_k_zero) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(5);
  for (Mode p : kAll) {
    Case c{2, 33, 7, 0, false, is_wgmma(p)};
    c.beta = 0.5f;
    c.bias = true;
    run_case(c, p, rng, ctx, st);
    c.beta = 0.0f;
    c.gelu = true;
    c.preact = true;
    run_case(c, p, rng, ctx, st);
  }
}

// The tensor-core paths must really round: bf16 products differ from fp32 ones (the test above could otherwise pass
// an fp32 kernel under every name), and tf32 differs from fp32 and is closer than bf16.
TEST(gemm_precisions_are_distinct) {
  sfcuda::TestStream st;
  std::mt19937 rng(6);
  const int64_t M = 64, N = 64, K = 256;
  std::vector<float> A = sfcuda::uniform(M * K, rng), B = sfcuda::uniform(K * N, rng);
  DeviceBuf<float> dA(A), dB(B);
  std::vector<float> out[3];
  for (int i = 0; i < 3; ++i) {
    DeviceBuf<float> dC(sfcuda::nans(M * N));
    cpu::MatmulDesc d;
    d.M = M, d.N = N, d.K = K, d.a = dA.get(), d.b = dB.get(), d.c = dC.get();
    d.a_stride = M * K, d.b_stride = K * N, d.c_stride = M * N;
    cuda::matmul(st.get(), d, prec_of(kAll[i]));
    st.sync();
    out[i] = dC.download();
  }
  const double e_tf32 = sfcuda::rel_err(out[1], out[0]), e_bf16 = sfcuda::rel_err(out[2], out[0]);
  std::printf("  tf32 vs f32 %.3g, bf16 vs f32 %.3g\n", e_tf32, e_bf16);
  CHECK(e_tf32 > 0.0);
  CHECK(e_bf16 > e_tf32);
}

// The pipelined bf16 kernel's own edges: sizes that are multiples of 8 (so that matmul_bf16 on aligned operands
// takes the cp.async path, with chunks wholly inside or outside) but not of the 128 x 128 tile, k tile counts below,
// at and above the pipeline depth (1, 3 = stages - 1, 4, 5, 9 k tiles of 32), K not a multiple of 32, and operands
// that are not 16-byte aligned (scalar loads), in every transpose combination; through Precision::BF16 the operands
// are converted with rows padded to 8, where K or M not a multiple of 8 gives chunks cut by the edge (src-size form).
TEST(gemm_bf16_pipeline_edges) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(8);
  const int64_t shapes[][3] = {{136, 264, 72}, {128, 128, 96}, {64, 200, 160}, {8, 8, 8},
                               {40, 48, 288},  {16, 24, 128},  {257, 9, 33}};
  for (Mode p : {Mode::BF16, Mode::BF16Operands, Mode::BF16Wgmma, Mode::BF16OperandsWgmma})
    for (const auto& s : shapes)
      for (int t = 0; t < 4; ++t) {
        if (!wanted(p, (t & 1) != 0, (t & 2) != 0)) continue;
        Case c{1, s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0};
        run_case(c, p, rng, ctx, st);
        if (is_operands(p) && (s[0] % 8 == 0)) {
          c.batch = 2;
          c.alpha = 0.5f;
          c.bias = true;
          run_case(c, p, rng, ctx, st, 1);  // A and B 2 bytes past a 16-byte boundary
          run_case(c, p, rng, ctx, st, 8);  // 16 bytes past: aligned again
        }
      }
  // a batch whose broadcast operand (stride 0) is aligned and whose other one is not
  Case c{3, 64, 72, 40, false, true};
  c.a_mode = 1;
  c.b_mode = 2;
  run_case(c, Mode::BF16Operands, rng, ctx, st);
  run_case(c, Mode::BF16OperandsWgmma, rng, ctx, st);
}

// GemmImpl::Wgmma must really run the wgmma kernel on a device of compute capability 9.0 (the lane's, an H100/H200):
// the build holds its sm_90a image. Elsewhere it falls back (the cases above then test the pipelined kernel).
TEST(gemm_wgmma_runs_on_compute_capability_9_0) {
  const CudaInfo info = cuda_probe();
  CHECK(!info.devices.empty());
  const bool hopper = info.devices[0].major == 9 && info.devices[0].minor == 0;
  std::printf("  device %d.%d: the wgmma kernel %s\n", info.devices[0].major, info.devices[0].minor,
              cuda::gemm_wgmma_usable() ? "runs" : "is not used (pipelined fallback)");
  if (hopper) CHECK(cuda::gemm_wgmma_usable());
}

// The Hopper kernel's TMA staging (gemm_wgmma_tma_kernel) and its fallback to cp.async staging (gemm_wgmma_kernel):
// in the lane, the operands that allow tensor maps (16-byte aligned base, leading dimension and batch stride
// multiples of 8 elements; a broadcast operand too) must run the TMA kernel — edges in M, N and K, K = 0, more k tiles
// than the ring has stages and batch entries sharing the ring's phases, beta, bias, GELU with preact — and the others,
// or a refused tensor map encoding, the cp.async kernel, both matching the CPU. On a GPU the same cases run unchecked
// for the path (the lane checks it).
TEST(gemm_wgmma_tma_staging_and_fallback) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(21);
  const bool lane = LaunchCount{}.since() != "?";
  auto expect = [&](const std::string& got, const char* want, const char* what) {
    if (lane && got != want) sfcheck::fail(__FILE__, __LINE__, cat(what, ": ran ", got, ", expected ", want));
  };
  const int64_t shapes[][3] = {{300, 257, 515}, {128, 128, 64}, {130, 136, 700}, {1, 8, 8}, {77, 129, 65}};
  for (const auto& s : shapes) {
    Case c{1, s[0], s[1], s[2], false, true};
    // operands given in bf16 have leading dimension K: a tensor map needs K a multiple of 8 (16 bytes)
    expect(run_case(c, Mode::BF16OperandsWgmma, rng, ctx, st), s[2] % 8 == 0 ? "tma" : "cp.async", "bf16 operands");
    expect(run_case(c, Mode::BF16Wgmma, rng, ctx, st), "tma", "operands converted with rows padded to 8");
    c.batch = 3, c.beta = 0.5f, c.bias = true, c.gelu = true, c.preact = true;
    expect(run_case(c, Mode::BF16Wgmma, rng, ctx, st), "tma", "batched, beta, bias, gelu, preact");
    if (s[2] % 8 == 0) {
      expect(run_case(c, Mode::BF16OperandsWgmma, rng, ctx, st, 1), "cp.async", "operands 2 bytes past 16");
      expect(run_case(c, Mode::BF16OperandsWgmma, rng, ctx, st, 8), "tma", "operands 16 bytes past 16");
    }
  }
  Case k0{2, 33, 7, 0, false, true};
  k0.beta = 0.5f, k0.bias = true;
  expect(run_case(k0, Mode::BF16OperandsWgmma, rng, ctx, st), "tma", "K = 0");
  Case bc{3, 64, 72, 200, false, true};
  bc.b_mode = 1;  // a weight shared by the batch: one batch entry in its tensor map
  expect(run_case(bc, Mode::BF16OperandsWgmma, rng, ctx, st), "tma", "broadcast B");
  bc.a_mode = 1, bc.b_mode = 0;
  expect(run_case(bc, Mode::BF16OperandsWgmma, rng, ctx, st), "tma", "broadcast A");
  bc.a_mode = 2;  // batch stride not a multiple of 8 elements
  expect(run_case(bc, Mode::BF16OperandsWgmma, rng, ctx, st), "cp.async", "padded batch stride");
#if defined(SF_CUDA_EMU)
  for (const char* fn : {"cuTensorMapEncodeTiled", "cudaGetDriverEntryPointByVersion"}) {
    sfemu::fail_next(fn, cudaErrorInvalidValue);  // the encoder (or its entry point) refuses: cp.async, same result
    expect(run_case(Case{1, 100, 136, 96, false, true}, Mode::BF16OperandsWgmma, rng, ctx, st), "cp.async", fn);
    CHECK(cudaGetLastError() == cudaSuccess);
  }
#endif
}

// cuda::matmul at BF16 with one operand (or both) given already in bf16 (a16 / b16: a current window of the bf16
// copy of the flat parameter buffer, in the operand's own layout): that operand is read where it is instead of being
// converted into scratch. The copy holds exactly the round-to-nearest-even bits the conversion computes, so the result
// must be the same bits as converting both operands from fp32 (and, with both given, as matmul_bf16): every transpose
// combination, odd sizes (operands not 16-byte aligned: scalar loads), a broadcast and a padded-stride operand, bias,
// GELU and preact, beta = 1.
TEST(gemm_bf16_operand_given_in_bf16_is_bit_identical) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(14);
  struct Shape3 {
    int64_t batch, M, N, K;
    int a_mode, b_mode;
  };
  const Shape3 shapes[] = {{1, 136, 264, 72, 0, 0}, {1, 37, 45, 29, 0, 0}, {2, 64, 72, 40, 0, 1},
                           {3, 33, 17, 50, 1, 2},  {2, 16, 24, 128, 2, 0}};
  int cases = 0;
  for (const Shape3& sh : shapes)
    for (int t = 0; t < 4; ++t) {
      const bool ta = (t & 1) != 0, tb = (t & 2) != 0;
      const int64_t a_elems = sh.M * sh.K, b_elems = sh.K * sh.N;
      const int64_t sa = sh.a_mode == 1 ? 0 : a_elems + (sh.a_mode == 2 ? 13 : 0);
      const int64_t sb = sh.b_mode == 1 ? 0 : b_elems + (sh.b_mode == 2 ? 5 : 0);
      const int64_t na = sh.a_mode == 1 ? a_elems : sa * sh.batch, nb = sh.b_mode == 1 ? b_elems : sb * sh.batch;
      const int64_t nc = sh.M * sh.N * sh.batch;
      std::vector<float> A = sfcuda::uniform(na, rng), B = sfcuda::uniform(nb, rng), bias = sfcuda::uniform(sh.N, rng);
      std::vector<float> C0 = sfcuda::uniform(nc, rng, -2.0f, 2.0f);
      std::vector<uint16_t> A16(A.size()), B16(B.size());
      for (size_t i = 0; i < A.size(); ++i) A16[i] = bf16_bits(A[i]);
      for (size_t i = 0; i < B.size(); ++i) B16[i] = bf16_bits(B[i]);
      DeviceBuf<float> dA(A), dB(B), dbias(bias);
      DeviceBuf<uint16_t> dA16(A16), dB16(B16);
      // 0: both converted; 1: A given; 2: B given; 3: both given; 4: matmul_bf16
      std::vector<float> C[5], P[5];
      for (int v = 0; v < 5; ++v) {
        DeviceBuf<float> dC(C0), dP(sfcuda::nans(nc));
        cpu::MatmulDesc d;
        d.batch = sh.batch, d.M = sh.M, d.N = sh.N, d.K = sh.K, d.trans_a = ta, d.trans_b = tb;
        d.a_stride = sa, d.b_stride = sb, d.c_stride = sh.M * sh.N, d.alpha = 0.75f, d.beta = 1.0f;
        d.act = cpu::Activation::Gelu;
        d.a = dA.get(), d.b = dB.get(), d.c = dC.get(), d.bias = dbias.get(), d.preact = dP.get();
        if (v == 4)
          cuda::matmul_bf16(st.get(), d, dA16.get(), dB16.get());
        else
          cuda::matmul(st.get(), d, cuda::Precision::BF16, cuda::GemmImpl::Pipelined, (v & 1) ? dA16.get() : nullptr,
                       (v & 2) ? dB16.get() : nullptr);
        st.sync();
        C[v] = dC.download(), P[v] = dP.download();
        if (!dC.guard_intact() || !dP.guard_intact()) sfcheck::fail(__FILE__, __LINE__, "a guard zone was overwritten");
      }
      for (int v = 1; v < 5; ++v) {
        const std::string what = cat("batch=", sh.batch, " M=", sh.M, " N=", sh.N, " K=", sh.K, ta ? " At" : "",
                                     tb ? " Bt" : "", " modes ", sh.a_mode, "/", sh.b_mode, " variant ", v);
        if (std::memcmp(C[v].data(), C[0].data(), C[0].size() * sizeof(float)) != 0 ||
            std::memcmp(P[v].data(), P[0].data(), P[0].size() * sizeof(float)) != 0)
          sfcheck::fail(__FILE__, __LINE__, what + ": not bit-identical to converting both operands from fp32");
      }
      if (!dA.guard_intact() || !dB.guard_intact() || !dA16.guard_intact() || !dB16.guard_intact())
        sfcheck::fail(__FILE__, __LINE__, "an operand's guard zone was overwritten");
      ++cases;
    }
  CHECK_EQ(cases, 20);
}

// bias_grad is two passes over (column tiles) x (row chunks) sized from the SM count: shapes with one chunk (few rows)
// and many (up to a few hundred for n = 1), column counts that leave a partial 32-column tile, and rows = 0 (adds
// nothing). Against a double-precision reference (and the CPU kernel where its own fp32 rounding stays well inside
// the tolerance); two runs must give the same bits.
TEST(bias_grad_matches_cpu_and_is_deterministic) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(7);
  std::vector<std::array<int64_t, 2>> shapes = {{0, 5}, {1, 1}, {1000, 77}, {33, 129}, {4097, 31}};
  for (int64_t rows : {1, 31, 1000, 70000})
    for (int64_t n : {1, 33, 768}) shapes.push_back({rows, n});
  for (const auto& s : shapes) {
    const int64_t rows = s[0], n = s[1];
    const std::string tag = cat("bias_grad rows=", rows, " n=", n);
    std::vector<float> dy = sfcuda::uniform(rows * n, rng), db0 = sfcuda::uniform(n, rng);
    DeviceBuf<float> ddy(dy), ddb(db0);
    cuda::bias_grad(st.get(), ddy.get(), rows, n, ddb.get());
    st.sync();
    std::vector<float> g1 = ddb.download();
    ddb.upload(db0);
    cuda::bias_grad(st.get(), ddy.get(), rows, n, ddb.get());
    st.sync();
    std::vector<float> g2 = ddb.download();
    std::vector<double> sum(static_cast<size_t>(n), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) sum[static_cast<size_t>(j)] += dy[static_cast<size_t>(r * n + j)];
    std::vector<float> want(static_cast<size_t>(n));
    for (size_t j = 0; j < want.size(); ++j) want[j] = static_cast<float>(static_cast<double>(db0[j]) + sum[j]);
    // max |got - ref| relative to max (|db0| + |column sum|): the size of what is rounded (a plain relative error of
    // the increment would blow up for a column whose sum happens to be near 0)
    double scale = 0;
    for (size_t j = 0; j < want.size(); ++j) scale = std::max(scale, std::fabs(db0[j]) + std::fabs(sum[j]));
    auto err = [&](const std::vector<float>& ref) {
      double e = 0;
      for (size_t j = 0; j < ref.size(); ++j) {
        const double d = std::fabs(static_cast<double>(g1[j]) - ref[j]);
        if (std::isnan(d)) return std::numeric_limits<double>::infinity();
        e = std::max(e, d);
      }
      return scale > 0 ? e / scale : e;
    };
    EXPECT_ERR(tag + " (double reference)", err(want), 1e-5);
    if (rows <= 4097) {
      std::vector<float> c = db0;
      cpu::bias_grad(ctx.pool(), dy.data(), rows, n, c.data());
      EXPECT_ERR(tag, err(c), 1e-5);
    }
    if (rows == 0) CHECK(g1 == db0);
    CHECK(g1.size() == g2.size() && std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0);
    CHECK(ddy.guard_intact() && ddb.guard_intact());
  }
}

}  // namespace

int main() {
  const CudaInfo info = cuda_probe();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.reason.c_str());
    return 77;
  }
  return sfcheck::run_all();
}
#endif
