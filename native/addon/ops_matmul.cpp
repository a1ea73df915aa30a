// ops_matmul.cpp — bindings for matmul and biasGrad (kernels in native/cpu/matmul.cpp).
//
//   matmul(a, b, out | null, {transA, transB, alpha, beta, bias, activation: 'none' | 'gelu', preact,
//          precision: 'fp32' | 'tf32' | 'bf16'}) -> out
//     a (..., M, K) or (..., K, M) with transA; b (..., K, N) or (..., N, K) with transB. Batch dimensions (all but
//     the last two) must match, or one operand is 2-D and is broadcast over the other's batch. out (..., M, N) is
//     allocated when null; beta != 0 needs an out to accumulate into. preact (same shape as out) receives the value
//     before GELU, for the backward pass.
//     precision (default 'fp32') selects the CUDA kernel: exact fp32, or tensor cores with operands rounded to tf32 /
//     bf16 and fp32 accumulation (inputs and outputs stay fp32). On the CPU every precision computes in fp32.
//     aBf16 / bBf16 (optional): a bfloat16 twin of a / b — the same shape, on the same device, sharing no memory with
//     out or preact — normally a window of the bf16 copy of the flat parameter buffer (written by adamw's bf16Copy).
//     On CUDA with precision 'bf16' (the pipelined kernel), the kernel reads the twin instead of converting that
//     operand, but only if the twin is current: decided in stream order, inside the op's task, by whether the twin's
//     storage still mirrors exactly this operand's bytes (Storage::mirrors: no write to either storage since the
//     adamw that wrote the copy). Otherwise the operand is converted from fp32 as without the twin. The result is the
//     same either way (the copy holds round-to-nearest-even of the fp32 values, what the conversion computes). On the
//     CPU, and with other precisions, the twin is not read (checked all the same).
//   bf16CopyCurrent(x, copy) -> int32 scalar: 1 when copy (bfloat16, x's shape, same device) is, at this point of the
//     stream, a current bf16 copy of x in the sense above (what matmul's aBf16 / bBf16 would use), else 0.
//   biasGrad(dy, dbias): dbias (N) += the sum of dy (..., N) over all leading dimensions.
// Every tensor of a call is on one device; the kernel runs there (native/cpu or cuda/).
#include "../cpu/kernels.h"
#include "../cpu/packed_weights.h"
#include "ops.h"

namespace sf::js {

namespace {

Shape batch_dims(const Tensor& t) { return Shape(t.shape.begin(), t.shape.end() - 2); }

// Whether t16 holds, as of now on the stream (call from inside a stream task), the bf16 rounding of x's current values:
// its storage mirrors x's bytes, element for element (Storage::mirrors).
bool current_twin(const Tensor& x, const Tensor& t16) {
  return t16.storage && x.storage && t16.storage->mirrors(*x.storage, x.byte_begin(), x.byte_end(), t16.byte_begin());
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "matmul", 2);
    const char* op = args.op();
    Tensor a = args.tensor(0, "a");
    Tensor b = args.tensor(1, "b");
    std::optional<Tensor> out = args.maybe_tensor(2, "out");
    Napi::Object o = args.options(3);
    const bool ta = args.opt_bool(o, "transA", false), tb = args.opt_bool(o, "transB", false);
    const float alpha = args.opt_f32(o, "alpha", 1.0f), beta = args.opt_f32(o, "beta", 0.0f);
    std::optional<Tensor> bias = args.opt_tensor(o, "bias");
    const std::string act = args.opt_string(o, "activation", "none", {"none", "gelu"});
    std::optional<Tensor> pre = args.opt_tensor(o, "preact");
    const std::string prec = args.opt_string(o, "precision", "fp32", {"fp32", "tf32", "bf16"});
    const int prec_i = prec == "bf16" ? 2 : prec == "tf32" ? 1 : 0;
    (void)prec_i;  // used by the CUDA kernel only
    std::optional<Tensor> a16 = args.opt_tensor(o, "aBf16");
    std::optional<Tensor> b16 = args.opt_tensor(o, "bBf16");

