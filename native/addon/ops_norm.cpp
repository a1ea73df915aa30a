// ops_norm.cpp — bindings for layer norm, GELU (tanh and erf forms), tanh, softmax, axpby and dropout (kernels in
// native/cpu/layernorm.cpp, gelu.cpp, softmax.cpp and elementwise.cpp). Every tensor is float32, all on one device (CPU
// or CUDA); backward ops ACCUMULATE (+=).
//
//   layernormForward(x, w, b, {eps = 1e-5}) -> [y, mean, rstd]
//     x (..., C) with C >= 1, w and b (C); y has x's shape, mean and rstd have x.shape[:-1]. eps is finite and > 0.
//   layernormBackward(dy, x, w, mean, rstd, dx | null, dw | null, db | null) -> undefined
//     dy and dx (x's shape), dw and db (C): dx += ..., dw += ..., db += ... for the ones given. The gradients must not
//     share memory with the inputs or with each other.
//   geluForward(x, out | null) -> out                 out = gelu(x) (tanh form), out of x's shape, allocated when null
//   geluBackward(x, dy, dx) -> dx                      dx += gelu'(x) * dy
//   geluErfForward(x, out | null) -> out              out = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (exact form), as
//                                                      geluForward; +inf -> +inf, -inf -> NaN, NaN -> NaN (PyTorch's)
//   geluErfBackward(x, dy, dx) -> dx                   dx += (Phi(x) + x phi(x)) * dy
//   tanhForward(x, out | null) -> out                 out = tanh(x), as geluForward
//   tanhBackward(x, dy, dx) -> dx                      dx += (1 - tanh(x)^2) * dy
//   softmaxForward(x, out | null) -> out               softmax over the last dimension
//   softmaxBackward(y, dy, dx) -> dx                   dx += y * (dy - sum(y * dy)) over the last dimension
//   axpby(a, alpha, b, beta, out | null) -> out        out = alpha * a + beta * b; out may be a or b itself (exactly
//                                                      the same elements), but must not partly overlap either
//   dropoutForward(x, out | null, {p, seed, offset = 0}) -> out
//   dropoutBackward(dy, dx, {p, seed, offset = 0}) -> dx      dx += mask * dy / (1 - p), the mask regenerated
//     p in [0, 1) and seed are required; seed and offset are non-negative integers or bigints. Element i of the
//     tensor uses Philox counter offset + i of the dropout stream (native/cpu/dropout.h), identical on every device.
// Outputs of forward ops must not share memory with their inputs (except axpby's exact alias).
#include <cmath>
#include <functional>
#include <utility>

#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

Shape leading(const Shape& s) { return Shape(s.begin(), s.end() - 1); }

// Rows and last dimension of a tensor of rank >= 1 (rows = 0 when the last dimension is 0).
void rows_cols(const Tensor& t, int64_t* rows, int64_t* cols) {
  *cols = t.shape.back();
  *rows = *cols ? t.numel() / *cols : 0;
}

// An optional output: checked (float32, the call's device, `shape`, disjoint from `inputs`) when given, allocated when null.
Tensor output_or_new(const OpArgs& args, const std::optional<Tensor>& out, const Shape& shape, const Tensor& like,
                     std::initializer_list<NamedTensor> inputs) {
  const char* op = args.op();
  if (!out) return args.output(shape, DType::f32, like.device());
  check_f32_dev(args, *out, "out");
  check_shape(*out, shape, op, "out");
  check_all_disjoint(op, {{&*out, "out"}}, inputs);
  args.write(*out);
  return *out;
}

// The dropout options: p in [0, 1) (also after rounding to float32), seed (required), offset.
struct DropoutOpts {
  float p;
  uint64_t seed, offset;
};
DropoutOpts dropout_opts(const OpArgs& args, const Napi::Object& o) {
  const char* op = args.op();
  if (o.Get("p").IsUndefined()) type_error(op, ": option p (the drop probability, in [0, 1)) is required");
  const double p = args.opt_number(o, "p", 0.0);
  if (!(p >= 0.0 && p < 1.0) || !(static_cast<float>(p) < 1.0f))
    range_error(op, ": option p must be in [0, 1), got ", p);
  if (o.Get("seed").IsUndefined()) type_error(op, ": option seed is required (the same seed replays the mask)");
  const uint64_t seed = args.opt_u64(o, "seed", 0);
  const uint64_t offset = args.opt_u64(o, "offset", 0);
  return {static_cast<float>(p), seed, offset};
}

// ---- layer norm ---------------------------------------------------------------------------------------------------

