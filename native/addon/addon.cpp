// addon.cpp — the Node-API binding: one Addon instance per JavaScript environment (main thread or worker thread),
// holding that environment's Context (thread pool, backends, streams). No static mutable state.
//
// Every function validates its arguments (args.h) before any memory is touched and turns sf::Error into a JavaScript
// TypeError / RangeError / Error whose message names the function and the offending values.
#include "addon.h"

#include <unordered_map>

#include "../../cuda/l2_plan.h"
#include "../cpu/cpu_features.h"
#include "../cpu/simd.h"

#ifndef SHAREDFORMER_BUILDER
#define SHAREDFORMER_BUILDER "unknown"
#endif
#ifndef SHAREDFORMER_VERSION
#define SHAREDFORMER_VERSION "0.0.0"
#endif

namespace sf::js {

namespace {

// On src's stream thread, after the work before it: copies src into host memory at dst (src.numel() floats for bf16,
// src.nbytes() otherwise), unless the op that wrote src failed; returns that failure, or the copy's own, or null.
FailurePtr copy_out(Backend& b, const Tensor& src, void* dst, const char* what) {
  FailurePtr f = src.failure();
  if (f) return std::make_shared<Failure>(Failure{f->kind, cat(what, ": this tensor holds the output of a failed op: ", f->message)});
  try {
    if (src.numel() == 0) return nullptr;
    if (src.dtype == DType::bf16) {
      std::vector<uint16_t> tmp(static_cast<size_t>(src.numel()));
      b.copy_to_host(tmp.data(), src);
      float* out = static_cast<float*>(dst);
      for (size_t i = 0; i < tmp.size(); ++i) out[i] = bf16_to_f32(tmp[i]);
    } else {
      b.copy_to_host(dst, src);
    }
  } catch (const Error& e) {
    return std::make_shared<Failure>(Failure{e.kind(), cat(what, " (", b.stream().name(), " stream): ", e.what())});
  } catch (const std::exception& e) {
    return std::make_shared<Failure>(Failure{ErrorKind::Generic, cat(what, " (", b.stream().name(), " stream): ", e.what())});
  }
  return nullptr;
}

// Bytes of the host array that a read of t produces (bf16 is widened to float32).
size_t host_bytes(const Tensor& t) {
  return static_cast<size_t>(t.numel()) * (t.dtype == DType::bf16 ? 4 : dtype_size(t.dtype));
}

Napi::Value typed_array_over(Napi::Env env, Napi::ArrayBuffer ab, DType dt, size_t n) {
  if (dt == DType::i32) return Napi::Int32Array::New(env, n, ab, 0);
  return Napi::Float32Array::New(env, n, ab, 0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Promises settled from device streams (design invariant 5: waiting costs nothing). A read or synchronize() registers
// a promise here on the JavaScript thread and submits a task to the device stream; when that task has run, the stream
// thread posts the outcome through one thread-safe function, and the promise settles on the JavaScript thread. No
// libuv pool thread is held while the work runs. The thread-safe function is referenced (keeps the event loop alive)
// only while a promise is pending, as an AsyncWorker would be.
//
// Lifetime: the Hub has two owners, the Addon and its thread-safe function, and is deleted when both have let go.
// At environment teardown Node may finalize the thread-safe function before or after the Addon is destroyed: the
// finalizer marks it finalized (under the lock that post() takes, so a stream task never calls a finalized function),
// and the Addon, after draining every stream, closes the Hub (releasing the function unless Node already did).
class Hub {
 public:
  using OnOk = std::function<Napi::Value(Napi::Env)>;

  static Hub* create(Napi::Env env) {
    Hub* h = new Hub();
    h->tsfn_ = Tsfn::New(env, "sharedformer", 0, 1, h, [](Napi::Env, void*, Hub* self) { self->finalized(); });
    h->tsfn_.Unref(env);
    return h;
  }
  // JavaScript thread: a new pending promise, resolved with on_ok(env) or rejected with the posted failure.
  std::pair<uint64_t, Napi::Promise> add(Napi::Env env, OnOk on_ok) {
    const uint64_t id = ++next_id_;
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Promise p = d.Promise();
    pending_.emplace(id, Pending{std::move(d), std::move(on_ok)});
    if (pending_.size() == 1) tsfn_.Ref(env);
    return {id, p};
  }
  // Any thread (a stream task): settles promise `id`; a null failure resolves it.
  void post(uint64_t id, FailurePtr failure) {
    std::lock_guard<std::mutex> lk(mu_);
    if (finalized_) return;  // the environment is shutting down: nobody is left to tell
    auto* p = new Posted{id, std::move(failure)};
    if (tsfn_.NonBlockingCall(p) != napi_ok) delete p;
  }
  // JavaScript thread, from ~Addon once every stream has drained: drops what is pending and lets go.
  void close() {
    closed_ = true;
    pending_.clear();
    bool release;
    {
      std::lock_guard<std::mutex> lk(mu_);
      release = !finalized_;
    }
    if (release) tsfn_.Release();
    drop();
  }

 private:
  struct Pending {
    Napi::Promise::Deferred deferred;
    OnOk on_ok;
  };
  struct Posted {
    uint64_t id;
    FailurePtr failure;
  };
  static void call_js(Napi::Env env, Napi::Function, Hub* self, Posted* posted);
  using Tsfn = Napi::TypedThreadSafeFunction<Hub, Posted, &Hub::call_js>;

  Hub() = default;
  void finalized() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      finalized_ = true;
    }
    drop();
  }
  void drop() {
    if (owners_.fetch_sub(1) == 1) delete this;
  }

  Tsfn tsfn_;
  std::unordered_map<uint64_t, Pending> pending_;  // JavaScript thread only
  uint64_t next_id_ = 0;
  bool closed_ = false;  // JavaScript thread only
  std::mutex mu_;
  bool finalized_ = false;  // guarded by mu_
  std::atomic<int> owners_{2};
};

void Hub::call_js(Napi::Env env, Napi::Function, Hub* self, Posted* posted) {
  std::unique_ptr<Posted> owned(posted);
  if (static_cast<napi_env>(env) == nullptr || !self || self->closed_) return;  // teardown: nothing left to tell
  auto it = self->pending_.find(posted->id);
  if (it == self->pending_.end()) return;
  Pending p = std::move(it->second);
  self->pending_.erase(it);
  if (self->pending_.empty()) self->tsfn_.Unref(env);
  // Settling must not throw out of this callback (an environment being torn down, say).
  try {
    if (posted->failure)
      p.deferred.Reject(to_js_error(env, posted->failure->kind, posted->failure->message.c_str()).Value());
    else
      p.deferred.Resolve(p.on_ok(env));
  } catch (const Napi::Error& e) {
    try {
      p.deferred.Reject(e.Value());
    } catch (...) {
    }
  } catch (const std::exception& e) {
    try {
      p.deferred.Reject(Napi::Error::New(env, e.what()).Value());
    } catch (...) {
    }
  }
}

// The outcome of synchronize() from the failures the streams handed out (each once): null when none, else one
// failure listing every op, with the first failure's kind.
FailurePtr summarize(const char* what, const std::vector<FailurePtr>& fs, size_t dropped) {
  if (fs.empty() && !dropped) return nullptr;
  std::string msg = cat(what, ": ", fs.size() + dropped, " op(s) failed since the last synchronize: ");
  for (size_t i = 0; i < fs.size(); ++i) msg += cat(i ? "; " : "", fs[i]->message);
  if (dropped) msg += cat("; and ", dropped, " more");
  return std::make_shared<Failure>(Failure{fs.empty() ? ErrorKind::Generic : fs[0]->kind, msg});
}

// ---------------------------------------------------------------------------------------------------------------
// TensorHandle implementation

Napi::Function TensorHandle::Define(Napi::Env env) {
  return DefineClass(env, "TensorHandle",
                     {
                         InstanceAccessor<&TensorHandle::Shape_>("shape"),
                         InstanceAccessor<&TensorHandle::DType_>("dtype"),
                         InstanceAccessor<&TensorHandle::Device_>("device"),
                         InstanceAccessor<&TensorHandle::Size>("size"),
                         InstanceAccessor<&TensorHandle::Offset>("offset"),
                         InstanceAccessor<&TensorHandle::Disposed>("disposed"),
                         InstanceMethod<&TensorHandle::Dispose>("dispose"),
                         InstanceMethod<&TensorHandle::ReadSync>("readSync"),
                         InstanceMethod<&TensorHandle::Read>("read"),
                         InstanceMethod<&TensorHandle::Shared>("shared"),
                         InstanceMethod<&TensorHandle::To>("to"),
                         InstanceMethod<&TensorHandle::Clone>("clone"),
                         InstanceMethod<&TensorHandle::View>("view"),
                         InstanceMethod<&TensorHandle::SameStorage>("sameStorage"),
                     });
}

TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info), env_(info.Env()) {
  Addon* a = info.Env().GetInstanceData<Addon>();
  if (info.Length() < 1 || !a || !a->is_token(info[0]))
    throw Napi::TypeError::New(info.Env(),
                               "TensorHandle: handles are made by sharedformer's tensor functions, not with `new`");
}

TensorHandle::~TensorHandle() { release(); }

void TensorHandle::set(Napi::Env env, Tensor t, bool owns_storage) {
  t.storage->allocator().counters().tensors.fetch_add(1);
  if (owns_storage) {
    external_bytes_ = static_cast<int64_t>(t.storage->bytes());
    if (external_bytes_) Napi::MemoryManagement::AdjustExternalMemory(env, external_bytes_);
  }
  t_ = std::move(t);
}

void TensorHandle::release() {
  if (!t_) return;
  t_->storage->allocator().counters().tensors.fetch_sub(1);
  // The C call, not the throwing C++ wrapper: this runs in finalizers and during environment teardown.
  int64_t ignored = 0;
  if (external_bytes_) napi_adjust_external_memory(env_, -external_bytes_, &ignored);
  external_bytes_ = 0;
  t_.reset();
}

Addon& TensorHandle::addon() const { return *env_.GetInstanceData<Addon>(); }

Napi::Value TensorHandle::Shape_(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Tensor& t = get("Tensor.shape", "the tensor");
    Napi::Array a = Napi::Array::New(info.Env(), t.shape.size());
    for (size_t i = 0; i < t.shape.size(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(t.shape[i]));
    return a;
  });
}
Napi::Value TensorHandle::DType_(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), dtype_name(get("Tensor.dtype", "the tensor").dtype));
  });
}
Napi::Value TensorHandle::Device_(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), get("Tensor.device", "the tensor").device().str());
  });
}
Napi::Value TensorHandle::Size(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(get("Tensor.size", "the tensor").numel()));
  });
}
Napi::Value TensorHandle::Offset(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(get("Tensor.offset", "the tensor").offset));
  });
}
Napi::Value TensorHandle::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !t_.has_value());
}
Napi::Value TensorHandle::Dispose(const Napi::CallbackInfo& info) {
  release();  // idempotent: disposing twice is allowed, as with PyTorch's `del`
  return info.Env().Undefined();
}

