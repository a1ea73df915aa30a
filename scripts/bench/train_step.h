// train_step.h — one training step of a pre-LN decoder LM composed from the kernel library, without Node: the GPU
// training step that gpu_bench times (scripts/bench/gpu_bench.cu, Ops = the CUDA kernels of cuda/kernels.h on one
// stream; its `train` rows run it in bf16 and tf32, only --dump-train runs it in fp32) and that train_step_cpu runs on
// the CPU kernels (scripts/bench/train_step_cpu.cpp, Ops = native/cpu), so that the composition itself can be checked
// against PyTorch on a machine without a GPU (scripts/gpu_torch_ref.py --train-check).
//
// The model is lib/models/decoder.ts's (scripts/gen_model_fixture.py is its exact re-implementation): token +
// position embedding; per layer h += Wo merge(attn(split(Wq ln1 h), split(Wk ln1 h), split(Wv ln1 h))) (causal),
// h += W2 gelu(W1 ln2 h + b1) + b2; final LayerNorm; head tied to the token embedding; mean cross-entropy. The
// parameters live in ONE buffer in the library's declaration order, their gradients in another, offset for offset;
// AdamW runs once over the whole buffer (decay on 2-D weights except tok/pos: the library's decay mask, as
// scripts/torch_train_ref.py). Sharing 'all' uses block 0 in every layer: its gradients sum L contributions because
// backward kernels accumulate (one beta = 1 dW product per use, as the library with stackedGrads off, its default).
//
// Against the library's step in `npm run bench -- train` (scripts/bench.ts benchTrain: zeroGrad, loss, backward,
// AdamW update; fp32, default options): the same GEMMs (shapes, transposes, bias / GELU epilogues; the same FLOPs),
// the same LayerNorm, attention, embedding, cross-entropy, bias-gradient and AdamW kernels, the same parameter
// layout and decay mask. NOT the same kernel sequence: the library makes more calls, all fills and elementwise passes.
// Where it differs from the library's step (cost per step for `small`: d 256, dFF 1024, 6 layers, N = B*T = 1024
// tokens, V 256; an (N, d) fp32 tensor is 1 MiB; sharing none and all alike):
// - Calls: the library queues 20 + 62 L kernels and fills per step (392 for small; addon calls traced), this 14 + 45 L
//   (284): +108 (+210 medium). Both zero the gradient buffer once, dpre before gelu_backward, dq/dk/dv before
//   attention_backward and the final LayerNorm's input gradient; the extra calls are the next four items.
// - Residual backward (lib/ops add, lib/autograd.ts Tape.accumulate): the library zero-fills a gradient per operand
//   and axpbys dout into each: 4 calls, 8 MiB per add, 13 adds (embedding sum included) = 52 calls, 104 MiB; here dh
//   passes through and the LayerNorm backward accumulates into it (no call).
// - First write of an activation gradient (lib/autograd.ts Tape.gradFor): the library zero-fills it, then the
//   producer accumulates (matmul beta = 1, permute accumulate); here the first writer overwrites (beta = 0). Per
//   layer: dx of fc2 (N x dFF: 4 MiB fill + 4 MiB read), fc1, wo, v (1 + 1 MiB each), the merge-heads backward and
//   the three split-heads backwards (1 + 1 MiB each); plus dx of the tied head: 49 calls, 134 MiB.
// - GELU pre-activation (lib/ops linear): the library zero-fills preact (N x dFF) that the fc1 epilogue then
//   overwrites: 6 calls, 24 MiB; here not filled.
// - dlogits (lib/ops crossEntropy): the library zero-fills a separate (N, V) buffer that the kernel overwrites: 1 call,
//   1 MiB (and 1 MiB more memory); here dlogits overwrite the logits in place.
// - Residual forward (lib/nn/layers.ts postResidual): the library's matmul writes the sub-layer output (beta = 0),
//   then axpby(h, out) makes a new tensor; here a copy of h, then the matmul with beta = 1: same calls (2) and bytes
//   (4 MiB).
// - Total: the library moves ~263 MiB more per small step (~1.0 GiB medium); the FLOPs are the same.
// - Order (lib/ops linear backward; reverse tape order): the library runs dW, db, then dx (here dx, dW, db); Q/K/V in
//   the order v, k, q, each split-backward before its linear (here three permutes, then q, k, v), so ln1's input
//   gradient sums v + k + q instead of q + k + v (fp32 rounding differs); zeroGrad before the forward pass (here
//   between forward and backward); pos embedding backward before tok.
// - Memory (lib/autograd.ts): the library allocates each activation gradient (~22 MiB per layer, ~137 MiB in all) and
//   frees them when the tape is released; here ~20 MiB of scratch is reused by every layer.
// - Persisting L2 (lib/models/stack.ts BlockStack.run): on CUDA with sharing 'all' the library sets an access-policy
//   window over block 0's parameters for the forward layers; here none (on the CPU, the bench's device, a no-op).
// - Layout (lib/params.ts PARAM_ALIGN): the library aligns every offset to 32 floats, here packed; every size of
//   these configs is a multiple of 32, so the offsets and the buffer length coincide (not for d % 32 != 0).
// - Initialisation (lib/params.ts): the library draws Philox normals (seed 1 in the bench, counter = packed offset),
//   here fill_normal(seed 1000 + offset) (a GPU kernel, mt19937_64 on the CPU); both std 0.02, LN weights 1, biases
//   0. Batch: the bench's ids (7919 i + 13) mod V, targets (104729 i + 7) mod V; here random (seeds 51, 52). The
//   losses differ, not the costs.
// - Device and precision: the bench builds the model on the CPU in fp32; gpu_bench's rows run on CUDA in bf16 / tf32
//   (the library's ops.withPrecision).
// - Host: the library pays N-API, validation, tape recording and per-op allocation (caching allocator), and the
//   bench waits for loss.data() and synchronize() every step; here buffers are made once and timed steps are queued
//   back to back (CUDA events).
//
// Ops must provide: a movable Buf type and Buf alloc(bytes); static float* f(const Buf&), int32_t* i(const Buf&);
// zero, copy, fill_normal, fill_const, fill_ids; the kernels (matmul, bias_grad, layernorm_forward/backward, permute,
// attention_forward/backward, gelu_backward, embedding_forward/backward, axpby, cross_entropy into a float*, adamw);
// double sum_squares(x, n) and float read(const float*) (both wait for the work before them).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/kernels.h"

