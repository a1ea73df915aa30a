// ops.cpp — the argument helpers for op bindings, and the registry that puts every op on the addon's exports.
#include "ops.h"

namespace sf::js {

// Each ops_*.cpp defines one of these; add a line here when adding a file.
void register_matmul_ops(Napi::Env env, Napi::Object exports);
void register_kvcache_ops(Napi::Env env, Napi::Object exports);
void register_permute_ops(Napi::Env env, Napi::Object exports);
void register_norm_ops(Napi::Env env, Napi::Object exports);
void register_train_ops(Napi::Env env, Napi::Object exports);
void register_attention_ops(Napi::Env env, Napi::Object exports);

void register_ops(Napi::Env env, Napi::Object exports) {
  register_matmul_ops(env, exports);
  register_kvcache_ops(env, exports);
  register_permute_ops(env, exports);
  register_norm_ops(env, exports);
  register_train_ops(env, exports);
  register_attention_ops(env, exports);
}

OpArgs::OpArgs(const Napi::CallbackInfo& info, const char* op, size_t min_args)
    : info_(info), op_(op), addon_(*info.Env().GetInstanceData<Addon>()) {
  expect_args(info, min_args, op);
}

Tensor OpArgs::tensor(size_t i, const char* name) const { return addon_.unwrap(info_[i], op_, name); }

std::optional<Tensor> OpArgs::maybe_tensor(size_t i, const char* name) const {
  Napi::Value v = info_[i];
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return addon_.unwrap(v, op_, name);
}

Napi::Object OpArgs::options(size_t i) const {
  Napi::Value v = info_[i];
  if (v.IsUndefined()) return Napi::Object::New(env());
  if (!v.IsObject() || v.IsArray() || v.IsFunction()) type_error(op_, ": options must be an object, got ", describe(v));
  return v.As<Napi::Object>();
}

bool OpArgs::opt_bool(const Napi::Object& o, const char* key, bool def) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsBoolean()) type_error(op_, ": option ", key, " must be a boolean, got ", describe(v));
  return v.As<Napi::Boolean>().Value();
}

double OpArgs::opt_number(const Napi::Object& o, const char* key, double def) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  return get_number(v, op_, cat("option ", key).c_str());
}

int64_t OpArgs::opt_int(const Napi::Object& o, const char* key, int64_t def, int64_t lo, int64_t hi) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  return get_int(v, op_, cat("option ", key).c_str(), lo, hi);
}

uint64_t OpArgs::opt_u64(const Napi::Object& o, const char* key, uint64_t def) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  return get_u64(v, op_, cat("option ", key).c_str());
}

std::string OpArgs::opt_string(const Napi::Object& o, const char* key, const char* def,
                               std::initializer_list<const char*> allowed) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  std::string s = get_string(v, op_, cat("option ", key).c_str());
  std::string list;
  for (const char* a : allowed) {
    if (s == a) return s;
    list += cat(list.empty() ? "" : ", ", "'", a, "'");
  }
  type_error(op_, ": option ", key, " must be one of ", list, ", got '", s, "'");
}

std::optional<Tensor> OpArgs::opt_tensor(const Napi::Object& o, const char* key) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return addon_.unwrap(v, op_, cat("option ", key).c_str());
}

Tensor OpArgs::output(const Shape& shape, DType dt, Device dev) const {
  return empty_tensor(addon_.ctx().backend(dev, op_).allocator(), shape, dt, op_);
}

void OpArgs::run_cpu(std::vector<Tensor> keep, std::function<void(ThreadPool&)> fn) const {
  ThreadPool* pool = &addon_.ctx().pool();
  addon_.ctx().cpu().stream().submit(op_, [keep = std::move(keep), fn = std::move(fn), pool] { fn(*pool); });
}

void check_dtype(const Tensor& t, DType d, const char* op, const char* name) {
  if (t.dtype != d) type_error(op, ": ", name, " must be ", dtype_name(d), ", got ", t.describe());
}

void check_shape(const Tensor& t, const Shape& s, const char* op, const char* name) {
  if (t.shape != s) range_error(op, ": ", name, " must have shape ", shape_str(s), ", got ", shape_str(t.shape));
}

void check_rank(const Tensor& t, size_t lo, size_t hi, const char* op, const char* name) {
  if (t.rank() < lo || t.rank() > hi) {
    if (lo == hi) range_error(op, ": ", name, " must have rank ", lo, ", got shape ", shape_str(t.shape));
    range_error(op, ": ", name, " must have rank ", lo, " to ", hi, ", got shape ", shape_str(t.shape));
  }
}

void check_cpu(const Tensor& t, const char* op, const char* name) {
  if (!t.device().is_cpu())
    type_error(op, ": ", name, " is on ", t.device().str(), ", but this build has the ", op,
               " kernel on the CPU only; move the tensors with .to('cpu')");
}

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage != b.storage) return false;
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  return a.nbytes() && b.nbytes() && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name, const char* op) {
  if (overlaps(out, in)) range_error(op, ": ", out_name, " must not overlap ", in_name, " (they share memory)");
}

std::string shape_of(const Tensor& t) { return shape_str(t.shape); }

}  // namespace sf::js
