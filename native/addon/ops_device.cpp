// ops_device.cpp — device-level ops that are not kernels: the shared-weight L2 window (cuda/l2.cu, cuda/l2_plan.h).
//
//   persistL2(t | tensors[] | null) -> boolean
//     t (or several tensors of one storage that together cover ONE contiguous byte range; the layer stacks pass one
//     tensor over a block's parameters, alignment padding included: ParameterStore.span, of the fp32 flat buffer or
//     of its bf16 copy — a window is bytes, of any dtype) on a CUDA device: from now on, work on that device's stream
//     treats exactly those bytes as persisting in L2 (an access-policy window; the part past the device's persisting
//     set-aside is cached normally), so that layers which apply the same block one after another read its weights
//     from L2 instead of HBM. Tensors whose union has a gap are refused (RangeError naming the gap) on every device:
//     a window is one range, and it must not cover bytes that were not passed. null ends the window on every CUDA
//     device in use (stream-ordered: the kernels queued after it demote the persisting lines). Returns true when a
//     window was set or ended on a CUDA device, false when there was nothing to do (CPU tensors, empty tensors, or no
//     CUDA device in use). Ordered with the kernels on the stream, like any op. Best effort: where persisting L2 is
//     unavailable (no persisting L2, MPS, MIG) the request changes nothing and never throws; whether it is in effect,
//     and if not why, is reported by backends() (cuda.devices[i].persistingL2) and the models' summary().
#include <algorithm>

#include "ops.h"

namespace sf::js {

namespace {

Napi::Value PersistL2(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "persistL2", 1);
    const char* op = args.op();
    std::vector<Tensor> ts;
    Napi::Value v = args[0];
    if (v.IsArray()) {
      Napi::Array arr = v.As<Napi::Array>();
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        const std::string name = cat("tensors[", i, "]");
        ts.push_back(args.addon().unwrap(arr.Get(i), op, name.c_str()));
      }
    } else if (std::optional<Tensor> t = args.maybe_tensor(0, "t")) {
      ts.push_back(*t);
    }
    // one device, one storage, one contiguous byte range: the union of the tensors' ranges, with no gap
    struct Range {
      size_t begin, end;
      size_t arg;
    };
    std::vector<Range> ranges;
    for (size_t i = 0; i < ts.size(); ++i) {
      const Tensor& t = ts[i];
      const std::string name = cat("tensors[", i, "]");
      args.same_device(t, name.c_str());
      if (t.storage != ts[0].storage)
        range_error(op, ": ", name, " is not in the storage of tensors[0]; a window spans one buffer (the model's "
                    "flat parameter buffer)");
      if (t.nbytes() > 0) ranges.push_back({t.byte_begin(), t.byte_end(), i});
    }
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
    size_t lo = 0, hi = 0;
    for (size_t i = 0; i < ranges.size(); ++i) {
      const Range& r = ranges[i];
      if (i == 0) {
        lo = r.begin;
      } else if (r.begin > hi) {
        const size_t prev = std::max_element(ranges.begin(), ranges.begin() + static_cast<std::ptrdiff_t>(i),
                                             [](const Range& a, const Range& b) { return a.end < b.end; })->arg;
        range_error(op, ": the tensors do not cover one contiguous range of their buffer: bytes [", hi, ", ", r.begin,
                    ") between tensors[", prev, "] and tensors[", r.arg, "] belong to none of them; a window covers "
                    "exactly the bytes passed, so pass tensors that are adjacent (e.g. parameters that are "
                    "consecutive in the flat parameter buffer)");
      }
      hi = std::max(hi, r.end);
    }
    bool done = false;
#if SHAREDFORMER_WITH_CUDA
    if (!ts.empty()) {
      if (!args.device().is_cpu() && hi > lo) {
        const int64_t bytes = static_cast<int64_t>(hi - lo);
        const void* base = static_cast<const char*>(ts[0].storage->data()) + lo;
        cuda::L2State* st = args.addon().ctx().backend(args.device(), op).l2_state();
        args.not_read(ts[0]);  // kept alive only: the window reads no byte
        args.run({ts[0]}, nullptr, [st, base, bytes](cuda::Stream s) { cuda::persist_l2(s, *st, base, bytes); });
        done = true;
      }
    } else if (v.IsNull() || v.IsUndefined()) {
      for (Backend* be : args.addon().ctx().backends()) {
        cuda::L2State* st = be->l2_state();
        if (!st) continue;  // the CPU
        be->stream().submit(op, [be, st] {
          be->make_current();
          cuda::persist_l2(static_cast<cuda::Stream>(be->native_stream()), *st, nullptr, 0);
        }, {}, Stream::Record::Allow);
        done = true;
      }
    }
#else
    (void)lo;
    (void)hi;  // no tensor can be on a CUDA device in a build without CUDA
#endif
    return Napi::Boolean::New(info.Env(), done);
  });
}

}  // namespace

void register_device_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("persistL2", Napi::Function::New(env, PersistL2, "persistL2"));
}

}  // namespace sf::js