    check_dtype(a, DType::f32, op, "a");
    check_dtype(b, DType::f32, op, "b");
    args.same_device(a, "a");
    args.same_device(b, "b");
    check_rank(a, 2, kMaxRank, op, "a");
    check_rank(b, 2, kMaxRank, op, "b");
    const int64_t M = ta ? a.shape[a.rank() - 1] : a.shape[a.rank() - 2];
    const int64_t Ka = ta ? a.shape[a.rank() - 2] : a.shape[a.rank() - 1];
    const int64_t Kb = tb ? b.shape[b.rank() - 1] : b.shape[b.rank() - 2];
    const int64_t N = tb ? b.shape[b.rank() - 2] : b.shape[b.rank() - 1];
    if (Ka != Kb)
      range_error(op, ": inner dimensions differ: op(a) is ", M, " x ", Ka, " (a ", shape_of(a), ta ? ", transposed" : "",
                  ") but op(b) is ", Kb, " x ", N, " (b ", shape_of(b), tb ? ", transposed" : "", ")");
    Shape ba = batch_dims(a), bb = batch_dims(b), bo;
    if (ba == bb || bb.empty())
      bo = ba;
    else if (ba.empty())
      bo = bb;
    else
      range_error(op, ": batch dimensions differ: a ", shape_of(a), " vs b ", shape_of(b),
                  " (they must match, or one operand must be 2-D)");
    int64_t batch = 1;
    for (int64_t x : bo) batch *= x;
    Shape oshape = bo;
    oshape.push_back(M);
    oshape.push_back(N);
    checked_numel(oshape, op);

    if (bias) {
      check_dtype(*bias, DType::f32, op, "bias");
      args.same_device(*bias, "bias");
      check_shape(*bias, {N}, op, "bias");
    }
    if (pre && act != "gelu") type_error(op, ": option preact is only written with activation 'gelu'");
    if (beta != 0.0 && !out) range_error(op, ": beta = ", beta, " accumulates into out, but no out was given");
    Tensor c;
    if (out) {
      c = *out;
      check_dtype(c, DType::f32, op, "out");
      args.same_device(c, "out");
      check_shape(c, oshape, op, "out");
      check_all_disjoint(op, {{&c, "out"}}, {{&a, "a"}, {&b, "b"}, {bias ? &*bias : nullptr, "bias"}});
      if (beta != 0.0)
        args.update(c);  // out = alpha * a @ b + beta * out reads out
      else
        args.write(c);
    } else {
      c = args.output(oshape, DType::f32, args.device());
    }
    if (pre) {
      check_dtype(*pre, DType::f32, op, "preact");
      args.same_device(*pre, "preact");
      check_shape(*pre, oshape, op, "preact");
      check_all_disjoint(op, {{&*pre, "preact"}},
                         {{&c, "out"}, {&a, "a"}, {&b, "b"}, {bias ? &*bias : nullptr, "bias"}});
      args.write(*pre);
    }

    // The bf16 twins: read (kept alive and checked for failure like any input), never written.
    auto check_twin = [&](const std::optional<Tensor>& t16, const Tensor& x, const char* name, const char* xname) {
      if (!t16) return;
      if (t16->dtype != DType::bf16)
        type_error(op, ": option ", name, " must be a bfloat16 tensor (a bf16 copy of ", xname, "), got ",
                   dtype_name(t16->dtype));
      args.same_device(*t16, cat("option ", name).c_str());
      check_shape(*t16, x.shape, op, cat("option ", name).c_str());
      check_all_disjoint(op, {{&c, "out"}, {pre ? &*pre : nullptr, "preact"}},
                         {{&*t16, cat("option ", name).c_str()}});
    };
    check_twin(a16, a, "aBf16", "a");
    check_twin(b16, b, "bBf16", "b");

