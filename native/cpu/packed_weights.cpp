// packed_weights.cpp — packing a weight once, not at every product.
//
// The packed path copies op(B) into NR-wide column panels at every call (matmul.cpp). For a weight read again and
// again at the same values (inference: a prefill per request; training: a block that several layers share, read by
// each layer between two optimizer steps) that copy is the same every time: 10-15% of a prefill's time here. So the
// second product that reads the same B (same storage, byte offset, shape and transpose) at the same write version
// packs it into a buffer kept with B's storage, and every later one at that version reads the buffer.
//
// Why it cannot go stale: the stream bumps a storage's write version before any task that writes it runs (stream.cpp),
// and this runs inside the matmul's own stream task, in stream order: the version seen here counts every write queued
// before the product and none after. A storage JavaScript can write directly (Tensor.sharedData) is never packed.
// The copy holds the same floats as B (packing copies values), so the product's bits are the same with or without it.
//
// Memory: a copy is made only on a second read at one version, counted in memory() like any storage (it is one, and
// memory() reports packedStorages / packedBytes apart too), and
// dropped when a read finds B written since (training frees last step's copies as the next step reads its weights) or
// when B's storage is freed. At most kMaxEntries keys per storage are remembered (the oldest forgotten first).
#include "packed_weights.h"

#include <algorithm>
#include <mutex>
#include <vector>

namespace sf::cpu {
namespace {

// One packed copy: a storage of B's allocator, also counted as packed (memory().packedStorages / packedBytes).
struct PackedBuf {
  std::shared_ptr<Storage> s;
  PackedBuf(const std::shared_ptr<Allocator>& a, size_t bytes) : s(std::make_shared<Storage>(a, bytes)) {
    s->allocator().counters().packed.fetch_add(1);
    s->allocator().counters().packed_bytes.fetch_add(static_cast<int64_t>(bytes));
  }
  ~PackedBuf() {
    s->allocator().counters().packed.fetch_sub(1);
    s->allocator().counters().packed_bytes.fetch_sub(static_cast<int64_t>(s->bytes()));
  }
  PackedBuf(const PackedBuf&) = delete;
  PackedBuf& operator=(const PackedBuf&) = delete;
};

struct PackedWeights final : Storage::Attachment {
  struct Entry {
    size_t offset;  // bytes into the storage
    int64_t N, K;
    bool trans;
    uint64_t version;               // the write version of the last read
    std::shared_ptr<PackedBuf> buf;  // packed at `version`, or null
  };
  std::mutex mu;
  std::vector<Entry> entries;
};

constexpr size_t kMaxEntries = 64;

}  // namespace

const float* packed_weight(ThreadPool& pool, const Tensor& b, const MatmulDesc& d, std::shared_ptr<const void>& hold) {
  if (d.batch != 1 || b.dtype != DType::f32 || !b.storage || !uses_packed_path(d)) return nullptr;
  Storage& s = *b.storage;
  if (s.host_writable()) return nullptr;
  const uint64_t version = s.write_version();
  const size_t offset = b.byte_begin();
  PackedWeights& pw = s.attachment<PackedWeights>();
  std::lock_guard<std::mutex> lk(pw.mu);
  auto it = std::find_if(pw.entries.begin(), pw.entries.end(), [&](const PackedWeights::Entry& e) {
    return e.offset == offset && e.N == d.N && e.K == d.K && e.trans == d.trans_b;
  });
  if (it == pw.entries.end()) {  // the first read: remember it
    if (pw.entries.size() >= kMaxEntries) pw.entries.erase(pw.entries.begin());
    pw.entries.push_back({offset, d.N, d.K, d.trans_b, version, nullptr});
    return nullptr;
  }
  if (it->version != version) {  // written since the last read: drop the old copy, this is a first read again
    it->version = version;
    it->buf.reset();
    return nullptr;
  }
  if (!it->buf) {  // the second read at this version: pack once
    const size_t bytes = static_cast<size_t>(packed_b_floats(d.N, d.K)) * sizeof(float);
    auto buf = std::make_shared<PackedBuf>(s.allocator_ptr(), bytes);
    pack_b_full(pool, d.b, d.trans_b, d.N, d.K, static_cast<float*>(buf->s->data()));
    it->buf = std::move(buf);
  }
  hold = it->buf;
  return static_cast<const float*>(it->buf->s->data());
}

}  // namespace sf::cpu