Napi::Value TensorHandle::ReadSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* what = "Tensor.dataSync";
    Tensor t = get(what, "the tensor");
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), host_bytes(t));
    Backend& b = addon().ctx().backend(t.device(), what);
    void* dst = ab.Data();
    FailurePtr f;
    b.stream().wait(b.stream().submit(what, [&] { f = copy_out(b, t, dst, what); }));
    if (f) throw Error(f->kind, f->message);
    return typed_array_over(info.Env(), ab, t.dtype, static_cast<size_t>(t.numel()));
  });
}

// The copy runs as a task on the tensor's stream (after the work that writes it) and writes straight into the new
// ArrayBuffer, which the pending promise keeps alive; the Hub settles the promise on the JavaScript thread.
Napi::Value TensorHandle::Read(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* what = "Tensor.data";
    Tensor t = get(what, "the tensor");
    Napi::Env env = info.Env();
    Addon& a = addon();
    Backend* b = &a.ctx().backend(t.device(), what);
    b->stream().refuse_if_capturing(what);  // before the promise exists: a recorded read would never settle it
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, host_bytes(t));
    auto ref = std::make_shared<Napi::Reference<Napi::ArrayBuffer>>(Napi::Persistent(ab));
    void* dst = ab.Data();
    const DType dt = t.dtype;
    const size_t n = static_cast<size_t>(t.numel());
    auto [id, promise] =
        a.hub().add(env, [ref, dt, n](Napi::Env e) { return typed_array_over(e, ref->Value(), dt, n); });
    Hub* hub = &a.hub();
    // The task lets go of the tensor before it posts: once the promise settles, the read holds no memory (a
    // memory() right after `await t.data(); t.dispose()` sees it freed).
    b->stream().submit(what, [b, held = std::optional<Tensor>(t), dst, id = id, hub, what]() mutable {
      FailurePtr f = copy_out(*b, *held, dst, what);
      held.reset();
      hub->post(id, std::move(f));
    });
    return promise;
  });
}

