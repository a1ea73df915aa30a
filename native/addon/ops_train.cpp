// ops_train.cpp — bindings for the training kernels: embedding, cross-entropy and the optimizer steps (kernels in
// native/cpu/embedding.cpp, cross_entropy.cpp and optim.cpp).
//
//   embeddingForward(ids, table, out | null) -> out
//     ids int32 (...) of rank >= 1, table float32 (V, C); out (..., C) = table[ids], allocated when null.
//   embeddingBackward(ids, dout, dtable) -> dtable      dtable (V, C) += scatter of dout (..., C) by ids
//   crossEntropy(logits, targets, {ignoreIndex = -100, gradScale = 1, dlogits = null}) -> loss
//     logits float32 (..., V), targets int32 (...); loss is a float32 scalar (shape []): the mean over rows whose
//     target is not ignoreIndex (0 when none). dlogits (logits' shape) is WRITTEN with the gradient of
//     gradScale * loss; it may be the logits tensor itself (in place), but must not partly overlap it.
//   adamw(param, grad, m, v, {lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0.01, step, decayMask,
//         bf16Copy})
//     -> undefined; param, m and v are updated in place. lr and step (an integer >= 1) are required. bf16Copy (a
//     bfloat16 tensor of param's shape on its device, sharing no memory with the others) is WRITTEN with the updated
//     parameters rounded to bf16 in the same pass: the bf16 copy of the flat buffer that bf16 kernels read. After
//     the write, the task records that the copy mirrors param's current values (Storage::note_mirror); any later
//     write to either storage makes it stale, and consumers (matmul's aBf16 / bBf16) then convert from fp32.
//   sgd(param, grad, buf | null, {lr, momentum = 0, dampening = 0, weightDecay = 0, nesterov = false, firstStep})
//     -> undefined; buf and firstStep (true on the step that starts the momentum buffer) are required when
//     momentum > 0.
//   sumSquares(x) -> float32 scalar tensor: sum of x^2 (computed in double).
//   clipGradNorm(grad, maxNorm, {eps = 1e-6}) -> float32 scalar tensor: the norm before clipping; grad is scaled in
//     place by min(1, maxNorm / (norm + eps)).
//   scale(x, s) -> x, scaled in place.
// Data-dependent errors (an id or a target out of range) are thrown by the kernel on the stream, before it writes
// anything; the op's outputs then carry the failure (reading them rejects with it) and synchronize() reports it once
// (native/core/stream.h). On CUDA the ids are checked in the op's stream task before the kernel (bad_id, ops.cpp),
// with the CPU kernel's error text: on the host from the bounds their upload noted, when they came from host memory
// and nothing has written them since (no stream synchronisation); otherwise by cuda::check_ids on the device.
// All tensors of a call are on one device; the kernels run there (native/cpu or cuda/). On CUDA, clipGradNorm is
// one sum-of-squares reduction and one scaling kernel with no host round trip (cuda::clip_by_norm).
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

Shape with_last(const Shape& s, int64_t last) {
  Shape r = s;
  r.push_back(last);
  return r;
}

// The embedding kernels' ids must lie in [0, V). The CPU kernel checks them itself; on CUDA they are checked in the
// op's stream task before the kernel (bad_id, ops.cpp), with the CPU kernel's error text.
void embedding_ids_in_range(ThreadPool&, Backend*, const Tensor&, int64_t, int64_t, const char*) {}
#if SHAREDFORMER_WITH_CUDA
void embedding_ids_in_range(cuda::Stream s, Backend* be, const Tensor& ids, int64_t n, int64_t V, const char* op) {
  auto [at, id] = bad_id(*be, s, ids, n, static_cast<int32_t>(std::min<int64_t>(V, INT32_MAX)), false, 0, op);
  if (at >= 0) range_error("embedding: token id ", id, " at position ", at, " is out of range [0, ", V, ")");
}
#endif