namespace sfbench {

struct TrainCfg {
  std::string name;
  int64_t V, C, H, L, T, B;
  bool share_all;
};

// small: d=256, 4 heads, 6 layers, seq 128, batch 8; medium: d=512, 8 heads, 12 layers, seq 256, batch 4; vocab 256,
// dFF = 4d (scripts/bench.ts's `train` suite); each unshared and with one block shared by all layers.
inline std::vector<TrainCfg> train_configs() {
  return {{"small", 256, 256, 4, 6, 128, 8, false},
          {"small", 256, 256, 4, 6, 128, 8, true},
          {"medium", 256, 512, 8, 12, 256, 4, false},
          {"medium", 256, 512, 8, 12, 256, 4, true}};
}

template <class Ops>
class TrainStep {
 public:
  using Buf = typename Ops::Buf;
  struct Param {
    std::string name;
    std::vector<int64_t> shape;
    int64_t off, n;
    bool decay;
  };

  TrainStep(Ops& ops, const TrainCfg& c, float lr) : o_(ops), c_(c), N_(c.B * c.T), F_(4 * c.C), Dh_(c.C / c.H) {
    if (c.C % c.H) sf::error("TrainStep: dModel ", c.C, " is not a multiple of heads ", c.H);
    adam_.lr = lr;
    adam_.beta1 = 0.9f;
    adam_.beta2 = 0.99f;
    adam_.eps = 1e-8f;
    adam_.weight_decay = 0.1f;
    declare();
    const int64_t C = c.C, N = N_, F = F_;
    params_ = floats(P_);
    grads_ = floats(P_);
    m_ = floats(P_);
    v_ = floats(P_);
    decay_ = floats(P_);
    o_.zero(f(m_), P_);
    o_.zero(f(v_), P_);
    for (const Param& q : list_) {
      const bool ln_w = q.name.find(".ln.weight") != std::string::npos || q.name == "ln_f.weight";
      if (ln_w)
        o_.fill_const(f(params_) + q.off, q.n, 1.0f);
      else if (q.shape.size() == 1)
        o_.fill_const(f(params_) + q.off, q.n, 0.0f);
      else
        o_.fill_normal(f(params_) + q.off, q.n, 1000 + static_cast<uint64_t>(q.off), 0.02f);
      o_.fill_const(f(decay_) + q.off, q.n, q.decay ? 1.0f : 0.0f);
    }
    ids_ = o_.alloc(static_cast<size_t>(N) * 4);
    pos_ids_ = o_.alloc(static_cast<size_t>(N) * 4);
    targets_ = o_.alloc(static_cast<size_t>(N) * 4);
    o_.fill_ids(Ops::i(ids_), N, static_cast<int32_t>(c.V), 51);
    o_.fill_ids(Ops::i(targets_), N, static_cast<int32_t>(c.V), 52);
    o_.fill_ids(Ops::i(pos_ids_), N, static_cast<int32_t>(c.T), 0);  // seed 0: i % T, the position of token i
    for (int64_t l = 0; l <= c.L; ++l) hA_.push_back(floats(N * C));
    for (int64_t l = 0; l < c.L; ++l) {
      for (auto* v : {&hF_, &x1_, &x2_, &qh_, &kh_, &vh_, &o_act_, &om_}) v->push_back(floats(N * C));
      for (auto* v : {&mean1_, &rstd1_, &mean2_, &rstd2_}) v->push_back(floats(N));
      lse_.push_back(floats(c.B * c.H * c.T));
      pre_.push_back(floats(N * F));
      act_.push_back(floats(N * F));
    }
    for (Buf* b : {&xf_, &tmp_, &dh_, &dx_, &dom_, &dO_, &dq_, &dk_, &dv_, &dqm_, &dkm_, &dvm_}) *b = floats(N * C);
    meanf_ = floats(N);
    rstdf_ = floats(N);
    logits_ = floats(N * c.V);
    loss_ = floats(1);
    dact_ = floats(N * F);
    dpre_ = floats(N * F);
    ad_.B = c.B;
    ad_.Hq = c.H;
    ad_.Hkv = c.H;
    ad_.Tq = c.T;
    ad_.Tk = c.T;
    ad_.D = Dh_;
    ad_.scale = 1.0f / std::sqrt(static_cast<float>(Dh_));
    ad_.causal = true;
  }