Napi::Value TensorHandle::Shared(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Tensor& t = get("Tensor.sharedData", "the tensor");
    if (!t.device().is_cpu())
      type_error("Tensor.sharedData: only CPU tensors can be viewed without a copy; this tensor is on ",
                 t.device().str(), " (use data() or dataSync())");
    if (t.dtype == DType::bf16)
      type_error("Tensor.sharedData: a bfloat16 tensor has no typed-array view (use data(), which widens to float32)");
    addon().ctx().cpu().stream().wait_all();  // the view shows the tensor as of now
    if (FailurePtr f = t.failure())
      throw Error(f->kind, cat("Tensor.sharedData: this tensor holds the output of a failed op: ", f->message));
    Napi::Env env = info.Env();
    size_t n = static_cast<size_t>(t.numel());
    if (n == 0) return typed_array_over(env, Napi::ArrayBuffer::New(env, 0), t.dtype, 0);
    // JavaScript may write these bytes at any time from now on, past the stream's write versions: no converted copy
    // may be trusted to mirror this storage, nor this storage to mirror another (Storage::mirrors).
    t.storage->mark_host_writable();
    auto* keep = new std::shared_ptr<Storage>(t.storage);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, t.raw(), t.nbytes(), [](Napi::Env, void*, std::shared_ptr<Storage>* k) { delete k; }, keep);
    return typed_array_over(env, ab, t.dtype, n);
  });
}

