// ops_attention.cpp — bindings for fused scaled-dot-product attention (kernels in native/cpu/attention.cpp).
//
//   attentionForward(q, k, v, {causal = false, scale = 1 / sqrt(D), keyLengths = null, precision = 'fp32'}) -> [o, lse]
//     q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D) with Hq % Hkv == 0 (grouped-query attention; Hkv = 1 is multi-query).
//     o (B, Hq, Tq, D) and lse (B, Hq, Tq) (the log-sum-exp of each query's scaled scores, for the backward) are new.
//     causal: query i sees keys j <= i + (Tk - Tq). keyLengths (B) int32: batch element b sees keys j < keyLengths[b]
//     (each in [0, Tk]; checked by the kernel, so an out-of-range value is reported when the stream is synchronised).
//     A query that sees no key gets o = 0 and lse = -Infinity.
//   attentionBackward(q, k, v, o, lse, dout, dq, dk, dv, {causal, scale, keyLengths}) -> undefined
//     dq (shape of q), dk, dv (shape of k) += the gradients of sum(o * dout); the options must be the forward's.
//   precision 'fp32' | 'tf32' | 'bf16' selects the CUDA kernel (tensor cores with operands rounded to tf32 / bf16,
//   fp32 accumulation, fp32 in memory); on the CPU every precision computes in fp32. All tensors (keyLengths too) are
//   on one device; on CUDA keyLengths is read by the kernel from device memory.
#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>

#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

#if SHAREDFORMER_WITH_CUDA
// The CPU kernel refuses key lengths outside [0, Tk]; the CUDA kernels would clamp them, so the CUDA path checks them
// first (in the stream task, before the kernel) and throws the CPU kernel's error.
void check_key_lengths_cuda(Backend& be, cuda::Stream s, const std::optional<Tensor>& kl, const cpu::AttentionDesc& d,
                            const char* what) {
  if (!kl) return;
  auto [at, len] = bad_id(be, s, *kl, d.B, static_cast<int32_t>(std::min<int64_t>(d.Tk + 1, INT32_MAX)), false, 0, what);
  if (at >= 0) range_error(what, ": key_lengths[", at, "] = ", len, " is outside [0, Tk = ", d.Tk, "]");
}
#endif

struct AttnOpts {
  cpu::AttentionDesc d;
  std::optional<Tensor> key_lengths;
  int precision = 0;  // cuda::Precision
};

