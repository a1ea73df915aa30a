// cpu_backend.cpp — fill, random and copy on the host, split over the thread pool. These loops are memory-bound and
// written so the compiler vectorises them; the random kernel computes one Philox block per 4 (uniform) or 2 (normal)
// elements, exactly as the CUDA kernel does.
#include "cpu_backend.h"

#include <cstring>

#include "../core/philox.h"

namespace sf {

namespace {
constexpr int64_t kGrainElems = 1 << 15;  // elements per chunk of a memory-bound loop
constexpr int64_t kGrainBytes = 1 << 20;  // bytes per chunk of a copy
}  // namespace

CpuBackend::CpuBackend(ThreadPool& pool) : Backend(std::make_shared<CpuAllocator>(), "cpu"), pool_(pool) {}

void CpuBackend::fill(const Tensor& t, double value) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::f32: {
      float* p = t.data<float>();
      const float v = static_cast<float>(value);
      pool_.parallel_for(n, kGrainElems, [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = v;
      });
      break;
    }
    case DType::i32: {
      int32_t* p = t.data<int32_t>();
      const int32_t v = static_cast<int32_t>(value);
      pool_.parallel_for(n, kGrainElems, [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = v;
      });
      break;
    }
    case DType::bf16: {
      uint16_t* p = t.data<uint16_t>();
      const uint16_t v = f32_to_bf16(static_cast<float>(value));
      pool_.parallel_for(n, kGrainElems, [=](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) p[i] = v;
      });
      break;
    }
  }
}

void CpuBackend::random(const Tensor& t, RandomKind kind, uint64_t seed, uint64_t offset, float a, float b) {
  const int64_t n = t.numel();
  const DType dt = t.dtype;
  void* base = t.raw();
  pool_.parallel_for(n, 1 << 12, [=](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t e = offset + static_cast<uint64_t>(i);
      float v = kind == RandomKind::Uniform ? a + (b - a) * uniform_at(seed, e) : a + b * normal_at(seed, e);
      if (dt == DType::f32)
        static_cast<float*>(base)[i] = v;
      else
        static_cast<uint16_t*>(base)[i] = f32_to_bf16(v);
    }
  });
}

static void parallel_memcpy(ThreadPool& pool, void* dst, const void* src, size_t bytes) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  pool.parallel_for(static_cast<int64_t>(bytes), kGrainBytes,
                    [=](int64_t b, int64_t e) { std::memcpy(d + b, s + b, static_cast<size_t>(e - b)); });
}

void CpuBackend::copy_from_host(const Tensor& dst, const void* src) { parallel_memcpy(pool_, dst.raw(), src, dst.nbytes()); }
void CpuBackend::copy_to_host(void* dst, const Tensor& src) { parallel_memcpy(pool_, dst, src.raw(), src.nbytes()); }
void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  if (dst.raw() == src.raw()) return;
  std::memmove(dst.raw(), src.raw(), dst.nbytes());  // views of one storage may overlap
}

}  // namespace sf
