// addon.h — the binding's shared pieces: the per-environment Addon (instance data), the TensorHandle wrapper, and
// guarded(), which turns native exceptions into JavaScript TypeError / RangeError / Error. Op files (ops_*.cpp) use
// these to validate arguments, allocate outputs and submit kernel work to a device stream.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "../core/context.h"
#include "args.h"

namespace sf::js {

inline Napi::Error to_js_error(Napi::Env env, ErrorKind kind, const char* msg) {
  switch (kind) {
    case ErrorKind::Type: return Napi::TypeError::New(env, msg);
    case ErrorKind::Range: return Napi::RangeError::New(env, msg);
    default: return Napi::Error::New(env, msg);
  }
}

// Runs f, translating native exceptions into JavaScript ones.
template <typename F>
inline auto guarded(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    throw to_js_error(env, e.kind(), e.what());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "sharedformer: out of host memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

class Addon;
class Hub;  // settles promises from device streams (addon.cpp)

// ---------------------------------------------------------------------------------------------------------------
// TensorHandle: the native object behind a JavaScript Tensor. Holds one Tensor (a view into refcounted storage)
// until dispose() or garbage collection.
class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;

  const Tensor& get(const char* op, const char* name) const {
    if (!t_) error(op, ": ", name, " has been disposed");
    return *t_;
  }
  void set(Napi::Env env, Tensor t, bool owns_storage);

 private:
  Addon& addon() const;
  void release();

  Napi::Value Shape_(const Napi::CallbackInfo& info);
  Napi::Value DType_(const Napi::CallbackInfo& info);
  Napi::Value Device_(const Napi::CallbackInfo& info);
  Napi::Value Size(const Napi::CallbackInfo& info);
  Napi::Value Offset(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ReadSync(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Shared(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Clone(const Napi::CallbackInfo& info);
  Napi::Value View(const Napi::CallbackInfo& info);
  Napi::Value SameStorage(const Napi::CallbackInfo& info);

  std::optional<Tensor> t_;
  int64_t external_bytes_ = 0;  // reported to V8 so that dropped tensors are collected under memory pressure
  Napi::Env env_;
};

// ---------------------------------------------------------------------------------------------------------------
class Addon : public Napi::Addon<Addon> {
 public:
  Addon(Napi::Env env, Napi::Object exports);
  ~Addon();
  Addon(const Addon&) = delete;
  Addon& operator=(const Addon&) = delete;

  Context& ctx() { return *ctx_; }
  const std::shared_ptr<Context>& ctx_ptr() const { return ctx_; }
  Hub& hub() { return *hub_; }

  // A new JavaScript handle owning (or viewing) t.
  Napi::Object wrap(Napi::Env env, Tensor t, bool owns_storage) {
    Napi::Object o = tensor_ctor_.New({Napi::External<Addon>::New(env, this)});
    TensorHandle::Unwrap(o)->set(env, std::move(t), owns_storage);
    return o;
  }
  // The handle wrapped by v, or null when v is anything else (including an object that merely has its prototype).
  TensorHandle* handle_of(const Napi::Value& v) {
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(tensor_ctor_.Value())) return nullptr;
    void* p = nullptr;
    if (napi_unwrap(v.Env(), v, &p) != napi_ok || !p) return nullptr;
    return static_cast<TensorHandle*>(p);
  }
  const Tensor& unwrap(const Napi::Value& v, const char* op, const char* name) {
    TensorHandle* h = handle_of(v);
    if (!h) type_error(op, ": ", name, " must be a Tensor, got ", describe(v));
    return h->get(op, name);
  }
  bool is_token(const Napi::Value& v) const {
    return v.IsExternal() && v.As<Napi::External<Addon>>().Data() == this;
  }
  // Schedules dst <- src across (or within) devices without blocking the JavaScript thread.
  void copy_async(const Tensor& dst, const Tensor& src, const char* op);

 private:
  Napi::Value FromArray(const Napi::CallbackInfo& info);
  Napi::Value Full(const Napi::CallbackInfo& info);
  Napi::Value Random(const Napi::CallbackInfo& info);
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Backends(const Napi::CallbackInfo& info);
  Napi::Value BuildInfo(const Napi::CallbackInfo& info);
  Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
  Napi::Value NumThreads(const Napi::CallbackInfo& info);
  Napi::Value SynchronizeSync(const Napi::CallbackInfo& info);
  Napi::Value EmptyCache(const Napi::CallbackInfo& info);
  Napi::Value IsHandle(const Napi::CallbackInfo& info);
  Napi::Value RandomInto(const Napi::CallbackInfo& info);
  Napi::Value FillInto(const Napi::CallbackInfo& info);
  Napi::Value CopyInto(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);

  std::shared_ptr<Context> ctx_;
  Hub* hub_;  // shared with its thread-safe function (addon.cpp); closed by ~Addon
  Napi::FunctionReference tensor_ctor_;
};

// Registers every op of the kernel library on `exports` (ops.cpp).
void register_ops(Napi::Env env, Napi::Object exports);
// backends().distributed: whether MPI and NCCL were found, and why not (ops_distributed.cpp).
Napi::Object distributed_report(Napi::Env env, Context& ctx);

}  // namespace sf::js
