// ops_distributed.cpp — the distributed runtime's bindings (native/core/comm.h): init, the collectives on tensors
// (ops on the tensor's stream, ordered with the kernels that wrote their inputs), and the flat-buffer packing the
// trainer uses to send parameters only (not the alignment padding between them).
//
//   distInit() -> {rank, worldSize, localRank, localSize, library}   loads and initialises MPI (throws what to install)
//   distInfo() -> the same, or null before distInit / after distFinalize
//   distAllReduce(t, op)                    t (float32) <- sum (op 'sum') or mean ('mean') over the ranks; returns t
//   distReduceScatter(out, in, op)          out <- this rank's shard (shard_range) of the sum / mean of every in
//   distAllGather(out, in)                  out <- every rank's in, in rank order (in: this rank's shard of out;
//                                           in may be exactly that window of out)
//   distAllReduceStart(t) / distAllReduceWait(t): an all-reduce (sum) of t overlapped with the stream's later kernels
//                                           (CPU; see below)
//   distBroadcast(t, root)                  t (float32 or int32) <- root's t; returns t
//   distBarrier() -> scalar tensor          ready once every rank has reached it
//   distSumSquares(x, maxNorm, eps) -> scalar tensor: over every rank's x, the sum of squares (maxNorm 0) or the norm
//                                           before clipping, each rank's x then scaled by min(1, maxNorm / (norm + eps))
//                                           as clipGradNorm does (ZeRO-1: each rank holds a shard of the gradient)
//   distShard(n) -> [begin, end)            this rank's shard of n elements
//   distStats() -> {seconds, bytes, calls}  time inside collectives and payload bytes, since distInit
//   distFinalize()                          waits for every stream, then MPI_Finalize (collective)
//   distAbort(code)                         MPI_Abort: ends every rank (a failed rank must not leave the others waiting)
//   copySegments(dst, src, segments)        for each (dstOffset, srcOffset, length) triple of the Float64Array:
//                                           dst[dstOffset ...] <- src[srcOffset ...]; float32, one device, disjoint
//
// A collective whose input had failed still takes part (its task declares no inputs and asks for the failure itself),
// so that every rank throws instead of some waiting forever; see Comm::agree.
#include <cmath>

#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

Comm& need_comm(const OpArgs& args) {
  Comm* c = args.addon().ctx().comm();
  if (!c)
    error(args.op(), ": distributed.init() has not been called (start the ranks with `mpirun -np N ...` and call "
                     "distributed.init() first)");
  if (c->finalized()) error(args.op(), ": distributed.finalize() has run; no collective is possible after it");
  return *c;
}

// 'sum' -> false, 'mean' -> true.
bool get_mean(const Napi::Value& v, const char* op) {
  const std::string s = get_string(v, op, "op");
  if (s != "sum" && s != "mean") type_error(op, ": op must be 'sum' or 'mean', got '", s, "'");
  return s == "mean";
}

// The failure message of t's last writer, for Comm::agree (null when t is healthy).
std::optional<std::string> failed(const Tensor& t) {
  if (FailurePtr f = t.failure()) return f->message;
  return std::nullopt;
}
const std::string* ptr(const std::optional<std::string>& s) { return s ? &*s : nullptr; }

void divide(float* p, int64_t n, int world) {
  const auto w = static_cast<float>(world);
  for (int64_t i = 0; i < n; ++i) p[i] /= w;
}

Napi::Object info_object(Napi::Env env, const Comm& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", c.rank());
  o.Set("worldSize", c.size());
  o.Set("localRank", c.local_rank());
  o.Set("localSize", c.local_size());
  o.Set("library", c.library());
  return o;
}