Napi::Value TensorHandle::To(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "Tensor.to");
    const Tensor& src = get("Tensor.to", "the tensor");
    Device d = get_device(info[0], "Tensor.to");
    Addon& a = addon();
    Backend& db = a.ctx().backend(d, "Tensor.to");
    Tensor out = empty_tensor(db.allocator(), src.shape, src.dtype, "Tensor.to");
    a.copy_async(out, src, "Tensor.to");
    return a.wrap(info.Env(), std::move(out), true);
  });
}

Napi::Value TensorHandle::Clone(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Tensor& src = get("Tensor.clone", "the tensor");
    Addon& a = addon();
    Tensor out = empty_tensor(a.ctx().backend(src.device(), "Tensor.clone").allocator(), src.shape, src.dtype, "Tensor.clone");
    a.copy_async(out, src, "Tensor.clone");
    return a.wrap(info.Env(), std::move(out), true);
  });
}

Napi::Value TensorHandle::View(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 2, "Tensor.view");
    const Tensor& base = get("Tensor.view", "the tensor");
    int64_t off = get_int(info[0], "Tensor.view", "offset", 0, kMaxNumel);
    Shape shape = get_shape(info[1], "Tensor.view", "shape");
    return addon().wrap(info.Env(), view_of(base, off, shape, "Tensor.view"), false);
  });
}

Napi::Value TensorHandle::SameStorage(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "Tensor.sameStorage");
    const Tensor& a = get("Tensor.sameStorage", "the tensor");
    const Tensor& b = addon().unwrap(info[0], "Tensor.sameStorage", "other");
    return Napi::Boolean::New(info.Env(), a.storage == b.storage);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Addon implementation

Addon::Addon(Napi::Env env, Napi::Object exports) : ctx_(std::make_shared<Context>()), hub_(Hub::create(env)) {
  Napi::Function ctor = TensorHandle::Define(env);
  tensor_ctor_ = Napi::Persistent(ctor);
  DefineAddon(exports, {
                           InstanceMethod<&Addon::FromArray>("fromArray"),
                           InstanceMethod<&Addon::Full>("full"),
                           InstanceMethod<&Addon::Random>("random"),
                           InstanceMethod<&Addon::Memory>("memory"),
                           InstanceMethod<&Addon::Backends>("backends"),
                           InstanceMethod<&Addon::BuildInfo>("buildInfo"),
                           InstanceMethod<&Addon::SetNumThreads>("setNumThreads"),
                           InstanceMethod<&Addon::NumThreads>("numThreads"),
                           InstanceMethod<&Addon::SynchronizeSync>("synchronizeSync"),
                           InstanceMethod<&Addon::Synchronize>("synchronize"),
                           InstanceMethod<&Addon::EmptyCache>("emptyCache"),
                           InstanceMethod<&Addon::IsHandle>("isHandle"),
                           InstanceMethod<&Addon::RandomInto>("randomInto"),
                           InstanceMethod<&Addon::FillInto>("fillInto"),
                           InstanceMethod<&Addon::CopyInto>("copyInto"),
                           InstanceValue("TensorHandle", ctor),
                       });
  register_ops(env, exports);
}

// t[:] = v; an int32 t on a device notes its one value (Storage::note_ids), as an upload does. In t's stream task.
static void fill_noting(Backend& b, const Tensor& t, double v) {
  b.fill(t, v);
  if (t.dtype == DType::i32 && !t.device().is_cpu())
    t.storage->note_ids(t.byte_begin(), t.byte_end(), IdBounds::single(static_cast<int32_t>(v)));
}

// Throws the failure of the op that wrote src (as an input failure of the copy), if it failed.
static void throw_if_failed(const Tensor& src) {
  if (FailurePtr f = src.failure()) throw Error(f->kind, cat("an input holds the output of a failed op: ", f->message));
}