Napi::Value LayernormForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "layernormForward", 3);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    Tensor w = args.tensor(1, "w");
    Tensor b = args.tensor(2, "b");
    Napi::Object o = args.options(3);
    const float eps = args.opt_f32(o, "eps", 1e-5f);
    if (!(eps > 0)) range_error(op, ": option eps must be > 0, got ", eps);
    check_f32_dev(args, x, "x");
    check_f32_dev(args, w, "w");
    check_f32_dev(args, b, "b");
    check_rank(x, 1, kMaxRank, op, "x");
    int64_t rows, C;
    rows_cols(x, &rows, &C);
    if (C < 1) range_error(op, ": x must have a last dimension (C) of at least 1, got shape ", shape_of(x));
    check_shape(w, {C}, op, "w");
    check_shape(b, {C}, op, "b");
    Tensor y = args.output(x.shape, DType::f32, x.device());
    Tensor mean = args.output(leading(x.shape), DType::f32, x.device());
    Tensor rstd = args.output(leading(x.shape), DType::f32, x.device());
    args.run({x, w, b, y, mean, rstd},
             SF_KERNEL(layernorm_forward, x.data<float>(), w.data<float>(), b.data<float>(), y.data<float>(),
                       mean.data<float>(), rstd.data<float>(), rows, C, eps));
    Napi::Array result = Napi::Array::New(info.Env(), 3);
    result.Set(0u, args.wrap(y));
    result.Set(1u, args.wrap(mean));
    result.Set(2u, args.wrap(rstd));
    return result;
  });
}

Napi::Value LayernormBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "layernormBackward", 5);
    const char* op = args.op();
    Tensor dy = args.tensor(0, "dy");
    Tensor x = args.tensor(1, "x");
    Tensor w = args.tensor(2, "w");
    Tensor mean = args.tensor(3, "mean");
    Tensor rstd = args.tensor(4, "rstd");
    std::optional<Tensor> dx = args.maybe_tensor(5, "dx");
    std::optional<Tensor> dw = args.maybe_tensor(6, "dw");
    std::optional<Tensor> db = args.maybe_tensor(7, "db");
    check_f32_dev(args, x, "x");
    check_rank(x, 1, kMaxRank, op, "x");
    int64_t rows, C;
    rows_cols(x, &rows, &C);
    if (C < 1) range_error(op, ": x must have a last dimension (C) of at least 1, got shape ", shape_of(x));
    check_f32_dev(args, dy, "dy");
    check_f32_dev(args, w, "w");
    check_f32_dev(args, mean, "mean");
    check_f32_dev(args, rstd, "rstd");
    check_shape(dy, x.shape, op, "dy");
    check_shape(w, {C}, op, "w");
    check_shape(mean, leading(x.shape), op, "mean");
    check_shape(rstd, leading(x.shape), op, "rstd");
    if (dx) {
      check_f32_dev(args, *dx, "dx");
      check_shape(*dx, x.shape, op, "dx");
    }
    if (dw) {
      check_f32_dev(args, *dw, "dw");
      check_shape(*dw, {C}, op, "dw");
    }
    if (db) {
      check_f32_dev(args, *db, "db");
      check_shape(*db, {C}, op, "db");
    }
    check_all_disjoint(op, {{dx ? &*dx : nullptr, "dx"}, {dw ? &*dw : nullptr, "dw"}, {db ? &*db : nullptr, "db"}},
                       {{&dy, "dy"}, {&x, "x"}, {&w, "w"}, {&mean, "mean"}, {&rstd, "rstd"}});
    std::vector<Tensor> keep{dy, x, w, mean, rstd};
    for (const std::optional<Tensor>* g : {&dx, &dw, &db})
      if (*g) {
        keep.push_back(**g);
        args.update(**g);
      }
    args.run(std::move(keep), SF_KERNEL(layernorm_backward, dy.data<float>(), x.data<float>(), w.data<float>(),
                                        mean.data<float>(), rstd.data<float>(), dx ? dx->data<float>() : nullptr,
                                        dw ? dw->data<float>() : nullptr, db ? db->data<float>() : nullptr, rows, C));
    return info.Env().Undefined();
  });
}

// ---- GELU (both forms) and tanh: elementwise activations ----------------------------------------------------------
// One binding body for each direction; the kernels (CPU and CUDA) come from the caller's SF_KERNEL.

using Launches = std::pair<std::function<void(ThreadPool&)>, std::function<void(cuda::Stream)>>;