Napi::Value DistInit(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Comm& c = info.Env().GetInstanceData<Addon>()->ctx().init_comm();
    if (c.finalized()) error("distributed.init: distributed.finalize() has run; MPI cannot be initialised again");
    return info_object(info.Env(), c);
  });
}

Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  Comm* c = info.Env().GetInstanceData<Addon>()->ctx().comm();
  if (!c || c->finalized()) return info.Env().Null();
  return info_object(info.Env(), *c);
}

Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "allReduce", 2);
    const char* op = args.op();
    Tensor t = args.tensor(0, "t");
    check_f32_dev(args, t, "t");
    const bool mean = get_mean(args[1], op);
    Comm* c = &need_comm(args);
    const int64_t n = t.numel();
    args.write(t);  // read and written, but its failure is asked for by the task (it must take part)
    args.run(
        {t},
        [=](ThreadPool&) {
          const auto f = failed(t);
          c->agree(op, Collective::AllReduce, n, mean, 0, ptr(f));
          c->allreduce_sum(op, t.data<float>(), n);
          if (mean) divide(t.data<float>(), n, c->size());
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto f = failed(t);
          c->agree(op, Collective::AllReduce, n, mean, 0, ptr(f));
          c->nccl_allreduce(op, t.device().index, t.data<float>(), n, mean, s);
        }));
    return args.arg(0);
  });
}

// Overlap (CPU): the start op, when the stream reaches it (after the kernels that wrote t), hands the all-reduce of t
// to the Comm's own thread and returns, so the stream goes on with later kernels while the ranks communicate; the
// wait op blocks the stream until every handed-over all-reduce has run, and fails (poisoning its tensor) with the
// first error among them. Nothing may read or write t between the two (the Trainer's buckets are final gradients).
Napi::Value DistAllReduceStart(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "allReduceStart", 1);
    const char* op = args.op();
    Tensor t = args.tensor(0, "t");
    check_f32_dev(args, t, "t");
    if (!args.device().is_cpu())
      type_error(op, ": t is on ", args.device().str(), "; overlapped all-reduces are for CPU tensors (on CUDA, NCCL's "
                 "collectives are already asynchronous on the device's stream)");
    Comm* c = &need_comm(args);
    const int64_t n = t.numel();
    args.not_read(t);
    args.run_cpu({t}, [=](ThreadPool&) {
      const auto f = failed(t);
      c->submit_async([=] {
        c->agree(op, Collective::AllReduce, n, 0, 0, ptr(f));
        c->allreduce_sum(op, t.data<float>(), n);
      });
    });
    return args.arg(0);
  });
}

Napi::Value DistAllReduceWait(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "allReduceWait", 1);
    Tensor t = args.tensor(0, "t");
    check_f32_dev(args, t, "t");
    Comm* c = &need_comm(args);
    args.write(t);  // what the handed-over all-reduces wrote: failed with their error, or valid
    args.run_cpu({t}, [c](ThreadPool&) { c->wait_async(); });
    return args.arg(0);
  });
}

Napi::Value DistReduceScatter(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "reduceScatter", 3);
    const char* op = args.op();
    Tensor out = args.tensor(0, "out");
    Tensor in = args.tensor(1, "in");
    check_f32_dev(args, out, "out");
    check_f32_dev(args, in, "in");
    const bool mean = get_mean(args[2], op);
    Comm* c = &need_comm(args);
    const int64_t n = in.numel();
    const auto r_ = shard_range(n, c->size(), c->rank());
    const int64_t b = r_.first, e = r_.second;  // not a structured binding: lambdas capture it (C++17)
    if (out.numel() != e - b)
      range_error(op, ": rank ", c->rank(), " of ", c->size(), ": out has ", out.numel(), " elements; its shard of in (",
                  n, " elements) has ", e - b, " (elements ", b, " to ", e, ")");
    check_disjoint(out, "out", in, "in", op);
    args.write(out);
    args.not_read(in);
    args.run(
        {out, in},
        [=](ThreadPool&) {
          const auto f = failed(in);
          c->agree(op, Collective::ReduceScatter, n, mean, 0, ptr(f));
          c->reduce_scatter_sum(op, in.data<float>(), out.data<float>(), n);
          if (mean) divide(out.data<float>(), out.numel(), c->size());
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto f = failed(in);
          c->agree(op, Collective::ReduceScatter, n, mean, 0, ptr(f));
          c->nccl_reduce_scatter(op, in.device().index, in.data<float>(), out.data<float>(), n, mean, s);
        }));
    return args.arg(0);
  });
}