  int64_t parameters() const { return P_; }
  int64_t tokens() const { return N_; }
  const std::vector<Param>& list() const { return list_; }
  float* params() const { return f(params_); }
  float* grads() const { return f(grads_); }
  const int32_t* ids() const { return Ops::i(ids_); }
  const int32_t* targets() const { return Ops::i(targets_); }
  // The loss of the last forward pass (waits for it).
  float loss() const { return o_.read(f(loss_)); }

  // Enqueues one step: forward, backward (gradients zeroed first), and AdamW unless update = false.
  void step(bool update = true) {
    forward();
    backward();
    if (update) {
      adam_.step = ++t_;
      o_.adamw(adam_, f(params_), f(grads_), f(m_), f(v_), f(decay_), P_);
    }
  }

 private:
  struct Ln {
    int64_t w, b;
  };
  struct Lin {
    int64_t w, b, out, in;
  };
  struct Block {
    Ln ln1, ln2;
    Lin wq, wk, wv, wo, fc1, fc2;
  };

  static float* f(const Buf& b) { return Ops::f(b); }
  Buf floats(int64_t n) { return o_.alloc(static_cast<size_t>(n) * sizeof(float)); }
  void add(const std::string& name, std::vector<int64_t> shape, bool decay) {
    int64_t n = 1;
    for (int64_t x : shape) n *= x;
    list_.push_back({name, std::move(shape), P_, n, decay});
    P_ += n;
  }
  int64_t off(const std::string& name) const {
    for (const Param& q : list_)
      if (q.name == name) return q.off;
    sf::error("TrainStep: no parameter ", name);
  }
  // The library's declaration order (gen_model_fixture.declare): tok, pos, attn.* of every block, ffn.*, ln_f.
  void declare() {
    const int64_t V = c_.V, C = c_.C, F = F_, U = c_.share_all ? 1 : c_.L;
    add("tok.weight", {V, C}, false);
    add("pos.weight", {c_.T, C}, false);
    auto ln = [&](const std::string& n) {
      add(n + ".weight", {C}, false);
      add(n + ".bias", {C}, false);
    };
    auto lin = [&](const std::string& n, int64_t in, int64_t out) {
      add(n + ".weight", {out, in}, true);
      add(n + ".bias", {out}, false);
    };
    for (int64_t u = 0; u < U; ++u) {
      const std::string p = "attn." + std::to_string(u);
      ln(p + ".ln");
      lin(p + ".wq", C, C);
      lin(p + ".wk", C, C);
      lin(p + ".wv", C, C);
      lin(p + ".wo", C, C);
    }
    for (int64_t u = 0; u < U; ++u) {
      const std::string p = "ffn." + std::to_string(u);
      ln(p + ".ln");
      lin(p + ".fc1", C, F);
      lin(p + ".fc2", F, C);
    }
    ln("ln_f");
    auto L = [&](const std::string& n, int64_t out, int64_t in) {
      return Lin{off(n + ".weight"), off(n + ".bias"), out, in};
    };
    for (int64_t u = 0; u < U; ++u) {
      const std::string a = "attn." + std::to_string(u), m = "ffn." + std::to_string(u);
      Block bl;
      bl.ln1 = {off(a + ".ln.weight"), off(a + ".ln.bias")};
      bl.wq = L(a + ".wq", C, C);
      bl.wk = L(a + ".wk", C, C);
      bl.wv = L(a + ".wv", C, C);
      bl.wo = L(a + ".wo", C, C);
      bl.ln2 = {off(m + ".ln.weight"), off(m + ".ln.bias")};
      bl.fc1 = L(m + ".fc1", F, C);
      bl.fc2 = L(m + ".fc2", C, F);
      blocks_.push_back(bl);
    }
    lnf_ = {off("ln_f.weight"), off("ln_f.bias")};
    tok_ = off("tok.weight");
    pos_ = off("pos.weight");
  }
  const Block& block(int64_t l) const { return blocks_[static_cast<size_t>(c_.share_all ? 0 : l)]; }
  float* P(int64_t off) const { return f(params_) + off; }
  float* G(int64_t off) const { return f(grads_) + off; }

