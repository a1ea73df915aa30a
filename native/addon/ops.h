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

#include "addon.h"

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
  int64_t opt_int(const Napi::Object& o, const char* key, int64_t def, int64_t lo, int64_t hi) const;
  uint64_t opt_u64(const Napi::Object& o, const char* key, uint64_t def) const;
  std::string opt_string(const Napi::Object& o, const char* key, const char* def,
                         std::initializer_list<const char*> allowed) const;
  std::optional<Tensor> opt_tensor(const Napi::Object& o, const char* key) const;

  // A new tensor on `dev` (validated shape; allocation errors name the op).
  Tensor output(const Shape& shape, DType dt, Device dev) const;
  Napi::Value wrap(Tensor t) const { return addon_.wrap(env(), std::move(t), true); }
  // The same tensor object passed in by the caller is returned for in-place/accumulating outputs.
  Napi::Value arg(size_t i) const { return info_[i]; }

  // Submits fn(pool) to the CPU stream. `keep` holds every tensor the kernel touches until it has run.
  void run_cpu(std::vector<Tensor> keep, std::function<void(ThreadPool&)> fn) const;

 private:
  const Napi::CallbackInfo& info_;
  const char* op_;
  Addon& addon_;
};

void check_dtype(const Tensor& t, DType d, const char* op, const char* name);
void check_shape(const Tensor& t, const Shape& s, const char* op, const char* name);
void check_rank(const Tensor& t, size_t lo, size_t hi, const char* op, const char* name);
// The kernels of this op exist on the CPU; CUDA tensors are refused with a clear error until the CUDA kernels land.
void check_cpu(const Tensor& t, const char* op, const char* name);
// Whether the two tensors' element ranges share any byte of one storage.
bool overlaps(const Tensor& a, const Tensor& b);
// An output must not overlap an input it is computed from (unless the kernel says it may alias).
void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name, const char* op);
// Every element of x is finite? (reads memory: only for host-side checks after synchronisation)
std::string shape_of(const Tensor& t);

}  // namespace sf::js
