#include "args.h"

namespace sf::js {

static constexpr double kMaxSafe = 9007199254740991.0;  // 2^53 - 1

std::string describe(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return v.As<Napi::Boolean>().Value() ? "true" : "false";
    case napi_number: {
      double d = v.As<Napi::Number>().DoubleValue();
      if (std::isnan(d)) return "NaN";
      if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
      std::ostringstream os;
      os.precision(17);
      os << d;
      return os.str();
    }
    case napi_string: {
      std::string s = v.As<Napi::String>().Utf8Value();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return "'" + s + "'";
    }
    case napi_bigint: return "a bigint";
    case napi_symbol: return "a symbol";
    case napi_function: return "a function";
    case napi_external: return "an external";
    case napi_object:
      if (v.IsArray()) return cat("an array of length ", v.As<Napi::Array>().Length());
      if (v.IsTypedArray()) return "a typed array";
      return "an object";
  }
  return "a value";
}

void expect_args(const Napi::CallbackInfo& info, size_t n, const char* op) {
  if (info.Length() < n) type_error(op, ": expected ", n, " argument(s), got ", info.Length());
}

std::string get_string(const Napi::Value& v, const char* op, const char* name) {
  if (!v.IsString()) type_error(op, ": ", name, " must be a string, got ", describe(v));
  return v.As<Napi::String>().Utf8Value();
}

double get_number(const Napi::Value& v, const char* op, const char* name, bool allow_nonfinite) {
  if (!v.IsNumber()) type_error(op, ": ", name, " must be a number, got ", describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!allow_nonfinite && !std::isfinite(d)) range_error(op, ": ", name, " must be finite, got ", describe(v));
  return d;
}

float narrow_f32(double x, const char* op, const char* name) {
  const float f = static_cast<float>(x);
  if (!std::isfinite(x) || !std::isfinite(f) || (f == 0.0f && x != 0.0))
    range_error(op, ": ", name, " = ", x, " is out of float32 range", std::isfinite(f) ? " (it rounds to 0)" : "");
  return f;
}

float get_f32(const Napi::Value& v, const char* op, const char* name) {
  return narrow_f32(get_number(v, op, name), op, name);
}

int64_t get_int(const Napi::Value& v, const char* op, const char* name, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) type_error(op, ": ", name, " must be an integer, got ", describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d) range_error(op, ": ", name, " must be an integer, got ", describe(v));
  if (d < static_cast<double>(lo) || d > static_cast<double>(hi))
    range_error(op, ": ", name, " must be between ", lo, " and ", hi, ", got ", describe(v));
  return static_cast<int64_t>(d);
}

uint64_t get_u64(const Napi::Value& v, const char* op, const char* name) {
  if (v.IsBigInt()) {
    int sign = 0;
    size_t words = 2;
    uint64_t w[2] = {0, 0};
    v.As<Napi::BigInt>().ToWords(&sign, &words, w);
    if (sign || words > 1) range_error(op, ": ", name, " must be a bigint in [0, 2^64)");
    return w[0];
  }
  if (!v.IsNumber()) type_error(op, ": ", name, " must be a non-negative integer or bigint, got ", describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < 0 || d > kMaxSafe)
    range_error(op, ": ", name, " must be a non-negative safe integer (or a bigint), got ", describe(v));
  return static_cast<uint64_t>(d);
}

Shape get_shape(const Napi::Value& v, const char* op, const char* name) {
  if (!v.IsArray()) type_error(op, ": ", name, " must be an array of dimensions, got ", describe(v));
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = a.Length();
  if (n > kMaxRank) range_error(op, ": ", name, " has rank ", n, "; the maximum is ", kMaxRank);
  Shape s(n);
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value d = a.Get(i);
    if (!d.IsNumber()) type_error(op, ": ", name, "[", i, "] must be a number, got ", describe(d));
    double x = d.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x) || std::floor(x) != x)
      range_error(op, ": ", name, "[", i, "] must be a non-negative integer, got ", describe(d));
    if (x < 0) range_error(op, ": ", name, "[", i, "] must be non-negative, got ", describe(d));
    if (x > static_cast<double>(kMaxNumel)) range_error(op, ": ", name, "[", i, "] = ", describe(d), " exceeds 2^48");
    s[i] = static_cast<int64_t>(x);
  }
  checked_numel(s, op);
  return s;
}

DType get_dtype(const Napi::Value& v, const char* op) {
  if (!v.IsString()) type_error(op, ": dtype must be 'float32', 'int32' or 'bfloat16', got ", describe(v));
  return parse_dtype(v.As<Napi::String>().Utf8Value(), op);
}

Device get_device(const Napi::Value& v, const char* op) {
  if (!v.IsString()) type_error(op, ": device must be 'cpu', 'cuda' or 'cuda:N', got ", describe(v));
  return parse_device(v.As<Napi::String>().Utf8Value(), op);
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

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.storage != b.storage) return false;
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  return a.nbytes() && b.nbytes() && a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

void check_disjoint(const Tensor& out, const char* out_name, const Tensor& in, const char* in_name, const char* op) {
  if (overlaps(out, in)) range_error(op, ": ", out_name, " must not overlap ", in_name, " (they share memory)");
}

void check_all_disjoint(const char* op, std::initializer_list<NamedTensor> written,
                        std::initializer_list<NamedTensor> read) {
  for (auto w = written.begin(); w != written.end(); ++w) {
    if (!w->first) continue;
    for (const NamedTensor& r : read)
      if (r.first) check_disjoint(*w->first, w->second, *r.first, r.second, op);
    for (auto o = w + 1; o != written.end(); ++o)
      if (o->first) check_disjoint(*w->first, w->second, *o->first, o->second, op);
  }
}

}  // namespace sf::js
