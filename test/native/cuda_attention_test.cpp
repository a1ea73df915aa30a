// cuda_attention_test.cpp — cuda::attention_forward/backward against cpu::attention_forward/backward on fresh random
// inputs: causal (Tq == Tk, Tq < Tk, Tq > Tk so that some queries see nothing), key_lengths padding (including 0 and
// Tk), GQA and MQA, D = 1, 16, 32, 64, 80 (padded to 128), 128, sequence lengths that are not multiples of any tile
// (and long enough to span several), every precision (F32, TF32 which maps to the fp32 kernels, BF16 on tensor
// cores; bf16 in both implementations, the tiled default and the legacy kernels). Outputs are poisoned
// with NaN first and followed by guard zones; lse must be -inf exactly where the CPU's is; the backward accumulates
// into non-zero gradients (the increments are compared) and is bitwise deterministic.
// Relative error (max |gpu - cpu| / max |cpu|): fp32 <= 1e-5, tf32 <= 1e-3, bf16 <= 1e-2; NaN never passes, except
// in the NaN-placement test, where NaN and Inf must be exactly where the CPU has them.
// The argument checks run everywhere; the GPU comparisons skip (exit 77) without CUDA or a GPU.
#include <cmath>
#include <cstdio>
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

struct Shape {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  std::vector<int32_t> lens;  // empty: no key_lengths
};

std::string describe(const Shape& s) {
  std::string l;
  for (int32_t x : s.lens) l += cat(l.empty() ? "" : ",", x);
  return cat("B=", s.B, " Hq=", s.Hq, " Hkv=", s.Hkv, " Tq=", s.Tq, " Tk=", s.Tk, " D=", s.D,
             s.causal ? " causal" : "", s.lens.empty() ? "" : " lens=" + l);
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> all = {
      {2, 4, 2, 33, 33, 64, true, {}},           // GQA, causal, one partial tile
      {1, 3, 1, 7, 129, 32, true, {}},           // MQA, Tq < Tk (decoding-like), causal aligned at the end
      {2, 2, 2, 77, 50, 80, false, {50, 17}},    // D padded to 128, Tq > Tk, padding
      {2, 4, 1, 100, 100, 128, true, {100, 0}},  // a batch element with no keys: o = 0, lse = -inf
      {1, 2, 2, 40, 20, 16, true, {}},           // Tq > Tk causal: the first 20 queries see nothing
      {1, 2, 1, 300, 300, 64, true, {}},         // several tiles of every kind
      {1, 1, 1, 5, 1, 1, false, {}},             // D = 1, one key
      {2, 2, 1, 65, 130, 128, false, {129, 64}}, // padding inside tiles
  };
  return all;
}

cpu::AttentionDesc desc_of(const Shape& s, const int32_t* lens) {
  cpu::AttentionDesc d;
  d.B = s.B, d.Hq = s.Hq, d.Hkv = s.Hkv, d.Tq = s.Tq, d.Tk = s.Tk, d.D = s.D, d.causal = s.causal;
  d.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.D)));
  d.key_lengths = s.lens.empty() ? nullptr : lens;
  return d;
}

struct Inputs {
  std::vector<float> q, k, v, dout;
};
Inputs random_inputs(const Shape& s, std::mt19937& rng) {
  Inputs in;
  in.q = sfcuda::uniform(s.B * s.Hq * s.Tq * s.D, rng);
  in.k = sfcuda::uniform(s.B * s.Hkv * s.Tk * s.D, rng);
  in.v = sfcuda::uniform(s.B * s.Hkv * s.Tk * s.D, rng);
  in.dout = sfcuda::uniform(s.B * s.Hq * s.Tq * s.D, rng);
  return in;
}

const cuda::Precision kAll[] = {cuda::Precision::F32, cuda::Precision::TF32, cuda::Precision::BF16};

// The precisions and, for bf16, both implementations (the tiled default and the legacy kernels).
struct Variant {
  cuda::Precision p;
  cuda::AttentionImpl impl;
  std::string name;
};
const std::vector<Variant>& variants() {
  static const std::vector<Variant> all = {
      {cuda::Precision::F32, cuda::AttentionImpl::Tiled, name_of(cuda::Precision::F32)},
      {cuda::Precision::TF32, cuda::AttentionImpl::Tiled, name_of(cuda::Precision::TF32)},
      {cuda::Precision::BF16, cuda::AttentionImpl::Tiled, name_of(cuda::Precision::BF16)},
      {cuda::Precision::BF16, cuda::AttentionImpl::Legacy, cat(name_of(cuda::Precision::BF16), " (legacy)")},
  };
  return all;
}