// A required number option (TypeError when absent).
float required_f32(const OpArgs& args, const Napi::Object& o, const char* key) {
  if (o.Get(key).IsUndefined()) type_error(args.op(), ": option ", key, " is required");
  return args.opt_f32(o, key, 0.0f);
}

Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "embeddingForward", 2);
    const char* op = args.op();
    Tensor ids = args.tensor(0, "ids");
    Tensor table = args.tensor(1, "table");
    std::optional<Tensor> out = args.maybe_tensor(2, "out");
    check_dtype(ids, DType::i32, op, "ids");
    args.same_device(ids, "ids");
    check_f32_dev(args, table, "table");
    check_rank(ids, 1, kMaxRank - 1, op, "ids");
    check_rank(table, 2, 2, op, "table");
    const int64_t V = table.shape[0], C = table.shape[1];
    const Shape oshape = with_last(ids.shape, C);
    checked_numel(oshape, op);
    Tensor o;
    if (out) {
      o = *out;
      check_f32_dev(args, o, "out");
      check_shape(o, oshape, op, "out");
      check_all_disjoint(op, {{&o, "out"}}, {{&table, "table"}, {&ids, "ids"}});
      args.write(o);
    } else {
      o = args.output(oshape, DType::f32, table.device());
    }
    const int64_t n = ids.numel();
    Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);
    args.run({ids, table, o},
             SF_ON_DEVICE(embedding_ids_in_range(sf_dev, be, ids, n, V, "embeddingForward");
                          sf_k::embedding_forward(sf_dev, ids.data<int32_t>(), n, table.data<float>(), V, C,
                                                  o.data<float>())));
    return out ? args.arg(2) : args.wrap(o);
  });
}

Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "embeddingBackward", 3);
    const char* op = args.op();
    Tensor ids = args.tensor(0, "ids");
    Tensor dout = args.tensor(1, "dout");
    Tensor dtable = args.tensor(2, "dtable");
    check_dtype(ids, DType::i32, op, "ids");
    args.same_device(ids, "ids");
    check_f32_dev(args, dout, "dout");
    check_f32_dev(args, dtable, "dtable");
    check_rank(ids, 1, kMaxRank - 1, op, "ids");
    check_rank(dtable, 2, 2, op, "dtable");
    const int64_t V = dtable.shape[0], C = dtable.shape[1];
    check_shape(dout, with_last(ids.shape, C), op, "dout");
    check_all_disjoint(op, {{&dtable, "dtable"}}, {{&dout, "dout"}, {&ids, "ids"}});
    const int64_t n = ids.numel();
    Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);
    args.update(dtable);
    args.run({ids, dout, dtable},
             SF_ON_DEVICE(embedding_ids_in_range(sf_dev, be, ids, n, V, "embeddingBackward");
                          sf_k::embedding_backward(sf_dev, ids.data<int32_t>(), n, dout.data<float>(), V, C,
                                                   dtable.data<float>())));
    return args.arg(2);
  });
}

Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "crossEntropy", 2);
    const char* op = args.op();
    Tensor logits = args.tensor(0, "logits");
    Tensor targets = args.tensor(1, "targets");
    Napi::Object o = args.options(2);
    const int64_t ignore = args.opt_int(o, "ignoreIndex", -100, std::numeric_limits<int32_t>::min(),
                                        std::numeric_limits<int32_t>::max());
    const float grad_scale = args.opt_f32(o, "gradScale", 1.0f);
    std::optional<Tensor> dl = args.opt_tensor(o, "dlogits");

    check_f32_dev(args, logits, "logits");
    check_dtype(targets, DType::i32, op, "targets");
    args.same_device(targets, "targets");
    check_rank(logits, 1, kMaxRank, op, "logits");
    const int64_t V = logits.shape.back();
    const Shape rows_shape(logits.shape.begin(), logits.shape.end() - 1);
    check_shape(targets, rows_shape, op, "targets");
    int64_t N = 1;
    for (int64_t d : rows_shape) N *= d;
    if (dl) {
      check_f32_dev(args, *dl, "option dlogits");
      check_shape(*dl, logits.shape, op, "option dlogits");
      const bool in_place = dl->storage == logits.storage && dl->offset == logits.offset;
      if (!in_place && overlaps(*dl, logits))
        range_error(op, ": option dlogits partly overlaps logits (it must be the logits tensor itself, for an in-place "
                        "gradient, or not share memory with it)");
      check_disjoint(*dl, "option dlogits", targets, "targets", op);
      args.write(*dl);
    }
    Tensor loss = args.output(Shape{}, DType::f32, logits.device());
    std::vector<Tensor> keep{logits, targets, loss};
    if (dl) keep.push_back(*dl);
    const int32_t ig = static_cast<int32_t>(ignore);
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);)
    args.run(
        std::move(keep),
        [logits, targets, loss, dl, N, V, ig, grad_scale](ThreadPool& pool) {
          *loss.data<float>() = cpu::cross_entropy(pool, logits.data<float>(), targets.data<int32_t>(), N, V, ig,
                                                   dl ? dl->data<float>() : nullptr, grad_scale);
        },
        SF_CUDA([logits, targets, loss, dl, N, V, ig, grad_scale, be](cuda::Stream s) {
          auto [at, t] = bad_id(*be, s, targets, N, static_cast<int32_t>(std::min<int64_t>(V, INT32_MAX)), true, ig,
                                "crossEntropy");
          if (at >= 0)
            range_error("cross_entropy: target ", t, " at row ", at, " is out of range [0, ", V,
                        ") and is not ignore_index (", ig, ")");
          cuda::cross_entropy(s, logits.data<float>(), targets.data<int32_t>(), N, V, ig,
                              dl ? dl->data<float>() : nullptr, grad_scale, loss.data<float>());
        }));
    return args.wrap(loss);
  });
}

