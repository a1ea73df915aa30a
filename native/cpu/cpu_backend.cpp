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

// One Philox block serves 4 uniform or 2 normal elements; a chunk may start and end mid-block.
void CpuBackend::random(const Tensor& t, RandomKind kind, uint64_t seed, uint64_t offset, float a, float b) {
  const int64_t n = t.numel();
  const bool bf16 = t.dtype == DType::bf16;
  void* base = t.raw();
  const uint32_t per = kind == RandomKind::Uniform ? 4 : 2;
  pool_.parallel_for(n, 1 << 12, [=](int64_t lo, int64_t hi) {
    int64_t i = lo;
    uint64_t e = offset + static_cast<uint64_t>(lo);
    while (i < hi) {
      const uint64_t block = e / per;
      Philox4 r = philox_block(seed, block, kind == RandomKind::Uniform ? kStreamUniform : kStreamNormal);
      for (uint32_t lane = static_cast<uint32_t>(e % per); lane < per && i < hi; ++lane, ++i, ++e) {
        float v = kind == RandomKind::Uniform ? a + (b - a) * u32_to_unit(r.v[lane])
                                              : a + b * box_muller(r.v[2 * lane], r.v[2 * lane + 1]);
        if (bf16)
          static_cast<uint16_t*>(base)[i] = f32_to_bf16(v);
        else
          static_cast<float*>(base)[i] = v;
      }
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
  const char* s = static_cast<const char*>(src.raw());
  char* d = static_cast<char*>(dst.raw());
  const size_t n = dst.nbytes();
  if (d == s) return;
  if (d + n <= s || s + n <= d)
    parallel_memcpy(pool_, d, s, n);
  else
    std::memmove(d, s, n);  // overlapping views of one storage
}

}  // namespace sf
