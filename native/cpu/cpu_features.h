// cpu_features.h — what the host CPU can run, detected once at run time. Kernels pick their AVX-512 / AVX2 / portable
// variant from this; the prebuilt binary targets baseline x86-64 (or any other architecture through the portable
// path) and never executes an instruction the CPU lacks.
#pragma once
#include <string>
#include <vector>

namespace sf {

struct CpuFeatures {
  bool avx2 = false, fma = false, avx512f = false, avx512bw = false, avx512vl = false, avx512bf16 = false;
  // "avx512" | "avx2" | "portable": the widest kernel family this CPU runs.
  std::string level() const;
  std::vector<std::string> list() const;
};

CpuFeatures detect_cpu_features();

}  // namespace sf
