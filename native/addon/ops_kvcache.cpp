// ops_kvcache.cpp — the binding for appending to a KV cache (kernel in native/cpu/kvcache.cpp).
//
//   kvAppend(cache, src, pos) -> cache
//     cache (B, H, Tmax, D) float32, src (B, H, n, D) float32 with the same B, H and D; pos an integer with
//     0 <= pos and pos + n <= Tmax. Writes cache[:, :, pos:pos+n, :] = src in place and returns the given cache
//     object; nothing else in the cache changes. src must not share memory with cache.
//     pos may also be an int32 tensor of one element on the cache's device, read when the op runs (a recorded decode
//     step replays with the position written there; ops_record.cpp): a position outside [0, Tmax - n] then fails
//     the op on its stream, which marks the cache failed. On CUDA the value comes from the bounds its upload noted
//     (writeInto), else from a copy to the host.
#include <optional>

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
    std::optional<Tensor> pos_t;
    int64_t pos = 0;
    if (args.addon().handle_of(args[2])) {
      pos_t = args.tensor(2, "pos");
      check_dtype(*pos_t, DType::i32, op, "pos");
      check_shape(*pos_t, {1}, op, "pos");
    } else {
      pos = get_int(args[2], op, "pos", 0, kMaxSafeInt);
    }
    check_dtype(cache, DType::f32, op, "cache");
    check_dtype(src, DType::f32, op, "src");
    args.same_device(cache, "cache");
    args.same_device(src, "src");
    check_rank(cache, 4, 4, op, "cache");
    check_rank(src, 4, 4, op, "src");
    const int64_t B = cache.shape[0], H = cache.shape[1], Tmax = cache.shape[2], D = cache.shape[3];
    if (pos_t) args.same_device(*pos_t, "pos");
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
    if (!pos_t) {
      args.run({src, cache}, SF_KERNEL(kv_append, src.data<float>(), cache.data<float>(), B, H, n, Tmax, D, pos));
      return args.arg(0);
    }
    const Tensor at = *pos_t;
    auto checked = [op, n, Tmax](int64_t p) {
      if (p < 0 || p + n > Tmax)
        range_error(op, ": pos (from a tensor) + n = ", p, " + ", n, " is outside the cache length Tmax = ", Tmax);
      return p;
    };
    SF_CUDA_ONLY(Backend* be = args.device().is_cpu() ? nullptr : &args.addon().ctx().backend(args.device(), op);)
    args.run(
        {src, cache, at},
        [=](ThreadPool& pool) {
          cpu::kv_append(pool, src.data<float>(), cache.data<float>(), B, H, n, Tmax, D, checked(*at.data<int32_t>()));
        },
        SF_CUDA([=](cuda::Stream s) {
          const auto known = at.storage->known_ids(at.byte_begin(), at.byte_end());
          int32_t p = 0;
          if (known && known->min1 == known->max1)
            p = static_cast<int32_t>(known->min1);
          else
            be->copy_to_host(&p, at);
          cuda::kv_append(s, src.data<float>(), cache.data<float>(), B, H, n, Tmax, D, checked(p));
        }));
    return args.arg(0);
  });
}

}  // namespace

void register_kvcache_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("kvAppend", Napi::Function::New(env, KvAppend, "kvAppend"));
}

}  // namespace sf::js