// Drains every stream (so that no task can post to the Hub or write into an ArrayBuffer afterwards), then closes the
// Hub; the Context (threads, memory) goes with ctx_.
Addon::~Addon() {
  for (Backend* b : ctx_->backends()) {
    b->stream().abort_capture();  // a recording left open (the environment torn down inside record())
    b->stream().wait_all();
  }
  hub_->close();
}

void Addon::copy_async(const Tensor& dst, const Tensor& src, const char* op) {
  Backend& sb = ctx_->backend(src.device(), op);
  Backend& db = ctx_->backend(dst.device(), op);
  // Every path marks dst failed when the copy fails or src had failed (stream.h), and valid when it succeeds. Where
  // the copy waits on another stream, src's state is checked inside the task, after that wait.
  if (&sb == &db) {
    db.stream().submit(op, [&db, dst, src] { db.copy(dst, src); }, Effects{{src}, {dst}}, Stream::Record::Allow);
  } else if (src.device().is_cpu()) {  // host -> device: the device stream waits for the host's pending work
    uint64_t ready = sb.stream().last_ticket();
    db.stream().submit(
        op,
        [&sb, &db, dst, src, ready] {
          sb.stream().wait(ready);
          throw_if_failed(src);
          if (dst.dtype != DType::i32) {
            db.copy_from_host(dst, src.raw());
            return;
          }
          // ids: from a private copy, so that the bounds noted are those of the bytes uploaded even if host work
          // queued after this copy writes src meanwhile
          std::vector<char> staged(static_cast<const char*>(src.raw()), static_cast<const char*>(src.raw()) + src.nbytes());
          db.upload(dst, staged.data());
        },
        Effects{{}, {dst}});
  } else if (dst.device().is_cpu()) {  // device -> host: the host stream waits for the device's copy
    uint64_t done = sb.stream().submit(op, [&sb, dst, src] { sb.copy_to_host(dst.raw(), src); }, Effects{{src}, {dst}});
    db.stream().submit(op, [&sb, done] { sb.stream().wait(done); });
  } else {  // device -> device: staged through host memory
    auto staging = std::make_shared<std::vector<char>>(src.nbytes());
    auto src_failure = std::make_shared<FailurePtr>();
    uint64_t done = sb.stream().submit(op, [&sb, src, staging, src_failure] {
      *src_failure = src.failure();
      if (!*src_failure) sb.copy_to_host(staging->data(), src);
    });
    db.stream().submit(
        op,
        [&sb, &db, dst, staging, done, src_failure] {
          sb.stream().wait(done);
          if (const FailurePtr& f = *src_failure)
            throw Error(f->kind, cat("an input holds the output of a failed op: ", f->message));
          db.upload(dst, staging->data());
        },
        Effects{{}, {dst}});
  }
}

// fromArray(data: Float32Array | Int32Array | Uint16Array, shape, dtype, device)
Napi::Value Addon::FromArray(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* op = "tensor";
    expect_args(info, 4, op);
    Shape shape = get_shape(info[1], op, "shape");
    DType dt = get_dtype(info[2], op);
    Device dev = get_device(info[3], op);
    if (!info[0].IsTypedArray()) type_error(op, ": data must be a typed array, got ", describe(info[0]));
    Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
    napi_typedarray_type tt = ta.TypedArrayType();
    bool ok = (dt == DType::f32 && tt == napi_float32_array) || (dt == DType::i32 && tt == napi_int32_array) ||
              (dt == DType::bf16 && (tt == napi_float32_array || tt == napi_uint16_array));
    if (!ok)
      type_error(op, ": dtype '", dtype_name(dt), "' needs ",
                 dt == DType::i32 ? "an Int32Array" : dt == DType::f32 ? "a Float32Array" : "a Float32Array or Uint16Array",
                 " of data");
    int64_t n = checked_numel(shape, op);
    if (static_cast<int64_t>(ta.ElementLength()) != n)
      range_error(op, ": data has ", ta.ElementLength(), " elements but shape ", shape_str(shape), " needs ", n);
    Backend& b = ctx_->backend(dev, op);
    Tensor t = empty_tensor(b.allocator(), shape, dt, op);
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    // Copy out of the JavaScript array now: it may change after this call returns.
    std::vector<char> staged;
    const void* host = src;
    if (dt == DType::bf16 && tt == napi_float32_array) {
      staged.resize(t.nbytes());
      const float* f = reinterpret_cast<const float*>(src);
      uint16_t* h = reinterpret_cast<uint16_t*>(staged.data());
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(f[i]);
      host = staged.data();
    }
    if (n) {
      if (dev.is_cpu()) {
        std::memcpy(t.raw(), host, t.nbytes());  // fresh storage: no pending work can touch it
      } else {
        if (staged.empty()) staged.assign(src, src + t.nbytes());
        auto buf = std::make_shared<std::vector<char>>(std::move(staged));
        b.stream().submit(op, [&b, t, buf] { b.upload(t, buf->data()); }, Effects{{}, {t}}, Stream::Record::Allow);
      }
    }
    return wrap(info.Env(), std::move(t), true);
  });
}