Napi::Value DistAllGather(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "allGather", 2);
    const char* op = args.op();
    Tensor out = args.tensor(0, "out");
    Tensor in = args.tensor(1, "in");
    check_f32_dev(args, out, "out");
    check_f32_dev(args, in, "in");
    Comm* c = &need_comm(args);
    const int64_t n = out.numel();
    const auto r_ = shard_range(n, c->size(), c->rank());
    const int64_t b = r_.first, e = r_.second;  // not a structured binding: lambdas capture it (C++17)
    if (in.numel() != e - b)
      range_error(op, ": rank ", c->rank(), " of ", c->size(), ": in has ", in.numel(), " elements; its shard of out (",
                  n, " elements) has ", e - b, " (elements ", b, " to ", e, ")");
    const bool in_place = in.storage == out.storage && in.offset == out.offset + b;
    if (!in_place) check_disjoint(out, "out", in, "in", op);
    args.write(out);
    if (!in_place) args.not_read(in);
    args.run(
        in_place ? std::vector<Tensor>{out} : std::vector<Tensor>{out, in},
        [=](ThreadPool&) {
          const auto f = failed(in);
          c->agree(op, Collective::AllGather, n, 0, 0, ptr(f));
          c->allgather(op, in.data<float>(), out.data<float>(), n);
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto f = failed(in);
          c->agree(op, Collective::AllGather, n, 0, 0, ptr(f));
          c->nccl_allgather(op, in.device().index, in.data<float>(), out.data<float>(), n, s);
        }));
    return args.arg(0);
  });
}

Napi::Value DistBroadcast(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "broadcast", 2);
    const char* op = args.op();
    Tensor t = args.tensor(0, "t");
    if (t.dtype != DType::f32 && t.dtype != DType::i32)
      type_error(op, ": t must be float32 or int32, got ", dtype_name(t.dtype));
    args.same_device(t, "t");
    Comm* c = &need_comm(args);
    const int root = static_cast<int>(get_int(args[1], op, "root", 0, c->size() - 1));
    const int64_t n = t.numel();
    args.write(t);
    args.run(
        {t},
        [=](ThreadPool&) {
          const auto f = failed(t);
          c->agree(op, Collective::Broadcast, n, 0, root, ptr(f));
          c->bcast(op, t.raw(), static_cast<int64_t>(t.nbytes()), root);
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto f = failed(t);
          c->agree(op, Collective::Broadcast, n, 0, root, ptr(f));
          c->nccl_bcast(op, t.device().index, static_cast<float*>(t.raw()), n, root, s);  // 4-byte elements
        }));
    return args.arg(0);
  });
}

Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "barrier", 0);
    const char* op = args.op();
    Comm* c = &need_comm(args);
    Tensor out = args.output(Shape{}, DType::f32, Device{});
    args.run_cpu({out}, [=](ThreadPool&) {
      c->agree(op, Collective::Barrier, 0, 0, 0);
      c->barrier(op);
      *out.data<float>() = 0.0f;
    });
    return args.wrap(out);
  });
}