TEST(attention_forward_matches_cpu) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(11);
  for (const Shape& s : shapes()) {
    const Inputs in = random_inputs(s, rng);
    const int64_t no = s.B * s.Hq * s.Tq * s.D, nl = s.B * s.Hq * s.Tq;
    std::vector<float> o(static_cast<size_t>(no)), lse(static_cast<size_t>(nl));
    cpu::attention_forward(ctx.pool(), desc_of(s, s.lens.data()), in.q.data(), in.k.data(), in.v.data(), o.data(),
                           lse.data());
    DeviceBuf<float> dq(in.q), dk(in.k), dv(in.v);
    DeviceBuf<int32_t> dl(s.lens.empty() ? std::vector<int32_t>{0} : s.lens);
    for (const Variant& vr : variants()) {
      const cuda::Precision p = vr.p;
      DeviceBuf<float> dO(sfcuda::nans(no)), dL(sfcuda::nans(nl));
      cuda::attention_forward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(), p,
                              vr.impl);
      st.sync();
      const std::string what = cat(vr.name, " ", describe(s));
      EXPECT_ERR(what + " o", sfcuda::rel_err(dO.download(), o), tol_of(p));
      EXPECT_ERR(what + " lse", sfcuda::rel_err(dL.download(), lse), tol_of(p));
      if (!dO.guard_intact() || !dL.guard_intact() || !dq.guard_intact() || !dk.guard_intact() ||
          !dv.guard_intact() || !dl.guard_intact())
        sfcheck::fail(__FILE__, __LINE__, what + ": a guard zone was overwritten");
    }
  }
}

TEST(attention_forward_without_lse) {  // lse may be null (inference)
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(12);
  const Shape s{1, 2, 2, 19, 23, 64, true, {}};
  const Inputs in = random_inputs(s, rng);
  std::vector<float> o(in.q.size()), lse(static_cast<size_t>(s.B * s.Hq * s.Tq));
  cpu::attention_forward(ctx.pool(), desc_of(s, nullptr), in.q.data(), in.k.data(), in.v.data(), o.data(),
                         lse.data());
  DeviceBuf<float> dq(in.q), dk(in.k), dv(in.v);
  for (const Variant& vr : variants()) {
    DeviceBuf<float> dO(sfcuda::nans(static_cast<int64_t>(o.size())));
    cuda::attention_forward(st.get(), desc_of(s, nullptr), dq.get(), dk.get(), dv.get(), dO.get(), nullptr, vr.p,
                            vr.impl);
    st.sync();
    EXPECT_ERR(cat(vr.name, " no lse ", describe(s)), sfcuda::rel_err(dO.download(), o), tol_of(vr.p));
  }
}

TEST(attention_backward_matches_cpu) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(13);
  for (const Shape& s : shapes()) {
    const Inputs in = random_inputs(s, rng);
    const int64_t no = s.B * s.Hq * s.Tq * s.D, nl = s.B * s.Hq * s.Tq, nk = s.B * s.Hkv * s.Tk * s.D;
    const cpu::AttentionDesc hd = desc_of(s, s.lens.data());
    std::vector<float> o(static_cast<size_t>(no)), lse(static_cast<size_t>(nl));
    cpu::attention_forward(ctx.pool(), hd, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
    // non-zero initial gradients: the kernels accumulate
    const std::vector<float> gq0 = sfcuda::uniform(no, rng), gk0 = sfcuda::uniform(nk, rng),
                             gv0 = sfcuda::uniform(nk, rng);
    std::vector<float> gq = gq0, gk = gk0, gv = gv0;
    cpu::attention_backward(ctx.pool(), hd, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(),
                            in.dout.data(), gq.data(), gk.data(), gv.data());
    DeviceBuf<float> dq(in.q), dk(in.k), dv(in.v), dO(o), dL(lse), ddo(in.dout);
    DeviceBuf<int32_t> dl(s.lens.empty() ? std::vector<int32_t>{0} : s.lens);
    for (const Variant& vr : variants()) {
      const cuda::Precision p = vr.p;
      std::vector<float> first[3];
      for (int run = 0; run < 2; ++run) {
        DeviceBuf<float> gdq(gq0), gdk(gk0), gdv(gv0);
        cuda::attention_backward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(),
                                 ddo.get(), gdq.get(), gdk.get(), gdv.get(), p, vr.impl);
        st.sync();
        std::vector<float> r[3] = {gdq.download(), gdk.download(), gdv.download()};
        const std::string what = cat(vr.name, " ", describe(s));
        if (run == 0) {
          EXPECT_ERR(what + " dq", sfcuda::rel_err(r[0], gq, &gq0), tol_of(p));
          EXPECT_ERR(what + " dk", sfcuda::rel_err(r[1], gk, &gk0), tol_of(p));
          EXPECT_ERR(what + " dv", sfcuda::rel_err(r[2], gv, &gv0), tol_of(p));
          for (int i = 0; i < 3; ++i) first[i] = r[i];
        } else if (r[0] != first[0] || r[1] != first[1] || r[2] != first[2]) {
          sfcheck::fail(__FILE__, __LINE__, what + ": backward is not deterministic");
        }
        if (!gdq.guard_intact() || !gdk.guard_intact() || !gdv.guard_intact() || !dO.guard_intact() ||
            !dL.guard_intact() || !ddo.guard_intact())
          sfcheck::fail(__FILE__, __LINE__, what + ": a guard zone was overwritten");
      }
    }
  }
}