// full(shape, value, dtype, device)
Napi::Value Addon::Full(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    // The JavaScript factory that called (zeros, ones, full), so that errors name it.
    std::string name = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "full";
    const char* op = name == "zeros" ? "zeros" : name == "ones" ? "ones" : "full";
    expect_args(info, 4, op);
    Shape shape = get_shape(info[0], op, "shape");
    DType dt = get_dtype(info[2], op);
    double v = get_number(info[1], op, "value", /*allow_nonfinite=*/dt != DType::i32);
    if (dt == DType::i32 && (std::floor(v) != v || v < -2147483648.0 || v > 2147483647.0))
      range_error(op, ": value for an int32 tensor must be an integer in [-2^31, 2^31), got ", describe(info[1]));
    Device dev = get_device(info[3], op);
    Backend& b = ctx_->backend(dev, op);
    Tensor t = empty_tensor(b.allocator(), shape, dt, op);
    if (t.numel()) b.stream().submit(op, [&b, t, v] { fill_noting(b, t, v); }, Effects{{}, {t}}, Stream::Record::Allow);
    return wrap(info.Env(), std::move(t), true);
  });
}

namespace {
struct RandomArgs {
  RandomKind kind;
  const char* op;
  uint64_t seed, offset;
  float a, b;
};
// (kind, seed, offset, a, b) at info[i], info[i+2..i+5]; the shape argument is read by the caller between kind and
// seed, so that errors name rand / randn once the kind is known.
RandomArgs parse_random_kind(const Napi::CallbackInfo& info, size_t i) {
  std::string kind_s = get_string(info[i], "random", "kind");
  RandomArgs r{};
  if (kind_s == "uniform")
    r.kind = RandomKind::Uniform;
  else if (kind_s == "normal")
    r.kind = RandomKind::Normal;
  else
    type_error("random: kind must be 'uniform' or 'normal', got '", kind_s, "'");
  r.op = r.kind == RandomKind::Uniform ? "rand" : "randn";
  return r;
}
void parse_random_params(const Napi::CallbackInfo& info, size_t i, RandomArgs& r) {
  r.seed = get_u64(info[i], r.op, "seed");
  r.offset = get_u64(info[i + 1], r.op, "offset");
  const bool u = r.kind == RandomKind::Uniform;
  double a = get_number(info[i + 2], r.op, u ? "low" : "mean");
  double b = get_number(info[i + 3], r.op, u ? "high" : "std");
  if (u && !(a <= b)) range_error(r.op, ": low (", a, ") must not exceed high (", b, ")");
  if (!u && b < 0) range_error(r.op, ": std must be non-negative, got ", b);
  r.a = static_cast<float>(a);
  r.b = static_cast<float>(b);
}
void submit_random(Backend& b, const Tensor& t, const RandomArgs& r) {
  if (t.numel())
    b.stream().submit(r.op, [&b, t, r] { b.random(t, r.kind, r.seed, r.offset, r.a, r.b); }, Effects{{}, {t}},
                      Stream::Record::Allow);
}
}  // namespace

// random(shape, kind: 'uniform' | 'normal', seed, offset, a, b, dtype, device)
Napi::Value Addon::Random(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 8, "random");
    RandomArgs r = parse_random_kind(info, 1);
    Shape shape = get_shape(info[0], r.op, "shape");
    parse_random_params(info, 2, r);
    DType dt = get_dtype(info[6], r.op);
    if (dt == DType::i32) type_error(r.op, ": dtype must be 'float32' or 'bfloat16', got 'int32'");
    Device dev = get_device(info[7], r.op);
    Backend& b = ctx_->backend(dev, r.op);
    Tensor t = empty_tensor(b.allocator(), shape, dt, r.op);
    submit_random(b, t, r);
    return wrap(info.Env(), std::move(t), true);
  });
}

// randomInto(tensor, kind, seed, offset, a, b): fills an existing float tensor (a parameter's window, say) in place.
Napi::Value Addon::RandomInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 6, "randomInto");
    RandomArgs r = parse_random_kind(info, 1);
    Tensor t = unwrap(info[0], r.op, "out");
    if (t.dtype == DType::i32) type_error(r.op, ": out must be float32 or bfloat16, got ", t.describe());
    parse_random_params(info, 2, r);
    submit_random(ctx_->backend(t.device(), r.op), t, r);
    return info[0];
  });
}