Napi::Value DistSumSquares(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "distributedClipGradNorm", 3);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    check_f32_dev(args, x, "x");
    const double max_norm = get_number(args[1], op, "maxNorm");
    const double eps = get_number(args[2], op, "eps");
    if (!(max_norm >= 0)) range_error(op, ": maxNorm must be >= 0 (0: the sum of squares only), got ", max_norm);
    if (!(eps >= 0)) range_error(op, ": eps must be >= 0, got ", eps);
    Comm* c = &need_comm(args);
    Tensor out = args.output(Shape{}, DType::f32, x.device());
    const int64_t n = x.numel();
    if (max_norm > 0) args.write(x);
    else args.not_read(x);
    // the ranks' sums in rank order, then the norm and the clip coefficient as ClipGradNorm computes them
    auto finish = [c, max_norm, eps, op](double mine, double* coef) {
      const std::vector<double> all = c->allgather_double(op, mine);
      double s = 0.0;
      for (double v : all) s += v;
      if (max_norm == 0) return s;
      const double norm = std::sqrt(s);
      *coef = max_norm / (norm + eps);
      return norm;
    };
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);
                 Tensor sum = args.device().is_cpu() ? out : args.output({2}, DType::f32, args.device());)
    args.run(
        {x, out},
        [=](ThreadPool& pool) {
          const auto f = failed(x);
          c->agree(op, Collective::SumSquares, 0, 0, 0, ptr(f));
          double coef = 1.0;
          const double r = finish(cpu::sum_squares(pool, x.data<float>(), n), &coef);
          if (coef < 1.0) cpu::scale_inplace(pool, x.data<float>(), n, static_cast<float>(coef));
          *out.data<float>() = static_cast<float>(r);
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto f = failed(x);
          c->agree(op, Collective::SumSquares, 0, 0, 0, ptr(f));
          cuda::sum_squares(s, x.data<float>(), n, static_cast<double*>(sum.raw()));
          double mine = 0.0;
          be->copy_to_host(&mine, sum);  // synchronises the stream
          double coef = 1.0;
          const double r = finish(mine, &coef);
          if (coef < 1.0) cuda::scale_inplace(s, x.data<float>(), n, static_cast<float>(coef));
          const float v = static_cast<float>(r);
          be->copy_from_host(out, &v);
        }));
    return args.wrap(out);
  });
}

Napi::Value DistShard(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "distributed.shardRange", 1);
    const int64_t n = get_int(args[0], args.op(), "n", 0, kMaxNumel);
    Comm& c = need_comm(args);
    const auto r_ = shard_range(n, c.size(), c.rank());
    const int64_t b = r_.first, e = r_.second;  // not a structured binding: lambdas capture it (C++17)
    Napi::Array a = Napi::Array::New(info.Env(), 2);
    a.Set(0u, static_cast<double>(b));
    a.Set(1u, static_cast<double>(e));
    return a;
  });
}

Napi::Value DistStats(const Napi::CallbackInfo& info) {
  Comm* c = info.Env().GetInstanceData<Addon>()->ctx().comm();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("seconds", c ? c->comm_seconds() : 0.0);
  o.Set("bytes", c ? c->comm_bytes() : 0.0);
  o.Set("calls", c ? static_cast<double>(c->comm_calls()) : 0.0);
  return o;
}

Napi::Value DistFinalize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Context& ctx = info.Env().GetInstanceData<Addon>()->ctx();
    Comm* c = ctx.comm();
    if (!c || c->finalized()) return info.Env().Undefined();
    for (Backend* b : ctx.backends()) b->stream().wait_all();  // queued collectives first
    c->finalize();
    return info.Env().Undefined();
  });
}

Napi::Value DistAbort(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const int code = static_cast<int>(get_int(info[0], "distributed.abort", "code", 0, 255));
    Comm* c = info.Env().GetInstanceData<Addon>()->ctx().comm();
    if (c && !c->finalized()) c->abort(code);
    return info.Env().Undefined();
  });
}

