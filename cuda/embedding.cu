// embedding.cu — the id check, the embedding lookup and its gradient, and fused softmax cross-entropy on CUDA (see
// kernels.h; native/cpu/embedding.cpp and cross_entropy.cpp are the reference).
//
//  * check_ids: the first offending position (atomicMin over positions: the minimum does not depend on the order),
//    read back after a stream synchronisation. The bindings call it before a kernel that trusts the ids, unless the
//    ids were uploaded from the host and the bounds that upload noted prove them valid (native/addon/ops.cpp bad_id).
//  * embedding_backward: deterministic without float atomics. The (id, position) pairs are sorted by id with CUB's
//    radix sort, which is stable, so equal ids keep their positions in increasing order; the block at the start of
//    each run of equal ids then adds the run's rows of dout into the id's row of dtable one after another, in position
//    order — the CPU's order, so the bits are the CPU's too.
//  * cross_entropy: a count of the counted rows (integer atomics: exact), one block per row for the fused softmax,
//    loss and gradient (the CPU's three sweeps), and a fixed-order reduction of the per-row losses in double.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>

#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void check_ids_kernel(const int32_t* __restrict__ ids, int64_t n, int32_t lo, int32_t hi, int32_t skip,
                                 unsigned long long* __restrict__ first) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    if (id != skip && (id < lo || id >= hi)) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

// out (n, C) = table[ids]; a row whose id is out of range (never, after check_ids) is left unwritten.
__global__ void embedding_forward_kernel(const int32_t* __restrict__ ids, int64_t n, const float* __restrict__ table,
                                         int64_t V, int64_t C, float* __restrict__ out) {
  const int64_t total = n * C;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, j = e - i * C;
    const int64_t id = ids[i];
    if (id >= 0 && id < V) out[e] = table[id * C + j];
  }
}

__global__ void iota_kernel(int32_t* __restrict__ p, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<int32_t>(i);
}

// sorted_ids / pos (n): the pairs sorted by id, stably. The block of sorted index k, when k starts a run of equal ids,
// adds the run's dout rows (in position order) into dtable's row of that id. Other blocks return at once.
__global__ void embedding_backward_kernel(const int32_t* __restrict__ sorted_ids, const int32_t* __restrict__ pos,
                                          int64_t n, const float* __restrict__ dout, int64_t V, int64_t C,
                                          float* __restrict__ dtable) {
  for (int64_t k = blockIdx.x; k < n; k += gridDim.x) {
    const int32_t id = sorted_ids[k];
    if (k > 0 && sorted_ids[k - 1] == id) continue;  // not the start of a run
    if (id < 0 || id >= V) continue;
    int64_t end = k + 1;
    while (end < n && sorted_ids[end] == id) ++end;
    float* __restrict__ dst = dtable + static_cast<int64_t>(id) * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      float acc = dst[j];
      for (int64_t r = k; r < end; ++r) acc = acc + dout[static_cast<int64_t>(pos[r]) * C + j];
      dst[j] = acc;
    }
  }
}

__global__ void count_kernel(const int32_t* __restrict__ targets, int64_t N, int32_t ignore_index,
                             unsigned long long* __restrict__ count) {
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    c += targets[i] != ignore_index;
  if (c) atomicAdd(count, c);
}


// One block per row: losses[r] (double) and, when d != null, d_r = (softmax(x_r) - onehot(t_r)) * scale, scale =
// grad_scale / count; ignored rows get loss 0 and d = 0. A NaN logit gives its row a NaN loss and NaN d (expf(x - m)
// is NaN there whatever m, block_max may drop it; the sum carries it), as cpu::cross_entropy. d may be x itself: every thread reads x[t] before the first
// reduction's barrier, and afterwards each element is read and written by the same thread.
__global__ void cross_entropy_rows_kernel(const float* logits, const int32_t* __restrict__ targets, int64_t N,
                                          int64_t V, int32_t ignore_index, float* dlogits, float grad_scale,
                                          const unsigned long long* __restrict__ count, double* __restrict__ losses) {
  __shared__ float red[32];
  const unsigned long long cnt = *count;
  const float scale = cnt ? static_cast<float>(static_cast<double>(grad_scale) / static_cast<double>(cnt)) : 0.0f;
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const float* x = logits + r * V;
    float* d = dlogits ? dlogits + r * V : nullptr;
    const int32_t t = targets[r];
    if (t == ignore_index || t < 0 || t >= V) {  // (out-of-range targets never get here: check_ids ran first)
      if (threadIdx.x == 0) losses[r] = 0.0;
      if (d)
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = 0.0f;
      continue;
    }
    const float xt = x[t];
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, x[j]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      const float e = expf(x[j] - m);
      s += e;
      if (d) d[j] = e;
    }
    s = block_sum(s, red);
    if (threadIdx.x == 0) losses[r] = static_cast<double>(m) + log(static_cast<double>(s)) - static_cast<double>(xt);
    if (!d) continue;
    const float f = scale / s;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] *= f;
    __syncthreads();
    if (threadIdx.x == 0) d[t] -= scale;
    __syncthreads();
  }
}

