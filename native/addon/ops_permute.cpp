// ops_permute.cpp — bindings for the head split/merge permutation (kernel in native/cpu/permute.cpp).
//
//   permute0213(src, out | null, {accumulate = false}) -> out
//     src (A, B, C, D) float32; out (A, C, B, D) = src with the two middle dimensions swapped, allocated when null.
//     accumulate adds into out (a backward pass) and needs an out.
//   splitHeads(x, heads) -> out
//     x (B, T, H * Dh) float32, heads = H a positive integer dividing the last dimension; out (B, H, T, Dh) is new.
//   mergeHeads(x, out | null, {accumulate = false}) -> out
//     x (B, H, T, Dh) float32; out (B, T, H * Dh), allocated when null; accumulate adds into out and needs an out.
// out must not share memory with the input (the permutation is not done in place).
#include <limits>

#include "../cpu/kernels.h"
#include "ops.h"

namespace sf::js {

namespace {

// Checks the optional out (shape oshape, or allocates it) against src; every check precedes any memory access.
Tensor out_or_new(const OpArgs& args, const std::optional<Tensor>& out, const Shape& oshape, const Tensor& src,
                  const char* src_name, bool accumulate) {
  const char* op = args.op();
  if (accumulate && !out) range_error(op, ": accumulate = true adds into out, but no out was given");
  if (!out) return args.output(oshape, DType::f32, args.device());
  check_dtype(*out, DType::f32, op, "out");
  args.same_device(*out, "out");
  check_shape(*out, oshape, op, "out");
  check_disjoint(*out, "out", src, src_name, op);
  if (accumulate)
    args.update(*out);
  else
    args.write(*out);
  return *out;
}

// Submits dst (A, C, B, D) (= or +=) src (A, B, C, D).
void submit(const OpArgs& args, const Tensor& src, const Tensor& dst, int64_t A, int64_t B, int64_t C, int64_t D,
            bool accumulate) {
  args.run({src, dst}, SF_KERNEL(permute0213, src.data<float>(), dst.data<float>(), A, B, C, D, accumulate));
}

Napi::Value Permute0213(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "permute0213", 1);
    const char* op = args.op();
    Tensor src = args.tensor(0, "src");
    std::optional<Tensor> out = args.maybe_tensor(1, "out");
    Napi::Object o = args.options(2);
    const bool acc = args.opt_bool(o, "accumulate", false);
    check_dtype(src, DType::f32, op, "src");
    args.same_device(src, "src");
    check_rank(src, 4, 4, op, "src");
    const int64_t A = src.shape[0], B = src.shape[1], C = src.shape[2], D = src.shape[3];
    Tensor dst = out_or_new(args, out, {A, C, B, D}, src, "src", acc);
    submit(args, src, dst, A, B, C, D, acc);
    return out ? args.arg(1) : args.wrap(dst);
  });
}

Napi::Value SplitHeads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "splitHeads", 2);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    const int64_t H = get_int(args[1], op, "heads", 1, std::numeric_limits<int32_t>::max());
    check_dtype(x, DType::f32, op, "x");
    args.same_device(x, "x");
    check_rank(x, 3, 3, op, "x");
    const int64_t B = x.shape[0], T = x.shape[1], HD = x.shape[2];
    if (HD % H != 0)
      range_error(op, ": heads = ", H, " must divide the last dimension of x (B, T, H * Dh), got x ", shape_of(x));
    const int64_t Dh = HD / H;
    Tensor dst = args.output({B, H, T, Dh}, DType::f32, args.device());
    submit(args, x, dst, B, T, H, Dh, false);  // (B, T, H, Dh) -> (B, H, T, Dh)
    return args.wrap(dst);
  });
}

Napi::Value MergeHeads(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    OpArgs args(info, "mergeHeads", 1);
    const char* op = args.op();
    Tensor x = args.tensor(0, "x");
    std::optional<Tensor> out = args.maybe_tensor(1, "out");
    Napi::Object o = args.options(2);
    const bool acc = args.opt_bool(o, "accumulate", false);
    check_dtype(x, DType::f32, op, "x");
    args.same_device(x, "x");
    check_rank(x, 4, 4, op, "x");
    const int64_t B = x.shape[0], H = x.shape[1], T = x.shape[2], Dh = x.shape[3];
    const int64_t HD = checked_numel({H, Dh}, op);  // H * Dh, bounded even when x is empty
    Tensor dst = out_or_new(args, out, {B, T, HD}, x, "x", acc);
    submit(args, x, dst, B, H, T, Dh, acc);  // (B, H, T, Dh) -> (B, T, H, Dh)
    return out ? args.arg(1) : args.wrap(dst);
  });
}

}  // namespace

void register_permute_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("permute0213", Napi::Function::New(env, Permute0213, "permute0213"));
  exports.Set("splitHeads", Napi::Function::New(env, SplitHeads, "splitHeads"));
  exports.Set("mergeHeads", Napi::Function::New(env, MergeHeads, "mergeHeads"));
}

}  // namespace sf::js