Napi::Value CopySegments(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "copySegments", 3);
    const char* op = args.op();
    Tensor dst = args.tensor(0, "dst");
    Tensor src = args.tensor(1, "src");
    check_f32_dev(args, dst, "dst");
    check_f32_dev(args, src, "src");
    check_disjoint(dst, "dst", src, "src", op);
    if (!args[2].IsTypedArray() || args[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      type_error(op, ": segments must be a Float64Array of (dstOffset, srcOffset, length) triples, got ",
                 describe(args[2]));
    Napi::Float64Array a = args[2].As<Napi::Float64Array>();
    if (a.ElementLength() % 3 != 0)
      range_error(op, ": segments has ", a.ElementLength(), " numbers, not a multiple of 3 (dstOffset, srcOffset, length)");
    std::vector<int64_t> seg(a.ElementLength());
    for (size_t i = 0; i < seg.size(); ++i) {
      const double v = a[i];
      if (!(v >= 0 && v <= static_cast<double>(kMaxNumel) && std::floor(v) == v))
        range_error(op, ": segments[", i, "] must be a non-negative integer, got ", v);
      seg[i] = static_cast<int64_t>(v);
    }
    for (size_t i = 0; i < seg.size(); i += 3) {
      if (seg[i] + seg[i + 2] > dst.numel())
        range_error(op, ": segment ", i / 3, " writes dst[", seg[i], ", ", seg[i] + seg[i + 2], "), past its ",
                    dst.numel(), " elements");
      if (seg[i + 1] + seg[i + 2] > src.numel())
        range_error(op, ": segment ", i / 3, " reads src[", seg[i + 1], ", ", seg[i + 1] + seg[i + 2], "), past its ",
                    src.numel(), " elements");
    }
    Backend* be = &args.addon().ctx().backend(args.device(), op);
    args.update(dst);  // the bytes outside the segments keep their values
    auto body = [dst, src, seg, be]() {
      for (size_t i = 0; i < seg.size(); i += 3) {
        if (seg[i + 2] == 0) continue;
        Tensor d = dst, s = src;
        d.offset += seg[i];
        s.offset += seg[i + 1];
        d.shape = s.shape = Shape{seg[i + 2]};
        be->copy(d, s);
      }
    };
    args.run({dst, src}, [body](ThreadPool&) { body(); }, SF_CUDA([body](cuda::Stream) { body(); }));
    return args.arg(0);
  });
}

}  // namespace

// What backends() says about MPI and NCCL.
Napi::Object distributed_report(Napi::Env env, Context& ctx) {
  const CommProbe& p = ctx.comm_probe();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object mpi = Napi::Object::New(env);
  mpi.Set("found", p.mpi_found);
  mpi.Set("library", p.mpi_library);
  if (p.mpi_found) mpi.Set("version", p.mpi_version);
  else mpi.Set("reason", p.mpi_reason);
  Comm* c = ctx.comm();
  mpi.Set("initialized", c != nullptr && !c->finalized());
  o.Set("mpi", mpi);
  Napi::Object nccl = Napi::Object::New(env);
  nccl.Set("found", p.nccl_found);
  nccl.Set("library", p.nccl_library);
  if (p.nccl_found) nccl.Set("version", p.nccl_version);
  else nccl.Set("reason", p.nccl_reason);
  o.Set("nccl", nccl);
  return o;
}

void register_distributed_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, DistInit, "distInit"));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo, "distInfo"));
  exports.Set("distAllReduce", Napi::Function::New(env, DistAllReduce, "distAllReduce"));
  exports.Set("distAllReduceStart", Napi::Function::New(env, DistAllReduceStart, "distAllReduceStart"));
  exports.Set("distAllReduceWait", Napi::Function::New(env, DistAllReduceWait, "distAllReduceWait"));
  exports.Set("distReduceScatter", Napi::Function::New(env, DistReduceScatter, "distReduceScatter"));
  exports.Set("distAllGather", Napi::Function::New(env, DistAllGather, "distAllGather"));
  exports.Set("distBroadcast", Napi::Function::New(env, DistBroadcast, "distBroadcast"));
  exports.Set("distBarrier", Napi::Function::New(env, DistBarrier, "distBarrier"));
  exports.Set("distSumSquares", Napi::Function::New(env, DistSumSquares, "distSumSquares"));
  exports.Set("distShard", Napi::Function::New(env, DistShard, "distShard"));
  exports.Set("distStats", Napi::Function::New(env, DistStats, "distStats"));
  exports.Set("distFinalize", Napi::Function::New(env, DistFinalize, "distFinalize"));
  exports.Set("distAbort", Napi::Function::New(env, DistAbort, "distAbort"));
  exports.Set("copySegments", Napi::Function::New(env, CopySegments, "copySegments"));
}

}  // namespace sf::js
