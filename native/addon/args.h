// args.h — turning JavaScript values into validated C++ values, or throwing an error that names the op, the argument
// and what was received. Nothing here touches tensor memory.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

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

}  // namespace sf::js
