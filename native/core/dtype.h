// dtype.h — element types. f32 and i32 everywhere; bf16 is a storage format (round-to-nearest-even from f32,
// read back widened to f32) that the CUDA matmul and attention kernels compute on with fp32 accumulation.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "error.h"

namespace sf {

enum class DType : int { f32 = 0, i32 = 1, bf16 = 2 };

inline size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::i32: return 4;
    case DType::bf16: return 2;
  }
  return 0;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::i32: return "int32";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

inline DType parse_dtype(const std::string& s, const char* op) {
  if (s == "float32") return DType::f32;
  if (s == "int32") return DType::i32;
  if (s == "bfloat16") return DType::bf16;
  type_error(op, ": dtype must be 'float32', 'int32' or 'bfloat16', got '", s, "'");
}

// bf16 <-> f32. Round to nearest even; NaN stays a (quiet) NaN. Host and device (the CUDA kernels that write bf16 use
// the same bits as the CPU).
#if defined(__CUDACC__)
#define SF_DTYPE_HD __host__ __device__
#else
#define SF_DTYPE_HD
#endif
SF_DTYPE_HD inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
SF_DTYPE_HD inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace sf