    cpu::MatmulDesc d = cpu::matmul_desc(M, N, Ka, ta, tb, a.data<float>(), b.data<float>(), c.data<float>());
    d.batch = batch;
    d.a_stride = ba.empty() ? 0 : a.shape[a.rank() - 1] * a.shape[a.rank() - 2];
    d.b_stride = bb.empty() ? 0 : b.shape[b.rank() - 1] * b.shape[b.rank() - 2];
    d.c_stride = M * N;
    d.alpha = static_cast<float>(alpha);
    d.beta = static_cast<float>(beta);
    d.act = act == "gelu" ? cpu::Activation::Gelu : cpu::Activation::None;
    if (d.b_stride == 0 && !ta && batch > 1) {  // (batch, M, K) @ W: one (batch * M, K) product
      d.M *= batch;
      d.batch = 1;
    }
    std::vector<Tensor> keep{a, b, c};
    if (bias) keep.push_back(*bias);
    if (pre) keep.push_back(*pre);
    if (a16) keep.push_back(*a16);
    if (b16) keep.push_back(*b16);
    d.bias = bias ? bias->data<float>() : nullptr;
    d.preact = pre ? pre->data<float>() : nullptr;
    SF_CUDA_ONLY(const cuda::GemmImpl impl = args.addon().ctx().backend(args.device(), op).gemm_impl();)
    args.run(
        std::move(keep),
        [d, b](ThreadPool& pool) {
          // in stream order: a packed copy of B kept from an earlier product at B's current values, if any
          cpu::MatmulDesc dp = d;
          std::shared_ptr<const void> hold;
          dp.b_packed = cpu::packed_weight(pool, b, d, hold);
          cpu::matmul(pool, dp);
        },
        SF_CUDA([d, prec_i, impl, a, b, a16, b16](cuda::Stream s) {
          // in stream order: is each twin still a copy of its operand's current values? (else converted from fp32)
          const bool bf = prec_i == 2 && impl != cuda::GemmImpl::Legacy;
          const uint16_t* pa = bf && a16 && current_twin(a, *a16) ? a16->data<uint16_t>() : nullptr;
          const uint16_t* pb = bf && b16 && current_twin(b, *b16) ? b16->data<uint16_t>() : nullptr;
          cuda::matmul(s, d, static_cast<cuda::Precision>(prec_i), impl, pa, pb);
        }));
    return out ? args.arg(2) : args.wrap(c);
  });
}

Napi::Value Bf16CopyCurrent(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "bf16CopyCurrent", 2);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    Tensor copy = args.tensor(1, "copy");
    check_dtype(x, DType::f32, op, "x");
    check_dtype(copy, DType::bf16, op, "copy");
    args.same_device(x, "x");
    args.same_device(copy, "copy");
    check_shape(copy, x.shape, op, "copy");
    Tensor r = args.output({}, DType::i32, args.device());
    Backend* be = &args.addon().ctx().backend(args.device(), op);
    args.run({x, copy, r}, SF_ON_DEVICE(be->fill(r, current_twin(x, copy) ? 1 : 0)));
    return args.wrap(r);
  });
}

Napi::Value BiasGrad(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "biasGrad", 2);
    const char* op = args.op();
    Tensor dy = args.tensor(0, "dy");
    Tensor db = args.tensor(1, "dbias");
    check_dtype(dy, DType::f32, op, "dy");
    check_dtype(db, DType::f32, op, "dbias");
    args.same_device(dy, "dy");
    args.same_device(db, "dbias");
    check_rank(dy, 1, kMaxRank, op, "dy");
    const int64_t n = dy.shape.back();
    check_shape(db, {n}, op, "dbias");
    check_disjoint(db, "dbias", dy, "dy", op);
    const int64_t rows = n ? dy.numel() / n : 0;
    args.update(db);
    args.run({dy, db}, SF_KERNEL(bias_grad, dy.data<float>(), rows, n, db.data<float>()));
    return args.arg(1);
  });
}

}  // namespace

void register_matmul_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  exports.Set("biasGrad", Napi::Function::New(env, BiasGrad, "biasGrad"));
  exports.Set("bf16CopyCurrent", Napi::Function::New(env, Bf16CopyCurrent, "bf16CopyCurrent"));
}

}  // namespace sf::js