// copyInto(dst, src): dst[:] = src, same dtype and element count, across devices too.
Napi::Value Addon::CopyInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* op = "copyInto";
    expect_args(info, 2, op);
    Tensor dst = unwrap(info[0], op, "dst");
    Tensor src = unwrap(info[1], op, "src");
    if (dst.dtype != src.dtype) type_error(op, ": dst is ", dst.describe(), " but src is ", src.describe());
    if (dst.numel() != src.numel())
      range_error(op, ": dst has ", dst.numel(), " elements (", shape_str(dst.shape), ") but src has ", src.numel(), " (",
                  shape_str(src.shape), ")");
    if (dst.storage == src.storage && dst.raw() != src.raw()) {
      const char* a = static_cast<const char*>(dst.raw());
      const char* b = static_cast<const char*>(src.raw());
      if (a < b + src.nbytes() && b < a + dst.nbytes()) range_error(op, ": dst and src overlap");
    }
    if (dst.numel()) copy_async(dst, src, op);
    return info[0];
  });
}

// fillInto(tensor, value): t[:] = value, in place.
Napi::Value Addon::FillInto(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const char* op = "fill";
    expect_args(info, 2, op);
    Tensor t = unwrap(info[0], op, "out");
    double v = get_number(info[1], op, "value", /*allow_nonfinite=*/t.dtype != DType::i32);
    if (t.dtype == DType::i32 && (std::floor(v) != v || v < -2147483648.0 || v > 2147483647.0))
      range_error(op, ": value for an int32 tensor must be an integer in [-2^31, 2^31), got ", describe(info[1]));
    Backend& b = ctx_->backend(t.device(), op);
    // Filling overwrites every element, so it also clears a failure the tensor held (zeroing gradients after a
    // failed step, say).
    b.stream().submit(op, [&b, t, v] { if (t.numel()) fill_noting(b, t, v); }, Effects{{}, {t}}, Stream::Record::Allow);
    return info[0];
  });
}

Napi::Value Addon::Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (Backend* b : ctx_->backends()) {
    MemoryCounters& c = b->allocator()->counters();
    Napi::Object d = Napi::Object::New(env);
    d.Set("tensors", static_cast<double>(c.tensors.load()));
    d.Set("storages", static_cast<double>(c.storages.load()));
    d.Set("bytes", static_cast<double>(c.bytes.load()));
    d.Set("peakBytes", static_cast<double>(c.peak_bytes.load()));
    d.Set("cachedBytes", static_cast<double>(b->allocator()->cached_bytes()));
    d.Set("packedStorages", static_cast<double>(c.packed.load()));
    d.Set("packedBytes", static_cast<double>(c.packed_bytes.load()));
    out.Set(b->device().str(), d);
  }
  return out;
}

Napi::Value Addon::Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  CpuFeatures f = detect_cpu_features();
  cpu.Set("threads", ctx_->pool().threads());
  const simd::Isa isa = simd::best_isa();  // what the kernels run: the CPU's best, or SHAREDFORMER_ISA's choice
  cpu.Set("simd", isa == simd::Isa::Avx512 ? "avx512" : isa == simd::Isa::Avx2 ? "avx2" : "portable");
  Napi::Array feats = Napi::Array::New(env);
  for (const auto& s : f.list()) feats.Set(feats.Length(), s);
  cpu.Set("features", feats);
  out.Set("cpu", cpu);

  const CudaInfo& ci = ctx_->cuda_info();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", ci.compiled);
  cuda.Set("available", ci.available);
  // The persisting-L2 state of each CUDA backend in use, read on its stream after the work queued before (so that a
  // window asked for just before is reported): run_sync waits until that work has been handed to the GPU, not run.
  std::unordered_map<int, cuda::L2Report> l2;
  for (Backend* b : ctx_->backends()) {
    cuda::L2State* st = b->l2_state();
    if (!st) continue;
    cuda::L2Report r;
    b->stream().run_sync("backends", [st, &r] { r = cuda::l2_report(*st); });
    l2[b->device().index] = r;
  }
  Napi::Array devs = Napi::Array::New(env);
  for (const auto& d : ci.devices) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", cat(d.major, ".", d.minor));
    o.Set("totalMemory", static_cast<double>(d.total_bytes));
    o.Set("multiprocessors", d.multiprocessors);
    auto it = l2.find(d.index);
    cuda::L2Report r;
    if (it != l2.end()) r = it->second;
    else r.reason = "never requested: this device has not been used by this thread's addon instance";
    Napi::Object p = Napi::Object::New(env);
    p.Set("active", r.active);
    if (!r.active) p.Set("reason", r.reason);
    p.Set("window", cuda::l2_phase_name(r.phase));
    p.Set("maxSetAsideBytes", static_cast<double>(r.max_persisting));
    p.Set("setAsideBytes", static_cast<double>(r.carve_out_bytes));
    p.Set("windows", static_cast<double>(r.windows));
    p.Set("lastWindowBytes", static_cast<double>(r.last_bytes));
    p.Set("lastHitRatio", static_cast<double>(r.last_hit_ratio));
    if (!r.note.empty()) p.Set("note", r.note);
    o.Set("persistingL2", p);
    devs.Set(devs.Length(), o);
  }
  cuda.Set("devices", devs);
  if (!ci.available) cuda.Set("reason", ci.reason);
  cuda.Set("runtimeVersion", ci.runtime_version);
  cuda.Set("driverVersion", ci.driver_version);
  Napi::Array archs = Napi::Array::New(env);
  for (const auto& s : ci.architectures) archs.Set(archs.Length(), s);
  cuda.Set("architectures", archs);
  out.Set("cuda", cuda);
  out.Set("distributed", distributed_report(env, *ctx_));
  return out;
}