  // out (N, l.out) = x (N, l.in) W^T + b [+ beta out] [then GELU, with the pre-activation saved in preact]
  void linear(const float* x, const Lin& l, float* out, float beta = 0.0f, float* preact = nullptr) {
    sf::cpu::MatmulDesc d;
    d.M = N_;
    d.N = l.out;
    d.K = l.in;
    d.trans_b = true;
    d.a = x;
    d.b = P(l.w);
    d.c = out;
    d.beta = beta;
    d.bias = P(l.b);
    if (preact) {
      d.act = sf::cpu::Activation::Gelu;
      d.preact = preact;
    }
    o_.matmul(d);
  }
  // The backward of linear: dx (= beta dx +) dy W; dW += dy^T x; db += the column sums of dy.
  void linear_backward(const float* dy, const float* x, const Lin& l, float* dx, float beta) {
    sf::cpu::MatmulDesc d;
    d.M = N_;
    d.N = l.in;
    d.K = l.out;
    d.a = dy;
    d.b = P(l.w);
    d.c = dx;
    d.beta = beta;
    o_.matmul(d);
    sf::cpu::MatmulDesc w;
    w.M = l.out;
    w.N = l.in;
    w.K = N_;
    w.trans_a = true;
    w.a = dy;
    w.b = x;
    w.c = G(l.w);
    w.beta = 1.0f;
    o_.matmul(w);
    o_.bias_grad(dy, N_, l.out, G(l.b));
  }