// name(x, out | null) -> out: y = f(x), out of x's shape, allocated when null
template <typename Make>
Napi::Value activation_forward(const Napi::CallbackInfo& info, const char* name, Make make) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, name, 1);
    Tensor x = args.tensor(0, "x");
    std::optional<Tensor> out = args.maybe_tensor(1, "out");
    check_f32_dev(args, x, "x");
    Tensor y = output_or_new(args, out, x.shape, x, {{&x, "x"}});
    Launches l = make(x.data<float>(), y.data<float>(), x.numel());
    args.run({x, y}, std::move(l.first), std::move(l.second));
    return out ? args.arg(1) : args.wrap(y);
  });
}

// name(x, dy, dx) -> dx: dx += f'(x) dy
template <typename Make>
Napi::Value activation_backward(const Napi::CallbackInfo& info, const char* name, Make make) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, name, 3);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    Tensor dy = args.tensor(1, "dy");
    Tensor dx = args.tensor(2, "dx");
    check_f32_dev(args, x, "x");
    check_f32_dev(args, dy, "dy");
    check_f32_dev(args, dx, "dx");
    check_shape(dy, x.shape, op, "dy");
    check_shape(dx, x.shape, op, "dx");
    check_all_disjoint(op, {{&dx, "dx"}}, {{&x, "x"}, {&dy, "dy"}});
    args.update(dx);
    Launches l = make(x.data<float>(), dy.data<float>(), dx.data<float>(), x.numel());
    args.run({x, dy, dx}, std::move(l.first), std::move(l.second));
    return args.arg(2);
  });
}

Napi::Value GeluForward(const Napi::CallbackInfo& info) {
  return activation_forward(info, "geluForward", [](const float* x, float* y, int64_t n) { return Launches{SF_KERNEL(gelu_forward, x, y, n)}; });
}
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  return activation_backward(info, "geluBackward", [](const float* x, const float* dy, float* dx, int64_t n) {
    return Launches{SF_KERNEL(gelu_backward, x, dy, dx, n)};
  });
}
Napi::Value GeluErfForward(const Napi::CallbackInfo& info) {
  return activation_forward(info, "geluErfForward", [](const float* x, float* y, int64_t n) { return Launches{SF_KERNEL(gelu_erf_forward, x, y, n)}; });
}
Napi::Value GeluErfBackward(const Napi::CallbackInfo& info) {
  return activation_backward(info, "geluErfBackward", [](const float* x, const float* dy, float* dx, int64_t n) {
    return Launches{SF_KERNEL(gelu_erf_backward, x, dy, dx, n)};
  });
}
Napi::Value TanhForward(const Napi::CallbackInfo& info) {
  return activation_forward(info, "tanhForward", [](const float* x, float* y, int64_t n) { return Launches{SF_KERNEL(tanh_forward, x, y, n)}; });
}
Napi::Value TanhBackward(const Napi::CallbackInfo& info) {
  return activation_backward(info, "tanhBackward", [](const float* x, const float* dy, float* dx, int64_t n) {
    return Launches{SF_KERNEL(tanh_backward, x, dy, dx, n)};
  });
}

// ---- softmax ------------------------------------------------------------------------------------------------------

Napi::Value SoftmaxForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "softmaxForward", 1);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    std::optional<Tensor> out = args.maybe_tensor(1, "out");
    check_f32_dev(args, x, "x");
    check_rank(x, 1, kMaxRank, op, "x");
    Tensor y = output_or_new(args, out, x.shape, x, {{&x, "x"}});
    int64_t rows, n;
    rows_cols(x, &rows, &n);
    args.run({x, y}, SF_KERNEL(softmax_forward, x.data<float>(), y.data<float>(), rows, n));
    return out ? args.arg(1) : args.wrap(y);
  });
}

Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "softmaxBackward", 3);
    const char* op = args.op();
    Tensor y = args.tensor(0, "y");
    Tensor dy = args.tensor(1, "dy");
    Tensor dx = args.tensor(2, "dx");
    check_f32_dev(args, y, "y");
    check_f32_dev(args, dy, "dy");
    check_f32_dev(args, dx, "dx");
    check_rank(y, 1, kMaxRank, op, "y");
    check_shape(dy, y.shape, op, "dy");
    check_shape(dx, y.shape, op, "dx");
    check_all_disjoint(op, {{&dx, "dx"}}, {{&y, "y"}, {&dy, "dy"}});
    int64_t rows, n;
    rows_cols(y, &rows, &n);
    args.update(dx);
    args.run({y, dy, dx}, SF_KERNEL(softmax_backward, y.data<float>(), dy.data<float>(), dx.data<float>(), rows, n));
    return args.arg(2);
  });
}

