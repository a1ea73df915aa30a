// args.h — turning JavaScript values into validated C++ values, or throwing an error that names the op, the argument
// and what was received; and the checks of tensor arguments (dtype, shape, rank, aliasing) that name the op and the
// argument. Nothing here touches tensor memory.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "../core/device.h"
#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/tensor.h"

namespace sf::js {

// A short description of a JavaScript value for error messages: "undefined", "string 'abc'", "number NaN", "object".
std::string describe(const Napi::Value& v);

std::string get_string(const Napi::Value& v, const char* op, const char* name);
// Any finite number (or NaN/±Infinity when allow_nonfinite).
double get_number(const Napi::Value& v, const char* op, const char* name, bool allow_nonfinite = false);
// The one float32-range check for every float the kernels take (alpha, beta, scale, eps, learning rates, ...): a
// finite number whose float32 rounding is finite, and not 0 unless it is 0 (1e-46 would silently become 0).
float narrow_f32(double x, const char* op, const char* name);
float get_f32(const Napi::Value& v, const char* op, const char* name);
// An integer Number in [lo, hi].
int64_t get_int(const Napi::Value& v, const char* op, const char* name, int64_t lo, int64_t hi);
// A non-negative safe integer Number or a BigInt in [0, 2^64).
uint64_t get_u64(const Napi::Value& v, const char* op, const char* name);
Shape get_shape(const Napi::Value& v, const char* op, const char* name);
DType get_dtype(const Napi::Value& v, const char* op);
Device get_device(const Napi::Value& v, const char* op);
void expect_args(const Napi::CallbackInfo& info, size_t n, const char* op);

// ---- tensor checks (they read a tensor's description, never its memory) ------------------------------------------
void check_dtype(const Tensor& t, DType d, const char* op, const char* name);
void check_shape(const Tensor& t, const Shape& s, const char* op, const char* name);
void check_rank(const Tensor& t, size_t lo, size_t hi, const char* op, const char* name);
// Whether the two tensors' element ranges share any byte of one storage.
bool overlaps(const Tensor& a, const Tensor& b);
// An output must not overlap an input it is computed from (unless the kernel says it may alias):
// "<op>: <out_name> must not overlap <in_name> (they share memory)".
void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name, const char* op);
// A tensor and the name its errors give it; a null tensor (an optional argument not given) is skipped.
using NamedTensor = std::pair<const Tensor*, const char*>;
// Every tensor an op writes must share no memory with any tensor it reads, nor with any other tensor it writes
// (inputs may share memory with each other). For each written tensor in order: check_disjoint against each read
// tensor in order, then against each later written tensor; the first overlapping pair throws, in check_disjoint's
// words with the written tensor named first.
void check_all_disjoint(const char* op, std::initializer_list<NamedTensor> written,
                        std::initializer_list<NamedTensor> read = {});

}  // namespace sf::js