  void forward() {
    const int64_t C = c_.C, N = N_, B = c_.B, T = c_.T, H = c_.H, Dh = Dh_;
    o_.embedding_forward(Ops::i(ids_), N, P(tok_), c_.V, C, f(hA_[0]));
    o_.embedding_forward(Ops::i(pos_ids_), N, P(pos_), T, C, f(tmp_));
    o_.axpby(f(hA_[0]), 1.0f, f(tmp_), 1.0f, f(hA_[0]), N * C);
    for (int64_t l = 0; l < c_.L; ++l) {
      const Block& bl = block(l);
      const size_t i = static_cast<size_t>(l);
      o_.layernorm_forward(f(hA_[i]), P(bl.ln1.w), P(bl.ln1.b), f(x1_[i]), f(mean1_[i]), f(rstd1_[i]), N, C, 1e-5f);
      linear(f(x1_[i]), bl.wq, f(tmp_));
      o_.permute0213(f(tmp_), f(qh_[i]), B, T, H, Dh, false);  // split heads: (B, T, H, Dh) -> (B, H, T, Dh)
      linear(f(x1_[i]), bl.wk, f(tmp_));
      o_.permute0213(f(tmp_), f(kh_[i]), B, T, H, Dh, false);
      linear(f(x1_[i]), bl.wv, f(tmp_));
      o_.permute0213(f(tmp_), f(vh_[i]), B, T, H, Dh, false);
      o_.attention_forward(ad_, f(qh_[i]), f(kh_[i]), f(vh_[i]), f(o_act_[i]), f(lse_[i]));
      o_.permute0213(f(o_act_[i]), f(om_[i]), B, H, T, Dh, false);  // merge heads
      o_.copy(f(hF_[i]), f(hA_[i]), N * C);
      linear(f(om_[i]), bl.wo, f(hF_[i]), 1.0f);  // the residual add fused through beta = 1
      o_.layernorm_forward(f(hF_[i]), P(bl.ln2.w), P(bl.ln2.b), f(x2_[i]), f(mean2_[i]), f(rstd2_[i]), N, C, 1e-5f);
      linear(f(x2_[i]), bl.fc1, f(act_[i]), 0.0f, f(pre_[i]));
      o_.copy(f(hA_[i + 1]), f(hF_[i]), N * C);
      linear(f(act_[i]), bl.fc2, f(hA_[i + 1]), 1.0f);
    }
    const size_t last = static_cast<size_t>(c_.L);
    o_.layernorm_forward(f(hA_[last]), P(lnf_.w), P(lnf_.b), f(xf_), f(meanf_), f(rstdf_), N, C, 1e-5f);
    sf::cpu::MatmulDesc d;  // logits = xf tok^T (the tied head, no bias)
    d.M = N;
    d.N = c_.V;
    d.K = C;
    d.trans_b = true;
    d.a = f(xf_);
    d.b = P(tok_);
    d.c = f(logits_);
    o_.matmul(d);
    // the mean loss; dlogits written over the logits (the start of the backward pass)
    o_.cross_entropy(f(logits_), Ops::i(targets_), N, c_.V, -100, f(logits_), 1.0f, f(loss_));
  }

