// ops_kvcache.cpp — the binding for appending to a KV cache (kernel in native/cpu/kvcache.cpp).
//
//   kvAppend(cache, src, pos) -> cache
//     cache (B, H, Tmax, D) float32, src (B, H, n, D) float32 with the same B, H and D; pos an integer with
//     0 <= pos and pos + n <= Tmax. Writes cache[:, :, pos:pos+n, :] = src in place and returns the given cache
//     object; nothing else in the cache changes. src must not share memory with cache.
#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

constexpr int64_t kMaxSafeInt = (int64_t{1} << 53) - 1;

Napi::Value KvAppend(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "kvAppend", 3);
    const char* op = args.op();
    Tensor cache = args.tensor(0, "cache");
    Tensor src = args.tensor(1, "src");
    const int64_t pos = get_int(args[2], op, "pos", 0, kMaxSafeInt);
    check_dtype(cache, DType::f32, op, "cache");
    check_dtype(src, DType::f32, op, "src");
    args.same_device(cache, "cache");
    args.same_device(src, "src");
    check_rank(cache, 4, 4, op, "cache");
    check_rank(src, 4, 4, op, "src");
    const int64_t B = cache.shape[0], H = cache.shape[1], Tmax = cache.shape[2], D = cache.shape[3];
    const int64_t n = src.shape[2];
    if (src.shape[0] != B || src.shape[1] != H || src.shape[3] != D)
      range_error(op, ": src (B, H, n, D) must match cache (B, H, Tmax, D) in B, H and D, got src ", shape_of(src),
                  " and cache ", shape_of(cache));
    if (pos + n > Tmax)
      range_error(op, ": pos + n = ", pos, " + ", n, " exceeds the cache length Tmax = ", Tmax, " (cache ",
                  shape_of(cache), ", src ", shape_of(src), ")");
    check_disjoint(cache, "cache", src, "src", op);
    // Only a window of the cache is written, so the rest must already be valid: the cache is read and written.
    args.update(cache);
    args.run({src, cache}, SF_KERNEL(kv_append, src.data<float>(), cache.data<float>(), B, H, n, Tmax, D, pos));
    return args.arg(0);
  });
}

}  // namespace

void register_kvcache_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("kvAppend", Napi::Function::New(env, KvAppend, "kvAppend"));
}

}  // namespace sf::js
