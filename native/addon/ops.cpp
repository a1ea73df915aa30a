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
void register_device_ops(Napi::Env env, Napi::Object exports);
void register_distributed_ops(Napi::Env env, Napi::Object exports);
void register_text_ops(Napi::Env env, Napi::Object exports);
void register_record_ops(Napi::Env env, Napi::Object exports);

void register_ops(Napi::Env env, Napi::Object exports) {
  register_matmul_ops(env, exports);
  register_kvcache_ops(env, exports);
  register_permute_ops(env, exports);
  register_norm_ops(env, exports);
  register_train_ops(env, exports);
  register_attention_ops(env, exports);
  register_device_ops(env, exports);
  register_distributed_ops(env, exports);
  register_text_ops(env, exports);
  register_record_ops(env, exports);
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

float OpArgs::opt_f32(const Napi::Object& o, const char* key, float def) const {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  return get_f32(v, op_, cat("option ", key).c_str());
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
  Tensor t = empty_tensor(addon_.ctx().backend(dev, op_).allocator(), shape, dt, op_);
  write(t);
  return t;
}

void OpArgs::write(const Tensor& t) const {
  writes_.push_back(t);
  not_read_.push_back(t);
}
void OpArgs::update(const Tensor& t) const { writes_.push_back(t); }
void OpArgs::not_read(const Tensor& t) const { not_read_.push_back(t); }

namespace {
bool same_window(const Tensor& a, const Tensor& b) {
  return a.storage == b.storage && a.offset == b.offset && a.dtype == b.dtype && a.numel() == b.numel();
}
}  // namespace

// The reads are `keep` less one entry for each not-read tensor (so an output that is exactly an input, such as
// axpby's in-place `out`, stays a read through the input's own entry); the writes are every output and every tensor
// marked write() or update().
Effects OpArgs::effects(std::vector<Tensor> keep) const {
  Effects fx;
  std::vector<bool> skipped(not_read_.size(), false);
  for (Tensor& t : keep) {
    bool skip = false;
    for (size_t i = 0; i < not_read_.size() && !skip; ++i)
      if (!skipped[i] && same_window(t, not_read_[i])) skipped[i] = skip = true;
    if (!skip) fx.reads.push_back(std::move(t));
  }
  fx.writes = writes_;
  return fx;
}

void OpArgs::run_cpu(std::vector<Tensor> keep, std::function<void(ThreadPool&)> fn) const {
  ThreadPool* pool = &addon_.ctx().pool();
  // The effects hold every tensor the kernel touches (outputs are in keep too), so they keep them alive.
  addon_.ctx().cpu().stream().submit(op_, [fn = std::move(fn), pool] { fn(*pool); }, effects(std::move(keep)),
                                     Stream::Record::Allow);
}

void OpArgs::same_device(const Tensor& t, const char* name) const {
  if (!dev_name_) {
    dev_ = t.device();
    dev_name_ = name;
    return;
  }
  if (t.device() != dev_)
    type_error(op_, ": all tensors of one call must be on the same device, but ", dev_name_, " is on ", dev_.str(),
               " and ", name, " is on ", t.device().str(), "; move them with .to('", dev_.str(), "') or .to('",
               t.device().str(), "')");
}

void OpArgs::run(std::vector<Tensor> keep, std::function<void(ThreadPool&)> cpu_fn,
                 std::function<void(cuda::Stream)> cuda_fn) const {
  if (dev_.is_cpu()) {
    run_cpu(std::move(keep), std::move(cpu_fn));
    return;
  }
  if (!cuda_fn) error(op_, ": this build has no CUDA kernel for ", op_, " (tensors are on ", dev_.str(), ")");
  Backend* be = &addon_.ctx().backend(dev_, op_);
  be->stream().submit(
      op_,
      [fn = std::move(cuda_fn), be] {
        be->make_current();
        fn(static_cast<cuda::Stream>(be->native_stream()));
      },
      effects(std::move(keep)), Stream::Record::Allow);
}

void check_f32_dev(const OpArgs& args, const Tensor& t, const char* name) {
  check_dtype(t, DType::f32, args.op(), name);
  args.same_device(t, name);
}

std::string shape_of(const Tensor& t) { return shape_str(t.shape); }

#if SHAREDFORMER_WITH_CUDA
// On CUDA: the first id of ids (n) outside [0, hi) and != skip (when has_skip), and its value; {-1, 0} when all are
// valid. Runs inside the op's stream task. When the ids' bytes were uploaded from the host and nothing wrote them
// since, the bounds the upload noted decide it on the host (ids_known_valid: no device work, no synchronisation);
// otherwise — ids written by a kernel or a device copy, or bounds that cannot rule out a bad id — cuda::check_ids
// finds the first offending position on the device, which synchronises the stream.
std::pair<int64_t, int32_t> bad_id(Backend& be, cuda::Stream s, const Tensor& ids, int64_t n, int32_t hi,
                                   bool has_skip, int32_t skip, const char* op) {
  if (n <= 0) return {-1, 0};
  if (ids_known_valid(ids, n, 0, hi, has_skip, skip)) return {-1, 0};
  // Without an ignored value, "skip" 0 skips nothing that could be invalid (0 is in range when hi > 0); an empty
  // range with nothing ignored makes the first id the offending one.
  const int64_t at = hi <= 0 && !has_skip ? 0 : cuda::check_ids(s, ids.data<int32_t>(), n, 0, hi, has_skip ? skip : 0);
  if (at < 0) return {-1, 0};
  int32_t v = 0;
  be.copy_to_host(&v, view_of(ids, at, {1}, op));
  return {at, v};
}
#endif

}  // namespace sf::js