  void backward() {
    const int64_t C = c_.C, N = N_, B = c_.B, T = c_.T, H = c_.H, Dh = Dh_, V = c_.V;
    o_.zero(f(grads_), P_);
    o_.zero(f(dh_), N * C);
    sf::cpu::MatmulDesc d;  // dxf = dlogits tok
    d.M = N;
    d.N = C;
    d.K = V;
    d.a = f(logits_);
    d.b = P(tok_);
    d.c = f(dx_);
    o_.matmul(d);
    sf::cpu::MatmulDesc w;  // dtok += dlogits^T xf
    w.M = V;
    w.N = C;
    w.K = N;
    w.trans_a = true;
    w.a = f(logits_);
    w.b = f(xf_);
    w.c = G(tok_);
    w.beta = 1.0f;
    o_.matmul(w);
    const size_t last = static_cast<size_t>(c_.L);
    o_.layernorm_backward(f(dx_), f(hA_[last]), P(lnf_.w), f(meanf_), f(rstdf_), f(dh_), G(lnf_.w), G(lnf_.b), N, C);
    for (int64_t l = c_.L - 1; l >= 0; --l) {
      const Block& bl = block(l);
      const size_t i = static_cast<size_t>(l);
      // h_{l+1} = hF + fc2(gelu(fc1(ln2(hF)))): dh is the gradient of h_{l+1}, and becomes that of hF
      linear_backward(f(dh_), f(act_[i]), bl.fc2, f(dact_), 0.0f);
      o_.zero(f(dpre_), N * F_);
      o_.gelu_backward(f(pre_[i]), f(dact_), f(dpre_), N * F_);
      linear_backward(f(dpre_), f(x2_[i]), bl.fc1, f(dx_), 0.0f);
      o_.layernorm_backward(f(dx_), f(hF_[i]), P(bl.ln2.w), f(mean2_[i]), f(rstd2_[i]), f(dh_), G(bl.ln2.w), G(bl.ln2.b),
                            N, C);
      // hF = hA + wo(merge(attn(q, k, v))): dh becomes the gradient of hA
      linear_backward(f(dh_), f(om_[i]), bl.wo, f(dom_), 0.0f);
      o_.permute0213(f(dom_), f(dO_), B, T, H, Dh, false);
      o_.zero(f(dq_), N * C);
      o_.zero(f(dk_), N * C);
      o_.zero(f(dv_), N * C);
      o_.attention_backward(ad_, f(qh_[i]), f(kh_[i]), f(vh_[i]), f(o_act_[i]), f(lse_[i]), f(dO_), f(dq_), f(dk_), f(dv_));
      o_.permute0213(f(dq_), f(dqm_), B, H, T, Dh, false);
      o_.permute0213(f(dk_), f(dkm_), B, H, T, Dh, false);
      o_.permute0213(f(dv_), f(dvm_), B, H, T, Dh, false);
      linear_backward(f(dqm_), f(x1_[i]), bl.wq, f(dx_), 0.0f);
      linear_backward(f(dkm_), f(x1_[i]), bl.wk, f(dx_), 1.0f);
      linear_backward(f(dvm_), f(x1_[i]), bl.wv, f(dx_), 1.0f);
      o_.layernorm_backward(f(dx_), f(hA_[i]), P(bl.ln1.w), f(mean1_[i]), f(rstd1_[i]), f(dh_), G(bl.ln1.w), G(bl.ln1.b),
                            N, C);
    }
    o_.embedding_backward(Ops::i(ids_), N, f(dh_), V, C, G(tok_));
    o_.embedding_backward(Ops::i(pos_ids_), N, f(dh_), T, C, G(pos_));
  }