Napi::Value AdamW(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "adamw", 5);
    const char* op = args.op();
    Tensor param = args.tensor(0, "param");
    Tensor grad = args.tensor(1, "grad");
    Tensor m = args.tensor(2, "m");
    Tensor v = args.tensor(3, "v");
    Napi::Object o = args.options(4);
    cpu::AdamWDesc d;
    d.lr = required_f32(args, o, "lr");
    d.beta1 = args.opt_f32(o, "beta1", 0.9f);
    d.beta2 = args.opt_f32(o, "beta2", 0.999f);
    d.eps = args.opt_f32(o, "eps", 1e-8f);
    d.weight_decay = args.opt_f32(o, "weightDecay", 0.01f);
    if (o.Get("step").IsUndefined()) type_error(op, ": option step is required (the 1-based step count)");
    d.step = args.opt_int(o, "step", 1, 1, (int64_t{1} << 53) - 1);
    std::optional<Tensor> decay = args.opt_tensor(o, "decayMask");
    std::optional<Tensor> copy = args.opt_tensor(o, "bf16Copy");
    if (!(d.lr >= 0)) range_error(op, ": option lr must be >= 0, got ", d.lr);
    if (!(d.beta1 >= 0 && d.beta1 < 1)) range_error(op, ": option beta1 must be in [0, 1), got ", d.beta1);
    if (!(d.beta2 >= 0 && d.beta2 < 1)) range_error(op, ": option beta2 must be in [0, 1), got ", d.beta2);
    if (!(d.eps > 0)) range_error(op, ": option eps must be > 0, got ", d.eps);
    if (!(d.weight_decay >= 0)) range_error(op, ": option weightDecay must be >= 0, got ", d.weight_decay);

    check_f32_dev(args, param, "param");
    check_f32_dev(args, grad, "grad");
    check_f32_dev(args, m, "m");
    check_f32_dev(args, v, "v");
    check_shape(grad, param.shape, op, "grad");
    check_shape(m, param.shape, op, "m");
    check_shape(v, param.shape, op, "v");
    if (decay) {
      check_f32_dev(args, *decay, "option decayMask");
      check_shape(*decay, param.shape, op, "option decayMask");
    }
    // The three updated tensors must not share memory with each other or with the inputs.
    const Tensor* dm = decay ? &*decay : nullptr;
    check_all_disjoint(op, {{&param, "param"}, {&m, "m"}, {&v, "v"}}, {{&grad, "grad"}, {dm, "option decayMask"}});
    if (copy) {
      if (copy->dtype != DType::bf16)
        type_error(op, ": option bf16Copy must be a bfloat16 tensor, got ", dtype_name(copy->dtype));
      args.same_device(*copy, "option bf16Copy");
      check_shape(*copy, param.shape, op, "option bf16Copy");
      check_all_disjoint(op, {{&*copy, "option bf16Copy"}},
                         {{&param, "param"}, {&grad, "grad"}, {&m, "m"}, {&v, "v"}, {dm, "option decayMask"}});
    }
    const int64_t n = param.numel();
    std::vector<Tensor> keep{param, grad, m, v};
    if (decay) keep.push_back(*decay);
    if (copy) keep.push_back(*copy);
    args.update(param);
    args.update(m);
    args.update(v);
    if (copy) args.write(*copy);
    // On CUDA the mirror note is stream-ordered: a consumer's kernel, queued after this one on the device's stream,
    // reads the copy written.
    args.run(std::move(keep),
             SF_ON_DEVICE(sf_k::adamw(sf_dev, d, param.data<float>(), grad.data<float>(), m.data<float>(),
                                      v.data<float>(), decay ? decay->data<float>() : nullptr, n,
                                      copy ? copy->data<uint16_t>() : nullptr);
                          if (copy) copy->storage->note_mirror(param.storage, param.byte_begin(), param.byte_end(),
                                                               copy->byte_begin())));
    return args.env().Undefined();
  });
}