// ---- axpby --------------------------------------------------------------------------------------------------------

Napi::Value Axpby(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "axpby", 4);
    const char* op = args.op();
    Tensor a = args.tensor(0, "a");
    const float fa = get_f32(args[1], op, "alpha");
    Tensor b = args.tensor(2, "b");
    const float fb = get_f32(args[3], op, "beta");
    std::optional<Tensor> out = args.maybe_tensor(4, "out");
    check_f32_dev(args, a, "a");
    check_f32_dev(args, b, "b");
    if (a.shape != b.shape)
      range_error(op, ": a and b must have the same shape, got ", shape_of(a), " and ", shape_of(b));
    Tensor o;
    if (out) {
      o = *out;
      check_f32_dev(args, o, "out");
      check_shape(o, a.shape, op, "out");
      // out may be a or b itself (the same elements: an in-place update), but not a partly overlapping window
      for (auto& [t, name] : {std::pair<const Tensor*, const char*>{&a, "a"}, {&b, "b"}}) {
        const bool same = o.storage == t->storage && o.offset == t->offset;
        if (!same && overlaps(o, *t))
          range_error(op, ": out partly overlaps ", name, " (it must be ", name,
                      " itself, for an in-place update, or not share memory with it)");
      }
      args.write(o);
    } else {
      o = args.output(a.shape, DType::f32, a.device());
    }
    const int64_t n = a.numel();
    args.run({a, b, o}, SF_KERNEL(axpby, a.data<float>(), fa, b.data<float>(), fb, o.data<float>(), n));
    return out ? args.arg(4) : args.wrap(o);
  });
}

// ---- dropout ------------------------------------------------------------------------------------------------------

Napi::Value DropoutForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "dropoutForward", 3);
    Tensor x = args.tensor(0, "x");
    std::optional<Tensor> out = args.maybe_tensor(1, "out");
    const DropoutOpts d = dropout_opts(args, args.options(2));
    check_f32_dev(args, x, "x");
    Tensor y = output_or_new(args, out, x.shape, x, {{&x, "x"}});
    const int64_t n = x.numel();
    args.run({x, y}, SF_KERNEL(dropout_forward, x.data<float>(), y.data<float>(), n, d.p, d.seed, d.offset));
    return out ? args.arg(1) : args.wrap(y);
  });
}

Napi::Value DropoutBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "dropoutBackward", 3);
    const char* op = args.op();
    Tensor dy = args.tensor(0, "dy");
    Tensor dx = args.tensor(1, "dx");
    const DropoutOpts d = dropout_opts(args, args.options(2));
    check_f32_dev(args, dy, "dy");
    check_f32_dev(args, dx, "dx");
    check_shape(dx, dy.shape, op, "dx");
    check_disjoint(dx, "dx", dy, "dy", op);
    const int64_t n = dy.numel();
    args.update(dx);
    args.run({dy, dx}, SF_KERNEL(dropout_backward, dy.data<float>(), dx.data<float>(), n, d.p, d.seed, d.offset));
    return args.arg(1);
  });
}

}  // namespace

void register_norm_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("layernormForward", Napi::Function::New(env, LayernormForward, "layernormForward"));
  exports.Set("layernormBackward", Napi::Function::New(env, LayernormBackward, "layernormBackward"));
  exports.Set("geluForward", Napi::Function::New(env, GeluForward, "geluForward"));
  exports.Set("geluBackward", Napi::Function::New(env, GeluBackward, "geluBackward"));
  exports.Set("geluErfForward", Napi::Function::New(env, GeluErfForward, "geluErfForward"));
  exports.Set("geluErfBackward", Napi::Function::New(env, GeluErfBackward, "geluErfBackward"));
  exports.Set("tanhForward", Napi::Function::New(env, TanhForward, "tanhForward"));
  exports.Set("tanhBackward", Napi::Function::New(env, TanhBackward, "tanhBackward"));
  exports.Set("softmaxForward", Napi::Function::New(env, SoftmaxForward, "softmaxForward"));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward, "softmaxBackward"));
  exports.Set("axpby", Napi::Function::New(env, Axpby, "axpby"));
  exports.Set("dropoutForward", Napi::Function::New(env, DropoutForward, "dropoutForward"));
  exports.Set("dropoutBackward", Napi::Function::New(env, DropoutBackward, "dropoutBackward"));
}

}  // namespace sf::js
