// cub/device/device_radix_sort.cuh of the CPU lane (cuda/emu): DeviceRadixSort::SortPairs as CUB defines it — a
// stable sort of (key, value) pairs by the key bits [begin_bit, end_bit) (signed keys ordered as numbers, as CUB
// does by flipping the sign bit) — written as a host stable sort. The temp-storage protocol is kept: a first call
// with d_temp_storage == nullptr asks for the size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../../cuda_runtime.h"

namespace cub {

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const KeyT* keys_in, KeyT* keys_out,
                               const ValueT* values_in, ValueT* values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(KeyT) * 8, cudaStream_t = nullptr) {
    static_assert(std::is_integral<KeyT>::value, "the emulated SortPairs sorts integer keys");
    if (!d_temp_storage) {
      temp_storage_bytes = 16;
      return cudaSuccess;
    }
    using U = typename std::make_unsigned<KeyT>::type;
    const int bits = static_cast<int>(sizeof(KeyT) * 8);
    if (begin_bit < 0 || end_bit > bits || begin_bit >= end_bit) return cudaErrorInvalidValue;
    auto radix = [&](KeyT k) {
      U u = static_cast<U>(k);
      if (std::is_signed<KeyT>::value) u ^= static_cast<U>(U{1} << (bits - 1));
      u = static_cast<U>(u >> begin_bit);
      if (end_bit - begin_bit < bits) u &= static_cast<U>((U{1} << (end_bit - begin_bit)) - 1);
      return u;
    };
    const size_t n = static_cast<size_t>(num_items);
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return radix(keys_in[a]) < radix(keys_in[b]); });
    std::vector<KeyT> k(n);
    std::vector<ValueT> v(n);
    for (size_t i = 0; i < n; ++i) {
      k[i] = keys_in[order[i]];
      v[i] = values_in[order[i]];
    }
    std::copy(k.begin(), k.end(), keys_out);
    std::copy(v.begin(), v.end(), values_out);
    return cudaSuccess;
  }
};

}  // namespace cub