Napi::Value Sgd(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "sgd", 4);
    const char* op = args.op();
    Tensor param = args.tensor(0, "param");
    Tensor grad = args.tensor(1, "grad");
    std::optional<Tensor> buf = args.maybe_tensor(2, "buf");
    Napi::Object o = args.options(3);
    cpu::SgdDesc d;
    d.lr = required_f32(args, o, "lr");
    d.momentum = args.opt_f32(o, "momentum", 0.0f);
    d.dampening = args.opt_f32(o, "dampening", 0.0f);
    d.weight_decay = args.opt_f32(o, "weightDecay", 0.0f);
    d.nesterov = args.opt_bool(o, "nesterov", false);
    if (d.momentum > 0 && o.Get("firstStep").IsUndefined())
      type_error(op, ": option firstStep is required with momentum (true on the step that starts the buffer)");
    d.first_step = args.opt_bool(o, "firstStep", false);
    if (!(d.lr >= 0)) range_error(op, ": option lr must be >= 0, got ", d.lr);
    if (!(d.momentum >= 0)) range_error(op, ": option momentum must be >= 0, got ", d.momentum);
    if (!(d.weight_decay >= 0)) range_error(op, ": option weightDecay must be >= 0, got ", d.weight_decay);
    if (d.nesterov && (d.momentum <= 0 || d.dampening != 0))
      range_error(op, ": nesterov needs momentum > 0 and dampening = 0, got momentum ", d.momentum, " and dampening ",
                  d.dampening);

    check_f32_dev(args, param, "param");
    check_f32_dev(args, grad, "grad");
    check_shape(grad, param.shape, op, "grad");
    if (d.momentum > 0 && !buf)
      range_error(op, ": momentum ", d.momentum, " needs a momentum buffer, but buf is null");
    if (buf) {
      check_f32_dev(args, *buf, "buf");
      check_shape(*buf, param.shape, op, "buf");
    }
    check_all_disjoint(op, {{buf ? &*buf : nullptr, "buf"}, {&param, "param"}}, {{&grad, "grad"}});
    const int64_t n = param.numel();
    std::optional<Tensor> b = d.momentum > 0 ? buf : std::nullopt;
    std::vector<Tensor> keep{param, grad};
    if (b) keep.push_back(*b);
    args.update(param);
    if (b) args.update(*b);
    args.run(std::move(keep),
             SF_KERNEL(sgd, d, param.data<float>(), grad.data<float>(), b ? b->data<float>() : nullptr, n));
    return args.env().Undefined();
  });
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "sumSquares", 1);
    Tensor x = args.tensor(0, "x");
    check_f32_dev(args, x, "x");
    Tensor out = args.output(Shape{}, DType::f32, x.device());
    const int64_t n = x.numel();
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), args.op());
            Tensor sum = args.device().is_cpu() ? out : args.output({2}, DType::f32, args.device());)  // 1 double
    args.run(
        {x, out}, [x, out, n](ThreadPool& pool) {
          *out.data<float>() = static_cast<float>(cpu::sum_squares(pool, x.data<float>(), n));
        },
        SF_CUDA([x, out, n, sum, be](cuda::Stream s) {
          // the double is narrowed on the host (a small synchronising read inside the stream task)
          cuda::sum_squares(s, x.data<float>(), n, static_cast<double*>(sum.raw()));
          double host = 0.0;
          be->copy_to_host(&host, sum);
          const float f = static_cast<float>(host);
          be->copy_from_host(out, &f);
        }));
    return args.wrap(out);
  });
}

