// train_step_cpu — the training step that gpu_bench times on the GPU (train_step.h), run on the CPU kernels, writing
// the same check data, so that the step's composition can be checked against PyTorch without a GPU:
//
//   train_step_cpu DIR [small|medium] [none|all]
//   python3 scripts/gpu_torch_ref.py --train-check-only DIR/train_check.json --device cpu
//
// (gpu-check.sh does the same with the CUDA kernels: gpu_bench --dump-train DIR, then gpu_torch_ref.py --train-check.)
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "train_step.h"

namespace {

using namespace sf;

// Host memory in 64-byte aligned chunks (RAII).
class HostBuf {
 public:
  HostBuf() = default;
  explicit HostBuf(size_t bytes) : v_((bytes + 63) / 64 + 1) {}
  float* f() const { return reinterpret_cast<float*>(const_cast<Chunk*>(v_.data())); }

 private:
  struct alignas(64) Chunk {
    char b[64];
  };
  std::vector<Chunk> v_;
};

struct CpuOps {
  using Buf = HostBuf;
  ThreadPool& pool;
  Buf alloc(size_t bytes) { return HostBuf(bytes); }
  static float* f(const Buf& b) { return b.f(); }
  static int32_t* i(const Buf& b) { return reinterpret_cast<int32_t*>(b.f()); }
  void zero(float* x, int64_t n) { std::memset(x, 0, static_cast<size_t>(n) * 4); }
  void copy(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }
  void fill_normal(float* x, int64_t n, uint64_t seed, float sd) {
    std::mt19937_64 g(seed);
    std::normal_distribution<float> d(0.0f, sd);
    for (int64_t k = 0; k < n; ++k) x[k] = d(g);
  }
  void fill_const(float* x, int64_t n, float v) { std::fill(x, x + n, v); }
  void fill_ids(int32_t* x, int64_t n, int32_t mod, uint64_t seed) {
    std::mt19937_64 g(seed);
    for (int64_t k = 0; k < n; ++k) x[k] = seed == 0 ? static_cast<int32_t>(k % mod) : static_cast<int32_t>(g() % mod);
  }
  void matmul(const cpu::MatmulDesc& d) { cpu::matmul(pool, d); }
  void bias_grad(const float* dy, int64_t rows, int64_t n, float* db) { cpu::bias_grad(pool, dy, rows, n, db); }
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                         int64_t rows, int64_t C, float eps) {
    cpu::layernorm_forward(pool, x, w, b, y, mean, rstd, rows, C, eps);
  }
  void layernorm_backward(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
                          float* dx, float* dw, float* db, int64_t rows, int64_t C) {
    cpu::layernorm_backward(pool, dy, x, w, mean, rstd, dx, dw, db, rows, C);
  }
  void permute0213(const float* src, float* dst, int64_t A, int64_t B, int64_t C, int64_t D, bool acc) {
    cpu::permute0213(pool, src, dst, A, B, C, D, acc);
  }
  void attention_forward(const cpu::AttentionDesc& d, const float* q, const float* k, const float* v, float* o,
                         float* lse) {
    cpu::attention_forward(pool, d, q, k, v, o, lse);
  }
  void attention_backward(const cpu::AttentionDesc& d, const float* q, const float* k, const float* v, const float* o,
                          const float* lse, const float* dout, float* dq, float* dk, float* dv) {
    cpu::attention_backward(pool, d, q, k, v, o, lse, dout, dq, dk, dv);
  }
  void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) { cpu::gelu_backward(pool, x, dy, dx, n); }
  void embedding_forward(const int32_t* ids, int64_t n, const float* table, int64_t V, int64_t C, float* out) {
    cpu::embedding_forward(pool, ids, n, table, V, C, out);
  }
  void embedding_backward(const int32_t* ids, int64_t n, const float* dout, int64_t V, int64_t C, float* dtable) {
    cpu::embedding_backward(pool, ids, n, dout, V, C, dtable);
  }
  void axpby(const float* a, float alpha, const float* b, float beta, float* out, int64_t n) {
    cpu::axpby(pool, a, alpha, b, beta, out, n);
  }
  void cross_entropy(const float* logits, const int32_t* tg, int64_t N, int64_t V, int32_t ignore, float* dlogits,
                     float scale, float* loss) {
    *loss = cpu::cross_entropy(pool, logits, tg, N, V, ignore, dlogits, scale);
  }
  void adamw(const cpu::AdamWDesc& d, float* param, const float* grad, float* m, float* v, const float* decay,
             int64_t n) {
    cpu::adamw(pool, d, param, grad, m, v, decay, n);
  }
  double sum_squares(const float* x, int64_t n) { return cpu::sum_squares(pool, x, n); }
  float read(const float* x) { return *x; }
  void to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: train_step_cpu DIR [small|medium] [none|all]\n");
    return 2;
  }
  const std::string dir = argv[1], size = argc > 2 ? argv[2] : "small", share = argc > 3 ? argv[3] : "none";
  if ((size != "small" && size != "medium") || (share != "none" && share != "all")) {
    std::fprintf(stderr, "train_step_cpu: size must be small|medium and sharing none|all, got %s %s\n", size.c_str(),
                 share.c_str());
    return 2;
  }
  try {
    const sfbench::TrainCfg* cfg = nullptr;
    const auto all = sfbench::train_configs();
    for (const auto& c : all)
      if (c.name == size && c.share_all == (share == "all")) cfg = &c;
    ThreadPool pool(0);
    CpuOps ops{pool};
    auto fresh = [&] { return std::make_unique<sfbench::TrainStep<CpuOps>>(ops, *cfg, 1e-3f); };
    sfbench::write_train_check(ops, *cfg, 1e-3f, fresh, dir, "cpu");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_step_cpu: %s\n", e.what());
    return 1;
  }
}