Napi::Value Addon::BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", SHAREDFORMER_VERSION);
  o.Set("builder", SHAREDFORMER_BUILDER);
  o.Set("cuda", ctx_->cuda_info().compiled);
  o.Set("napiVersion", NAPI_VERSION);
#if defined(__clang__)
  o.Set("compiler", cat("clang ", __clang_major__, ".", __clang_minor__));
#elif defined(__GNUC__)
  o.Set("compiler", cat("gcc ", __GNUC__, ".", __GNUC_MINOR__));
#endif
  return o;
}

Napi::Value Addon::SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    expect_args(info, 1, "setNumThreads");
    int64_t n = get_int(info[0], "setNumThreads", "threads", 1, 1024);
    // Resize between kernels: drain the CPU stream first, and resize on its thread.
    Backend& cpu = ctx_->cpu();
    ThreadPool& pool = ctx_->pool();
    cpu.stream().run_sync("setNumThreads", [&pool, n] { pool.set_threads(static_cast<int>(n)); });
    return info.Env().Undefined();
  });
}

Napi::Value Addon::NumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ctx_->pool().threads());
}

Napi::Value Addon::SynchronizeSync(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    std::vector<FailurePtr> all;
    size_t dropped_all = 0;
    for (Backend* b : ctx_->backends()) {
      b->stream().wait_all();
      size_t dropped = 0;
      for (FailurePtr& f : b->stream().take_failures(&dropped)) all.push_back(std::move(f));
      dropped_all += dropped;
    }
    if (FailurePtr f = summarize("synchronizeSync", all, dropped_all)) throw Error(f->kind, f->message);
    return info.Env().Undefined();
  });
}

// Whether v is a live-or-disposed TensorHandle made by this addon instance (not merely an object with its prototype).
Napi::Value Addon::IsHandle(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), info.Length() > 0 && handle_of(info[0]) != nullptr);
}

// Frees every allocator's cached blocks, after the queued work that might still use them has finished.
Napi::Value Addon::EmptyCache(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    for (Backend* b : ctx_->backends()) {
      b->stream().wait_all();
      b->allocator()->empty_cache();
    }
    return info.Env().Undefined();
  });
}

// One marker task per device stream; each takes its stream's failures when it runs (after all work submitted before
// it), and the last one to finish posts the outcome.
Napi::Value Addon::Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    struct Shared {
      std::mutex mu;
      size_t left;
      std::vector<FailurePtr> failures;
      size_t dropped = 0;
    };
    std::vector<Backend*> bs = ctx_->backends();
    for (Backend* b : bs) b->stream().refuse_if_capturing("synchronize");  // before the promise exists
    auto st = std::make_shared<Shared>();
    st->left = bs.size();
    auto [id, promise] = hub().add(info.Env(), [](Napi::Env e) { return e.Undefined(); });
    Hub* hub = hub_;
    for (Backend* b : bs) {
      b->stream().submit("synchronize", [b, st, hub, id = id] {
        size_t dropped = 0;
        std::vector<FailurePtr> fs = b->stream().take_failures(&dropped);
        bool last;
        {
          std::lock_guard<std::mutex> lk(st->mu);
          for (FailurePtr& f : fs) st->failures.push_back(std::move(f));
          st->dropped += dropped;
          last = --st->left == 0;
        }
        if (last) hub->post(id, summarize("synchronize", st->failures, st->dropped));
      });
    }
    return promise;
  });
}

}  // namespace sf::js

using SharedformerAddon = sf::js::Addon;
NODE_API_ADDON(SharedformerAddon)