// One block: *loss = (sum of losses in a fixed order) / count, 0 when count is 0.
__global__ void cross_entropy_loss_kernel(const double* __restrict__ losses, int64_t N,
                                          const unsigned long long* __restrict__ count, float* __restrict__ loss) {
  __shared__ double red[kThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += losses[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const unsigned long long c = *count;
    *loss = c ? static_cast<float>(red[0] / static_cast<double>(c)) : 0.0f;
  }
}

int bits_for(int64_t V) {  // bits needed for ids in [0, V)
  int b = 1;
  while (b < 31 && (int64_t{1} << b) < V) ++b;
  return b;
}

}  // namespace

int64_t check_ids(Stream s, const int32_t* ids, int64_t n, int32_t lo, int32_t hi, int32_t skip) {
  if (n <= 0) return -1;
  Scratch flag(s, sizeof(unsigned long long), "check_ids");
  auto* first = flag.as<unsigned long long>();
  SF_CUDA_CALL(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), s));
  SF_LAUNCH(check_ids_kernel, (grid_for(n, kThreads, 4096), kThreads, 0, s), ids, n, lo, hi, skip, first);
  check_launch("check_ids");
  unsigned long long host = 0;
  SF_CUDA_CALL(cudaMemcpyAsync(&host, first, sizeof host, cudaMemcpyDeviceToHost, s));
  SF_CUDA_CALL(cudaStreamSynchronize(s));
  return host == ~0ULL ? -1 : static_cast<int64_t>(host);
}

void embedding_forward(Stream s, const int32_t* ids, int64_t n, const float* table, int64_t V, int64_t C,
                       float* out) {
  if (n <= 0 || C <= 0) return;
  SF_LAUNCH(embedding_forward_kernel, (grid_for(n * C, kThreads), kThreads, 0, s), ids, n, table, V, C, out);
  check_launch("embedding_forward");
}

void embedding_backward(Stream s, const int32_t* ids, int64_t n, const float* dout, int64_t V, int64_t C,
                        float* dtable) {
  if (n <= 0 || C <= 0 || V <= 0) return;
  if (n > INT32_MAX) error("embedding_backward: ", n, " ids is more than the CUDA kernel handles (2^31 - 1)");
  const int num = static_cast<int>(n);
  size_t temp_bytes = 0;
  SF_CUDA_CALL(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, static_cast<const int32_t*>(nullptr),
                                               static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                               static_cast<int32_t*>(nullptr), num, 0, bits_for(V), s));
  const size_t arr = (static_cast<size_t>(n) * sizeof(int32_t) + 255) / 256 * 256;
  Scratch buf(s, 3 * arr + temp_bytes, "embedding_backward");
  char* base = buf.as<char>();
  auto* keys_out = reinterpret_cast<int32_t*>(base);
  auto* pos_in = reinterpret_cast<int32_t*>(base + arr);
  auto* pos_out = reinterpret_cast<int32_t*>(base + 2 * arr);
  void* temp = base + 3 * arr;
  SF_LAUNCH(iota_kernel, (grid_for(n, kThreads), kThreads, 0, s), pos_in, n);
  check_launch("embedding_backward (positions)");
  SF_CUDA_CALL(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, keys_out, pos_in, pos_out, num, 0, bits_for(V),
                                               s));
  const int threads = C >= 256 ? 256 : (C >= 128 ? 128 : (C >= 64 ? 64 : 32));
  const unsigned blocks = static_cast<unsigned>(n < (int64_t{1} << 30) ? n : (int64_t{1} << 30));
  SF_LAUNCH(embedding_backward_kernel, (blocks, threads, 0, s), keys_out, pos_out, n, dout, V, C, dtable);
  check_launch("embedding_backward");
}

void cross_entropy(Stream s, const float* logits, const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index,
                   float* dlogits, float grad_scale, float* loss) {
  if (N <= 0 || V <= 0) {  // nothing counted (with V = 0 every target was ignore_index, else check_ids threw)
    SF_CUDA_CALL(cudaMemsetAsync(loss, 0, sizeof(float), s));
    return;
  }
  const size_t lbytes = (static_cast<size_t>(N) * sizeof(double) + 255) / 256 * 256;
  Scratch buf(s, lbytes + sizeof(unsigned long long), "cross_entropy");
  auto* losses = buf.as<double>();
  auto* count = reinterpret_cast<unsigned long long*>(buf.as<char>() + lbytes);
  SF_CUDA_CALL(cudaMemsetAsync(count, 0, sizeof(unsigned long long), s));
  SF_LAUNCH(count_kernel, (grid_for(N, kThreads, 1024), kThreads, 0, s), targets, N, ignore_index, count);
  check_launch("cross_entropy (count)");
  const unsigned rows = static_cast<unsigned>(N < 65535LL * 16 ? N : 65535LL * 16);
  SF_LAUNCH(cross_entropy_rows_kernel, (rows, kThreads, 0, s), logits, targets, N, V, ignore_index, dlogits, grad_scale, count,
                                                      losses);
  check_launch("cross_entropy");
  SF_LAUNCH(cross_entropy_loss_kernel, (1, kThreads, 0, s), losses, N, count, loss);
  check_launch("cross_entropy (loss)");
}

}  // namespace sf::cuda
