#include "cpu_features.h"

namespace sf {

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

std::string CpuFeatures::level() const {
  if (avx512f && avx512bw && avx512vl && fma) return "avx512";
  if (avx2 && fma) return "avx2";
  return "portable";
}

std::vector<std::string> CpuFeatures::list() const {
  std::vector<std::string> out;
  if (avx2) out.push_back("avx2");
  if (fma) out.push_back("fma");
  if (avx512f) out.push_back("avx512f");
  if (avx512bw) out.push_back("avx512bw");
  if (avx512vl) out.push_back("avx512vl");
  if (avx512bf16) out.push_back("avx512bf16");
  return out;
}

}  // namespace sf
