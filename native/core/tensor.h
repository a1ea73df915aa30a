// tensor.h — a tensor is a contiguous view into a Storage: (storage, offset in elements, shape, dtype).
//
// There are no strides: every tensor is dense and row-major, and a "view" is a (offset, shape) window. That is all the
// ParameterStore needs (each parameter is a window into one flat buffer; layers that share a weight hold the same
// window) and it keeps every kernel's indexing trivial.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "storage.h"

namespace sf {

using Shape = std::vector<int64_t>;

constexpr size_t kMaxRank = 8;
// Largest element count any tensor may have (2^48): keeps every byte count and index far from int64 overflow.
constexpr int64_t kMaxNumel = int64_t{1} << 48;

std::string shape_str(const Shape& s);

// Product of dims with overflow and range checks; `op` names the caller in the error.
int64_t checked_numel(const Shape& s, const char* op);

struct Tensor {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements of dtype
  Shape shape;
  DType dtype = DType::f32;

  // Shapes are bounded by checked_numel when made; a zero dimension still makes the product 0 before any other
  // dimension multiplies in, so no shape (even one whose other dimensions multiply past 2^63) overflows here.
  int64_t numel() const {
    for (int64_t d : shape)
      if (d == 0) return 0;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  size_t rank() const { return shape.size(); }
  Device device() const { return storage->device(); }
  void* raw() const { return static_cast<char*>(storage->data()) + offset * static_cast<int64_t>(dtype_size(dtype)); }
  // The byte range [byte_begin(), byte_end()) of storage this tensor covers.
  size_t byte_begin() const { return static_cast<size_t>(offset) * dtype_size(dtype); }
  size_t byte_end() const { return byte_begin() + nbytes(); }
  // The failure of the op that last wrote any of this tensor's bytes and failed, or null (storage.h).
  FailurePtr failure() const { return storage ? storage->failure(byte_begin(), byte_end()) : nullptr; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  std::string describe() const;  // "float32[2, 3] on cpu"
};

// Whether the first n int32 values of ids are known on the host to lie in [lo, hi), or to equal skip when has_skip:
// an upload noted their bounds and nothing has written them since (Storage::known_ids). False means "not known" (the
// caller checks the values themselves), never "invalid". Call it in a stream task of ids' device, where the noted
// state is that of the work before the task.
bool ids_known_valid(const Tensor& ids, int64_t n, int64_t lo, int64_t hi, bool has_skip, int32_t skip);

// A fresh contiguous tensor of `shape` on the allocator's device (memory uninitialised).
Tensor empty_tensor(const std::shared_ptr<Allocator>& alloc, const Shape& shape, DType dtype, const char* op);

// A window of `shape` starting `offset` elements into `base`'s storage region (relative to base.offset).
Tensor view_of(const Tensor& base, int64_t offset, const Shape& shape, const char* op);

}  // namespace sf