  Ops& o_;
  TrainCfg c_;
  int64_t N_, F_, Dh_;
  int64_t P_ = 0, t_ = 0;
  sf::cpu::AdamWDesc adam_;
  sf::cpu::AttentionDesc ad_;
  std::vector<Param> list_;
  std::vector<Block> blocks_;
  Ln lnf_{};
  int64_t tok_ = 0, pos_ = 0;
  Buf params_, grads_, m_, v_, decay_, ids_, pos_ids_, targets_;
  std::vector<Buf> hA_, hF_, x1_, x2_, mean1_, rstd1_, mean2_, rstd2_, qh_, kh_, vh_, o_act_, om_, lse_, pre_, act_;
  Buf xf_, meanf_, rstdf_, logits_, loss_, tmp_, dh_, dx_, dom_, dO_, dq_, dk_, dv_, dqm_, dkm_, dvm_, dact_, dpre_;
};

// The check data that scripts/gpu_torch_ref.py --train-check replays: DIR/train_check.bin (the initial parameters,
// the ids and the targets, little-endian float32 / int32) and DIR/train_check.json (the config, AdamW's settings, the
// losses of three steps, and per tensor: name, shape, offset, decay, the gradient norm of the first step).
// `fresh` makes a new TrainStep with the same seeds (the same initial parameters and batch).
template <class Ops, class Fresh>
std::vector<float> write_train_check(Ops& ops, const TrainCfg& c, float lr, const Fresh& fresh, const std::string& dir,
                                     const std::string& backend) {
  auto st = fresh();
  std::vector<float> init(static_cast<size_t>(st->parameters()));
  std::vector<int32_t> ids(static_cast<size_t>(st->tokens())), tg(static_cast<size_t>(st->tokens()));
  ops.to_host(init.data(), st->params(), init.size() * 4);
  ops.to_host(ids.data(), st->ids(), ids.size() * 4);
  ops.to_host(tg.data(), st->targets(), tg.size() * 4);
  st->step(false);  // forward + backward at the initial parameters, no update
  std::vector<double> gnorm;
  for (const auto& q : st->list()) gnorm.push_back(std::sqrt(ops.sum_squares(st->grads() + q.off, q.n)));
  const float loss0 = st->loss();
  auto st2 = fresh();  // three full steps from the same start
  std::vector<float> losses;
  for (int k = 0; k < 3; ++k) {
    st2->step();
    losses.push_back(st2->loss());
  }
  if (losses[0] != loss0)
    std::printf("  note: the first loss differs between two identical models (%.9g vs %.9g): not bit-reproducible\n",
                loss0, losses[0]);
  const std::string bin = dir + "/train_check.bin", js = dir + "/train_check.json";
  FILE* fp = std::fopen(bin.c_str(), "wb");
  if (!fp) sf::error("train check: cannot write ", bin);
  std::fwrite(init.data(), 4, init.size(), fp);
  std::fwrite(ids.data(), 4, ids.size(), fp);
  std::fwrite(tg.data(), 4, tg.size(), fp);
  std::fclose(fp);
  fp = std::fopen(js.c_str(), "w");
  if (!fp) sf::error("train check: cannot write ", js);
  std::fprintf(fp,
               "{\"backend\": \"%s\",\n \"config\": {\"vocab\": %lld, \"dModel\": %lld, \"heads\": %lld, \"layers\": %lld, "
               "\"seq\": %lld, \"batch\": %lld, \"dFF\": %lld, \"share\": \"%s\"},\n",
               backend.c_str(), (long long)c.V, (long long)c.C, (long long)c.H, (long long)c.L, (long long)c.T,
               (long long)c.B, (long long)(4 * c.C), c.share_all ? "all" : "none");
  std::fprintf(fp, " \"adamw\": {\"lr\": %.9g, \"betas\": [0.9, 0.99], \"eps\": 1e-8, \"weight_decay\": 0.1},\n", lr);
  std::fprintf(fp, " \"parameters\": %lld, \"tokens\": %lld,\n", (long long)st->parameters(), (long long)st->tokens());
  std::fprintf(fp, " \"losses\": [%.9g, %.9g, %.9g],\n \"params\": [\n", losses[0], losses[1], losses[2]);
  const auto& list = st->list();
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& q = list[i];
    std::fprintf(fp, "  {\"name\": \"%s\", \"shape\": [", q.name.c_str());
    for (size_t j = 0; j < q.shape.size(); ++j) std::fprintf(fp, "%s%lld", j ? ", " : "", (long long)q.shape[j]);
    std::fprintf(fp, "], \"offset\": %lld, \"decay\": %s, \"grad_norm\": %.10g}%s\n", (long long)q.off,
                 q.decay ? "true" : "false", gnorm[i], i + 1 < list.size() ? "," : "");
  }
  std::fprintf(fp, " ]\n}\n");
  std::fclose(fp);
  std::printf("  wrote %s and %s (%s, losses %.6f %.6f %.6f)\n", js.c_str(), bin.c_str(), backend.c_str(), losses[0],
              losses[1], losses[2]);
  return losses;
}

}  // namespace sfbench
