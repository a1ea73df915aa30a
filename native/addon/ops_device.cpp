// ops_device.cpp — device-level ops that are not kernels: the shared-weight L2 window (kernel in cuda/l2.cu).
//
//   persistL2(t | tensors[] | null) -> boolean
//     t (or the span from the lowest to the highest byte of several tensors of one storage: a block's parameters,
//     which are windows into the one flat parameter buffer) on a CUDA device: from now on, work on that device's
//     stream treats those bytes as persisting in L2 (an access-policy window, capped to the device's persisting
//     carve-out), so that layers which apply the same block one after another read its weights from L2 instead of
//     HBM. null ends the window on every CUDA device in use. Returns true when a window was set or ended on a CUDA
//     device, false when there was nothing to do (CPU tensors, or no CUDA device in use). Ordered with the kernels
//     on the stream, like any op.
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
    // the span of the tensors: one device, one storage
    const char *lo = nullptr, *hi = nullptr;
    for (size_t i = 0; i < ts.size(); ++i) {
      const Tensor& t = ts[i];
      const std::string name = cat("tensors[", i, "]");
      args.same_device(t, name.c_str());
      if (t.storage != ts[0].storage)
        range_error(op, ": ", name, " is not in the storage of tensors[0]; a window spans one buffer (the model's "
                    "flat parameter buffer)");
      const char* a = static_cast<const char*>(t.raw());
      if (!lo || a < lo) lo = a;
      if (!hi || a + t.nbytes() > hi) hi = a + t.nbytes();
    }
    bool done = false;
#if SHAREDFORMER_WITH_CUDA
    if (!ts.empty()) {
      if (!args.device().is_cpu()) {
        const int64_t bytes = hi - lo;
        const void* base = lo;
        args.not_read(ts[0]);  // kept alive only: the window reads no byte
        args.run({ts[0]}, nullptr, [base, bytes](cuda::Stream s) { cuda::persist_l2(s, base, bytes); });
        done = true;
      }
    } else if (v.IsNull() || v.IsUndefined()) {
      for (Backend* be : args.addon().ctx().backends()) {
        if (be->device().is_cpu()) continue;
        be->stream().submit(op, [be] {
          be->make_current();
          cuda::persist_l2(static_cast<cuda::Stream>(be->native_stream()), nullptr, 0);
        });
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