// NaN / Inf placement (issue 13): the CPU kernels put a non-finite output exactly where IEEE arithmetic over the
// visible (query, key) pairs does (nan_test checks them against a double reference); every precision of the CUDA
// kernels must put NaN and Inf in the same places, and agree within its tolerance elsewhere. Cases: a NaN key, a
// NaN query, a NaN / Inf in the last value row when causal (only the last query sees it), Inf and NaN in padded keys
// and values, a NaN in dout of query 0 (only the key it sees gets a NaN gradient).
namespace {

// Max |got - ref| / max |ref| over the elements both have finite; +inf when the NaN or Inf placement differs.
double placement_err(const std::vector<float>& got, const std::vector<float>& ref) {
  const double inf = std::numeric_limits<double>::infinity();
  if (got.size() != ref.size()) return inf;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float g = got[i], r = ref[i];
    if (std::isnan(g) != std::isnan(r) || std::isinf(g) != std::isinf(r) || (std::isinf(r) && g != r)) return inf;
    if (!std::isfinite(r)) continue;
    num = std::max(num, std::fabs(static_cast<double>(g) - r));
    den = std::max(den, std::fabs(static_cast<double>(r)));
  }
  return den > 0 ? num / den : num;
}

struct Poke {  // x[(bh * T + row) * D + col] = value in tensor t: 0 = q, 1 = k, 2 = v, 3 = dout
  int t;
  int64_t bh, row, col;
  float value;
};
struct NanCase {
  std::string name;
  Shape s;
  std::vector<Poke> pokes;
  bool backward;
};

}  // namespace