Napi::Value ClipGradNorm(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "clipGradNorm", 2);
    const char* op = args.op();
    Tensor grad = args.tensor(0, "grad");
    const double max_norm = get_number(args[1], op, "maxNorm");
    Napi::Object o = args.options(2);
    const double eps = args.opt_number(o, "eps", 1e-6);
    if (!(max_norm > 0)) range_error(op, ": maxNorm must be > 0, got ", max_norm);
    if (!(eps >= 0)) range_error(op, ": option eps must be >= 0, got ", eps);
    check_f32_dev(args, grad, "grad");
    Tensor out = args.output(Shape{}, DType::f32, grad.device());
    const int64_t n = grad.numel();
    SF_CUDA_ONLY(Tensor sum = args.device().is_cpu() ? out : args.output({2}, DType::f32, args.device());)  // 1 double
    args.update(grad);
    args.run(
        {grad, out},
        [grad, out, n, max_norm, eps](ThreadPool& pool) {
          const double norm = std::sqrt(cpu::sum_squares(pool, grad.data<float>(), n));
          const double coef = max_norm / (norm + eps);
          if (coef < 1.0) cpu::scale_inplace(pool, grad.data<float>(), n, static_cast<float>(coef));
          *out.data<float>() = static_cast<float>(norm);
        },
        SF_CUDA([grad, out, n, max_norm, eps, sum](cuda::Stream s) {
          double* ss = static_cast<double*>(sum.raw());
          cuda::sum_squares(s, grad.data<float>(), n, ss);
          cuda::clip_by_norm(s, grad.data<float>(), n, ss, static_cast<float>(max_norm), static_cast<float>(eps),
                             out.data<float>());
        }));
    return args.wrap(out);
  });
}

Napi::Value Scale(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "scale", 2);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    const float s = get_f32(args[1], op, "s");
    check_f32_dev(args, x, "x");
    const int64_t n = x.numel();
    args.update(x);
    args.run({x}, SF_KERNEL(scale_inplace, x.data<float>(), n, s));
    return args.arg(0);
  });
}

}  // namespace

void register_train_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward, "embeddingForward"));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward, "embeddingBackward"));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  exports.Set("adamw", Napi::Function::New(env, AdamW, "adamw"));
  exports.Set("sgd", Napi::Function::New(env, Sgd, "sgd"));
  exports.Set("sumSquares", Napi::Function::New(env, SumSquares, "sumSquares"));
  exports.Set("clipGradNorm", Napi::Function::New(env, ClipGradNorm, "clipGradNorm"));
  exports.Set("scale", Napi::Function::New(env, Scale, "scale"));
}

}  // namespace sf::js