// Checks q, k, v and the options; fills the descriptor (pointers are set when the kernel runs).
AttnOpts check_qkv(const OpArgs& args, const Tensor& q, const Tensor& k, const Tensor& v, size_t opt_index) {
  const char* op = args.op();
  Napi::Object o = args.options(opt_index);
  const bool causal = args.opt_bool(o, "causal", false);
  const bool has_scale = !o.Get("scale").IsUndefined();
  const double scale_in = has_scale ? args.opt_f32(o, "scale", 1.0f) : 1.0;
  std::optional<Tensor> kl = args.opt_tensor(o, "keyLengths");
  const std::string prec = args.opt_string(o, "precision", "fp32", {"fp32", "tf32", "bf16"});

  check_dtype(q, DType::f32, op, "q");
  check_dtype(k, DType::f32, op, "k");
  check_dtype(v, DType::f32, op, "v");
  args.same_device(q, "q");
  args.same_device(k, "k");
  args.same_device(v, "v");
  check_rank(q, 4, 4, op, "q");
  check_rank(k, 4, 4, op, "k");
  check_rank(v, 4, 4, op, "v");
  if (v.shape != k.shape)
    range_error(op, ": v must have the shape of k, got v ", shape_of(v), " and k ", shape_of(k));
  const int64_t B = q.shape[0], Hq = q.shape[1], Tq = q.shape[2], D = q.shape[3];
  const int64_t Hkv = k.shape[1], Tk = k.shape[2];
  if (k.shape[0] != B || k.shape[3] != D)
    range_error(op, ": q (B, Hq, Tq, D) and k (B, Hkv, Tk, D) must agree on B and D, got q ", shape_of(q), " and k ",
                shape_of(k));
  if (Hkv == 0 || Hq % Hkv != 0)
    range_error(op, ": the query heads Hq must be a multiple of the key/value heads Hkv (Hkv > 0), got q ",
                shape_of(q), " and k ", shape_of(k));
  if (Tk > std::numeric_limits<int32_t>::max() || Tq > std::numeric_limits<int32_t>::max())
    range_error(op, ": sequence lengths must be below 2^31, got q ", shape_of(q), " and k ", shape_of(k));
  const double scale = has_scale ? scale_in : (D > 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0);
  if (!(scale > 0.0) || !std::isfinite(static_cast<float>(scale)))
    range_error(op, ": option scale must be a finite number > 0, got ", scale);
  if (kl) {
    check_dtype(*kl, DType::i32, op, "option keyLengths");
    args.same_device(*kl, "option keyLengths");
    check_shape(*kl, {B}, op, "option keyLengths");
  }
  AttnOpts r;
  r.d.B = B;
  r.d.Hq = Hq;
  r.d.Hkv = Hkv;
  r.d.Tq = Tq;
  r.d.Tk = Tk;
  r.d.D = D;
  r.d.scale = static_cast<float>(scale);
  r.d.causal = causal;
  r.key_lengths = kl;
  r.precision = prec == "bf16" ? 2 : prec == "tf32" ? 1 : 0;
  return r;
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "attentionForward", 3);
    Tensor q = args.tensor(0, "q");
    Tensor k = args.tensor(1, "k");
    Tensor v = args.tensor(2, "v");
    AttnOpts a = check_qkv(args, q, k, v, 3);
    const cpu::AttentionDesc& d = a.d;
    Tensor o = args.output(q.shape, DType::f32, args.device());
    Tensor lse = args.output({d.B, d.Hq, d.Tq}, DType::f32, args.device());
    std::vector<Tensor> keep{q, k, v, o, lse};
    if (a.key_lengths) keep.push_back(*a.key_lengths);
    cpu::AttentionDesc desc = a.d;
    desc.key_lengths = a.key_lengths ? a.key_lengths->data<int32_t>() : nullptr;
    const int prec = a.precision;
    (void)prec;  // used by the CUDA kernel only
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), "attentionForward");
                 std::optional<Tensor> kl = a.key_lengths;)
    args.run(
        std::move(keep),
        [desc, q, k, v, o, lse](ThreadPool& pool) {
          cpu::attention_forward(pool, desc, q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                 lse.data<float>());
        },
        SF_CUDA([desc, q, k, v, o, lse, prec, be, kl](cuda::Stream s) {
          check_key_lengths_cuda(*be, s, kl, desc, "attention_forward");
          cuda::attention_forward(s, desc, q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                  lse.data<float>(), static_cast<cuda::Precision>(prec));
        }));
    Napi::Array out = Napi::Array::New(args.env(), 2);
    out.Set(uint32_t{0}, args.wrap(o));
    out.Set(uint32_t{1}, args.wrap(lse));
    return out;
  });
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "attentionBackward", 9);
    const char* op = args.op();
    Tensor q = args.tensor(0, "q");
    Tensor k = args.tensor(1, "k");
    Tensor v = args.tensor(2, "v");
    Tensor o = args.tensor(3, "o");
    Tensor lse = args.tensor(4, "lse");
    Tensor dout = args.tensor(5, "dout");
    Tensor dq = args.tensor(6, "dq");
    Tensor dk = args.tensor(7, "dk");
    Tensor dv = args.tensor(8, "dv");
    AttnOpts a = check_qkv(args, q, k, v, 9);
    const cpu::AttentionDesc& d = a.d;

    const NamedTensor qshaped[] = {{&o, "o"}, {&dout, "dout"}, {&dq, "dq"}};
    for (auto [t, name] : qshaped) {
      check_f32_dev(args, *t, name);
      check_shape(*t, q.shape, op, name);
    }
    check_f32_dev(args, lse, "lse");
    check_shape(lse, {d.B, d.Hq, d.Tq}, op, "lse");
    const NamedTensor kshaped[] = {{&dk, "dk"}, {&dv, "dv"}};
    for (auto [t, name] : kshaped) {
      check_f32_dev(args, *t, name);
      check_shape(*t, k.shape, op, name);
    }
    check_all_disjoint(op, {{&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}},
                       {{&q, "q"}, {&k, "k"}, {&v, "v"}, {&o, "o"}, {&lse, "lse"}, {&dout, "dout"},
                        {a.key_lengths ? &*a.key_lengths : nullptr, "option keyLengths"}});

    std::vector<Tensor> keep{q, k, v, o, lse, dout, dq, dk, dv};
    for (const Tensor* g : {&dq, &dk, &dv}) args.update(*g);  // gradients accumulate
    if (a.key_lengths) keep.push_back(*a.key_lengths);
    cpu::AttentionDesc desc = a.d;
    desc.key_lengths = a.key_lengths ? a.key_lengths->data<int32_t>() : nullptr;
    const int prec = a.precision;
    (void)prec;  // used by the CUDA kernel only
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);
                 std::optional<Tensor> kl = a.key_lengths;)
    args.run(
        std::move(keep),
        [desc, q, k, v, o, lse, dout, dq, dk, dv](ThreadPool& pool) {
          cpu::attention_backward(pool, desc, q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                  lse.data<float>(), dout.data<float>(), dq.data<float>(), dk.data<float>(),
                                  dv.data<float>());
        },
        SF_CUDA([desc, q, k, v, o, lse, dout, dq, dk, dv, prec, be, kl](cuda::Stream s) {
          check_key_lengths_cuda(*be, s, kl, desc, "attention_backward");
          cuda::attention_backward(s, desc, q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                   lse.data<float>(), dout.data<float>(), dq.data<float>(), dk.data<float>(),
                                   dv.data<float>(), static_cast<cuda::Precision>(prec));
        }));
    return args.env().Undefined();
  });
}

}  // namespace

void register_attention_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
}

}  // namespace sf::js