TEST(attention_nan_placement_matches_cpu) {
  Context ctx;
  sfcuda::TestStream st;
  std::mt19937 rng(15);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<NanCase> cases;
  auto add = [&](const char* name, const Shape& s, const std::vector<Poke>& pokes, bool backward) {
    cases.push_back(NanCase{name, s, pokes, backward});
  };
  const Shape causal80{1, 2, 1, 80, 80, 64, true, {}};
  add("key NaN causal", causal80, {{1, 0, 37, 5, nan}}, true);
  add("query NaN causal", causal80, {{0, 1, 10, 3, nan}}, true);
  add("query 0 NaN causal", Shape{1, 2, 1, 80, 80, 32, true, {}}, {{0, 0, 0, 3, nan}}, true);
  add("last value NaN causal", causal80, {{2, 0, 79, 3, nan}}, true);
  add("last key NaN causal", Shape{1, 2, 1, 130, 130, 64, true, {}}, {{1, 0, 129, 0, nan}}, true);
  add("last value Inf causal", Shape{1, 2, 1, 80, 80, 128, true, {}}, {{2, 0, 79, 3, inf}}, false);
  add("last value -Inf causal", Shape{1, 1, 1, 64, 64, 16, true, {}}, {{2, 0, 63, 0, -inf}}, false);
  add("dout NaN query 0", causal80, {{3, 0, 0, 2, nan}}, true);
  add("padding Inf/NaN", Shape{3, 2, 1, 70, 70, 64, false, {33, 70, 1}},
      {{2, 0, 40, 0, inf}, {2, 0, 69, 1, -inf}, {1, 0, 50, 2, inf}, {2, 2, 1, 0, nan}, {1, 2, 2, 0, nan}}, true);
  add("causal padding", Shape{2, 4, 2, 100, 100, 80, true, {60, 100}},
      {{2, 0, 70, 0, inf}, {1, 1, 65, 0, inf}, {2, 2, 99, 0, nan}, {1, 3, 98, 0, nan}, {3, 5, 3, 1, nan}}, true);
  for (const NanCase& c : cases) {
    const Shape& s = c.s;
    Inputs in = random_inputs(s, rng);
    for (const Poke& pk : c.pokes) {
      std::vector<float>& x = pk.t == 0 ? in.q : pk.t == 1 ? in.k : pk.t == 2 ? in.v : in.dout;
      const int64_t T = (pk.t == 1 || pk.t == 2) ? s.Tk : s.Tq;
      x[static_cast<size_t>((pk.bh * T + pk.row) * s.D + pk.col)] = pk.value;
    }
    const int64_t no = s.B * s.Hq * s.Tq * s.D, nl = s.B * s.Hq * s.Tq, nk = s.B * s.Hkv * s.Tk * s.D;
    const cpu::AttentionDesc hd = desc_of(s, s.lens.data());
    std::vector<float> o(static_cast<size_t>(no)), lse(static_cast<size_t>(nl));
    cpu::attention_forward(ctx.pool(), hd, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
    std::vector<float> gq(static_cast<size_t>(no), 0.0f), gk(static_cast<size_t>(nk), 0.0f), gv = gk;
    if (c.backward)
      cpu::attention_backward(ctx.pool(), hd, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(),
                              in.dout.data(), gq.data(), gk.data(), gv.data());
    DeviceBuf<float> dq(in.q), dk(in.k), dv(in.v), ddo(in.dout), dO(o), dL(lse);
    DeviceBuf<int32_t> dl(s.lens.empty() ? std::vector<int32_t>{0} : s.lens);
    for (cuda::Precision p : kAll) {
      const std::string what = cat(name_of(p), " ", c.name, " ", describe(s));
      DeviceBuf<float> fo(sfcuda::nans(no)), fl(sfcuda::nans(nl));
      cuda::attention_forward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), fo.get(), fl.get(), p,
                              cuda::AttentionImpl::Tiled);
      st.sync();
      EXPECT_ERR(what + " o", placement_err(fo.download(), o), tol_of(p));
      EXPECT_ERR(what + " lse", placement_err(fl.download(), lse), tol_of(p));
      if (p == cuda::Precision::BF16) {  // the legacy bf16 forward too
        DeviceBuf<float> lo(sfcuda::nans(no)), ll(sfcuda::nans(nl));
        cuda::attention_forward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), lo.get(), ll.get(), p,
                                cuda::AttentionImpl::Legacy);
        st.sync();
        EXPECT_ERR(what + " o (legacy)", placement_err(lo.download(), o), tol_of(p));
        EXPECT_ERR(what + " lse (legacy)", placement_err(ll.download(), lse), tol_of(p));
      }
      if (!c.backward) continue;
      const std::vector<float> zq(static_cast<size_t>(no), 0.0f), zk(static_cast<size_t>(nk), 0.0f);
      DeviceBuf<float> gdq(zq), gdk(zk), gdv(zk);
      // from the CPU's o and lse, so that the backward alone is compared
      cuda::attention_backward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(),
                               ddo.get(), gdq.get(), gdk.get(), gdv.get(), p, cuda::AttentionImpl::Tiled);
      st.sync();
      EXPECT_ERR(what + " dq", placement_err(gdq.download(), gq), tol_of(p));
      EXPECT_ERR(what + " dk", placement_err(gdk.download(), gk), tol_of(p));
      EXPECT_ERR(what + " dv", placement_err(gdv.download(), gv), tol_of(p));
      if (p == cuda::Precision::BF16) {  // the legacy bf16 dQ pass too
        DeviceBuf<float> ldq(zq), ldk(zk), ldv(zk);
        cuda::attention_backward(st.get(), desc_of(s, dl.get()), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(),
                                 ddo.get(), ldq.get(), ldk.get(), ldv.get(), p, cuda::AttentionImpl::Legacy);
        st.sync();
        EXPECT_ERR(what + " dq (legacy)", placement_err(ldq.download(), gq), tol_of(p));
        EXPECT_ERR(what + " dk (legacy)", placement_err(ldk.download(), gk), tol_of(p));
        EXPECT_ERR(what + " dv (legacy)", placement_err(ldv.download(), gv), tol_of(p));
      }
    }
  }
}

