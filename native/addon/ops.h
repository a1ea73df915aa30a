// ops.h — helpers for the op bindings (ops_*.cpp): reading tensor and option arguments with checks that name the op,
// allocating outputs, and submitting the kernel to the device stream with the tensors it uses kept alive.
//
// An op binding does, in order: read and check every argument (shapes, dtypes, devices, aliasing), allocate its
// outputs, submit the kernel, return the outputs. Nothing touches tensor memory before the checks are done.
#pragma once
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "../../cuda/kernels.h"
#include "addon.h"

// SF_CUDA(lambda): the CUDA half of an op (a callable taking the device's sf::cuda::Stream) in a build with CUDA, and
// nullptr in a build without it (node-gyp, or cmake-js with SHAREDFORMER_CUDA=OFF), so that such a build never
// references, hence never links, a sf::cuda:: kernel. No tensor can live on a CUDA device in that build.
// SF_CUDA_ONLY(statements): statements compiled only in a build with CUDA.
#if SHAREDFORMER_WITH_CUDA
#define SF_CUDA(...) __VA_ARGS__
#define SF_CUDA_ONLY(...) __VA_ARGS__
#else
#define SF_CUDA(...) nullptr
#define SF_CUDA_ONLY(...)
#endif

// SF_ON_DEVICE(statements): both kernel arguments of OpArgs::run() from one body, compiled once per device: in the
// first `sf_dev` is the ThreadPool& and `sf_k` the namespace sf::cpu, in the second (SF_CUDA: nullptr in a build
// without CUDA) `sf_dev` is the device's cuda::Stream and `sf_k` sf::cuda. Each lambda captures by value what the body
// names (the tensors, hence their storage, stay alive until the task has run, as with explicit captures).
//   args.run({x, y}, SF_ON_DEVICE(sf_k::gelu_forward(sf_dev, x.data<float>(), y.data<float>(), n)));
// SF_KERNEL(kernel, args...): the common case, sf::cpu::kernel(pool, args...) on the CPU and
// sf::cuda::kernel(stream, args...) on CUDA — the kernel's arguments named once:
//   args.run({x, y}, SF_KERNEL(gelu_forward, x.data<float>(), y.data<float>(), n));
// An op whose two halves differ (an id check before the CUDA kernel, a different signature) writes two lambdas.
#define SF_ON_DEVICE(...)                                                              \
  [=]([[maybe_unused]] ::sf::ThreadPool & sf_dev) {                                   \
    namespace sf_k = ::sf::cpu;                                                        \
    __VA_ARGS__;                                                                       \
  },                                                                                   \
      SF_CUDA([=]([[maybe_unused]] ::sf::cuda::Stream sf_dev) {                        \
        namespace sf_k = ::sf::cuda;                                                   \
        __VA_ARGS__;                                                                   \
      })
#define SF_KERNEL(kernel, ...) SF_ON_DEVICE(sf_k::kernel(sf_dev, __VA_ARGS__))

namespace sf::js {

class OpArgs {
 public:
  OpArgs(const Napi::CallbackInfo& info, const char* op, size_t min_args);

  Napi::Env env() const { return info_.Env(); }
  const char* op() const { return op_; }
  Addon& addon() const { return addon_; }
  const Napi::Value operator[](size_t i) const { return info_[i]; }

  // A live Tensor argument (TypeError if not a Tensor, Error if disposed).
  Tensor tensor(size_t i, const char* name) const;
  // null or undefined -> nullopt, else as tensor().
  std::optional<Tensor> maybe_tensor(size_t i, const char* name) const;
  // The options object at i (undefined -> empty object).
  Napi::Object options(size_t i) const;

  // Option readers: absent (undefined) keys give the default.
  bool opt_bool(const Napi::Object& o, const char* key, bool def) const;
  double opt_number(const Napi::Object& o, const char* key, double def) const;  // finite
  float opt_f32(const Napi::Object& o, const char* key, float def) const;       // narrow_f32 (args.h)
  int64_t opt_int(const Napi::Object& o, const char* key, int64_t def, int64_t lo, int64_t hi) const;
  uint64_t opt_u64(const Napi::Object& o, const char* key, uint64_t def) const;
  std::string opt_string(const Napi::Object& o, const char* key, const char* def,
                         std::initializer_list<const char*> allowed) const;
  std::optional<Tensor> opt_tensor(const Napi::Object& o, const char* key) const;

  // A new tensor on `dev` (validated shape; allocation errors name the op). It is one of the op's written tensors.
  Tensor output(const Shape& shape, DType dt, Device dev) const;
  // The op's effects on tensors the caller passed (stream.h, design invariant 7): write(t) — the kernel overwrites t
  // without reading it (an `out` argument); update(t) — it reads and writes t (an accumulating gradient, a cache
  // appended to, an optimizer's parameters and moments); not_read(t) — t is kept alive only (no byte is read). Every
  // other tensor in run()'s `keep` is an input: a failed input fails the op, and the op's failure marks every written
  // tensor (outputs included) as failed.
  void write(const Tensor& t) const;
  void update(const Tensor& t) const;
  void not_read(const Tensor& t) const;
  Napi::Value wrap(Tensor t) const { return addon_.wrap(env(), std::move(t), true); }
  // The same tensor object passed in by the caller is returned for in-place/accumulating outputs.
  Napi::Value arg(size_t i) const { return info_[i]; }

  // Submits fn(pool) to the CPU stream. `keep` holds every tensor the kernel touches until it has run.
  void run_cpu(std::vector<Tensor> keep, std::function<void(ThreadPool&)> fn) const;

  // The device of the call. The first tensor passed to same_device() sets it; every later one must be on it (else an
  // error naming the op, both arguments and both devices). Before any tensor, the CPU.
  void same_device(const Tensor& t, const char* name) const;
  Device device() const { return dev_; }
  // Submits the op's kernel to the stream of the call's device: cpu_fn(pool) on the CPU, cuda_fn(stream) on a CUDA
  // device (after making that device current on the stream's thread; the kernels only enqueue work on the device's
  // one cudaStream). `keep` holds every tensor the kernel touches until it has been submitted; on CUDA, memory
  // released afterwards is reused only by later work on the same stream, hence after the kernel.
  void run(std::vector<Tensor> keep, std::function<void(ThreadPool&)> cpu_fn,
           std::function<void(cuda::Stream)> cuda_fn) const;

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
  Addon& addon_;
  Effects effects(std::vector<Tensor> keep) const;

  mutable std::vector<Tensor> writes_, not_read_;
  mutable Device dev_{};
  mutable const char* dev_name_ = nullptr;  // the argument that set dev_
};

// float32 (check_dtype) and on the call's device (OpArgs::same_device): the check of most tensor arguments.
void check_f32_dev(const OpArgs& args, const Tensor& t, const char* name);
// t's shape as text, "[2, 3]".
std::string shape_of(const Tensor& t);

#if SHAREDFORMER_WITH_CUDA
// On CUDA: the first id of ids (n) outside [0, hi) and != skip (when has_skip), and its value; {-1, 0} when all are
// valid. Runs inside the op's stream task: ids uploaded from the host and not written since are decided there from
// the bounds the upload noted (no synchronisation); other ids by cuda::check_ids (which synchronises the stream).
std::pair<int64_t, int32_t> bad_id(Backend& be, cuda::Stream s, const Tensor& ids, int64_t n, int32_t hi,
                                   bool has_skip, int32_t skip, const char* op);
#endif

}  // namespace sf::js
