// gelu.cpp — GELU, tanh form (GPT-2's and PyTorch's approximate='tanh'; see kernels.h), forward and backward.
//
// Purely elementwise: the flat range is split over the thread pool and each piece runs the vector gelu / gelu_grad of
// simd.h (polynomial exp, no libm calls; the formula matmul's fused GELU epilogue uses), two vectors per step. The exp
// and the division make the forward about as compute- as memory-bound on one core. The tail shorter than a vector
// goes through the same vector code on a padded copy, so an element gets the same bits wherever a thread's range cuts.
#include <cstring>

#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t kGrain = 8192;  // elements per parallel task, at least

// y[i] = gelu(x[i]) for i in [lo, hi)
template <typename V>
void gelu_forward_body(int64_t lo, int64_t hi, const float* x, float* y) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + 2 * W <= hi; i += 2 * W) {
    store<V>(y + i, gelu(load<V>(x + i)));
    store<V>(y + i + W, gelu(load<V>(x + i + W)));
  }
  for (; i + W <= hi; i += W) store<V>(y + i, gelu(load<V>(x + i)));
  if (i < hi) {
    const size_t bytes = static_cast<size_t>(hi - i) * sizeof(float);
    float buf[W] = {};
    std::memcpy(buf, x + i, bytes);
    store<V>(buf, gelu(load<V>(buf)));
    std::memcpy(y + i, buf, bytes);
  }
}
SF_VARIANTS(gelu_fwd, (int64_t lo, int64_t hi, const float* x, float* y), (lo, hi, x, y), gelu_forward_body)

// dx[i] += gelu'(x[i]) * dy[i] for i in [lo, hi)
template <typename V>
void gelu_backward_body(int64_t lo, int64_t hi, const float* x, const float* dy, float* dx) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + 2 * W <= hi; i += 2 * W) {
    store<V>(dx + i, load<V>(dx + i) + gelu_grad(load<V>(x + i)) * load<V>(dy + i));
    store<V>(dx + i + W, load<V>(dx + i + W) + gelu_grad(load<V>(x + i + W)) * load<V>(dy + i + W));
  }
  for (; i + W <= hi; i += W) store<V>(dx + i, load<V>(dx + i) + gelu_grad(load<V>(x + i)) * load<V>(dy + i));
  if (i < hi) {
    const size_t bytes = static_cast<size_t>(hi - i) * sizeof(float);
    float bx[W] = {}, bdy[W] = {}, bdx[W] = {};
    std::memcpy(bx, x + i, bytes);
    std::memcpy(bdy, dy + i, bytes);
    std::memcpy(bdx, dx + i, bytes);
    store<V>(bdx, load<V>(bdx) + gelu_grad(load<V>(bx)) * load<V>(bdy));
    std::memcpy(dx + i, bdx, bytes);
  }
}
SF_VARIANTS(gelu_bwd, (int64_t lo, int64_t hi, const float* x, const float* dy, float* dx), (lo, hi, x, dy, dx),
            gelu_backward_body)

}  // namespace

void gelu_forward(ThreadPool& pool, const float* x, float* y, int64_t n) {
  auto fn = SF_PICK(gelu_fwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y); });
}

void gelu_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n) {
  auto fn = SF_PICK(gelu_bwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, dy, dx); });
}

}  // namespace sf::cpu