// The bf16 paths must really round (tensor cores): their results differ from the fp32 kernels' (else the tests
// above could pass an fp32 kernel under the bf16 name), while staying within the bf16 tolerance of them.
TEST(attention_bf16_differs_from_f32) {
  sfcuda::TestStream st;
  std::mt19937 rng(14);
  const Shape s{1, 2, 1, 70, 90, 64, true, {}};
  const Inputs in = random_inputs(s, rng);
  const int64_t no = s.B * s.Hq * s.Tq * s.D, nl = s.B * s.Hq * s.Tq, nk = s.B * s.Hkv * s.Tk * s.D;
  DeviceBuf<float> dq(in.q), dk(in.k), dv(in.v), ddo(in.dout);
  std::vector<float> out[2][4];
  const cuda::Precision ps[2] = {cuda::Precision::F32, cuda::Precision::BF16};
  for (int i = 0; i < 2; ++i) {
    DeviceBuf<float> dO(sfcuda::nans(no)), dL(sfcuda::nans(nl));
    cuda::attention_forward(st.get(), desc_of(s, nullptr), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(), ps[i]);
    DeviceBuf<float> gq(std::vector<float>(static_cast<size_t>(no), 0.0f)),
        gk(std::vector<float>(static_cast<size_t>(nk), 0.0f)), gv(std::vector<float>(static_cast<size_t>(nk), 0.0f));
    cuda::attention_backward(st.get(), desc_of(s, nullptr), dq.get(), dk.get(), dv.get(), dO.get(), dL.get(),
                             ddo.get(), gq.get(), gk.get(), gv.get(), ps[i]);
    st.sync();
    out[i][0] = dO.download();
    out[i][1] = gq.download();
    out[i][2] = gk.download();
    out[i][3] = gv.download();
  }
  const char* names[4] = {"o", "dq", "dk", "dv"};
  for (int t = 0; t < 4; ++t) {
    const double e = sfcuda::rel_err(out[1][t], out[0][t]);
    std::printf("  bf16 vs f32 %s: %.3g\n", names[t], e);
    CHECK(e > 0.0);
    CHECK(e <= 1e-2);
  }
}

// Bad descriptors throw (naming the op and the values) before any device work: run with or without a GPU.
void argument_checks() {
  cpu::AttentionDesc d;
  d.B = 1, d.Hq = 2, d.Hkv = 2, d.Tq = 4, d.Tk = 4, d.D = 129;
  CHECK_THROWS(cuda::attention_forward(nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr,
                                       cuda::Precision::F32),
               ErrorKind::Range);
  CHECK_THROWS(cuda::attention_backward(nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, nullptr, cuda::Precision::BF16),
               ErrorKind::Range);
  d.D = 64;
  d.Hkv = 3;
  CHECK_THROWS(cuda::attention_forward(nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr,
                                       cuda::Precision::BF16),
               ErrorKind::Range);
  d.Hkv = 0;
  CHECK_THROWS(cuda::attention_forward(nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr,
                                       cuda::Precision::F32),
               ErrorKind::Range);
  try {
    d.Hkv = 2;
    d.D = 200;
    cuda::attention_forward(nullptr, d, nullptr, nullptr, nullptr, nullptr, nullptr, cuda::Precision::F32);
  } catch (const Error& e) {
    const std::string m = e.what();
    if (m.find("attention_forward") == std::string::npos || m.find("200") == std::string::npos)
      sfcheck::fail(__FILE__, __LINE__, "message should name the op and D: " + m);
  }
}

}  // namespace

int main() {
  argument_checks();
  const int arg_failures = sfcheck::Registry::get().failures;
  std::printf("%s attention argument checks\n", arg_failures ? "not ok" : "ok");
  const CudaInfo info = cuda_probe();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.reason.c_str());
    return arg_failures ? 1 : 77;
  }
  const int rc = sfcheck::run_all();
  return arg_failures ? 1 : rc;
}
#endif
