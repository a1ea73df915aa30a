#include "tensor.h"

#include <algorithm>
#include <sstream>

namespace sf {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t checked_numel(const Shape& s, const char* op) {
  if (s.size() > kMaxRank) range_error(op, ": rank ", s.size(), " exceeds the maximum of ", kMaxRank);
  int64_t n = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] < 0) range_error(op, ": dimension ", i, " of shape ", shape_str(s), " is negative");
    if (s[i] > kMaxNumel) range_error(op, ": dimension ", i, " of shape ", shape_str(s), " exceeds 2^48");
  }
  // The product of the non-zero dimensions is bounded too, so that no partial product a kernel forms (rows, M * N,
  // B * T, ...) can overflow, even for a shape with a zero dimension and no elements.
  bool empty = false;
  for (int64_t d : s) {
    if (d == 0) {
      empty = true;
      continue;
    }
    if (n > kMaxNumel / d)
      range_error(op, ": shape ", shape_str(s), std::count(s.begin(), s.end(), int64_t{0}) ? " (counting its non-zero dimensions)" : "",
                  " has more than 2^48 elements");
    n *= d;
  }
  return empty ? 0 : n;
}

std::string Tensor::describe() const { return cat(dtype_name(dtype), shape_str(shape), " on ", device().str()); }

Tensor empty_tensor(const std::shared_ptr<Allocator>& alloc, const Shape& shape, DType dtype, const char* op) {
  int64_t n = checked_numel(shape, op);
  Tensor t;
  try {
    t.storage = std::make_shared<Storage>(alloc, static_cast<size_t>(n) * dtype_size(dtype));
  } catch (const Error& e) {
    throw Error(e.kind(), cat(op, ": ", e.what()));
  }
  t.shape = shape;
  t.dtype = dtype;
  return t;
}

Tensor view_of(const Tensor& base, int64_t offset, const Shape& shape, const char* op) {
  int64_t n = checked_numel(shape, op);
  int64_t avail = base.numel();
  if (offset < 0 || offset > avail || n > avail - offset)
    range_error(op, ": a view of shape ", shape_str(shape), " (", n, " elements) at offset ", offset,
                " does not fit in a tensor of ", avail, " elements");
  Tensor v;
  v.storage = base.storage;
  v.offset = base.offset + offset;
  v.shape = shape;
  v.dtype = base.dtype;
  return v;
}

bool ids_known_valid(const Tensor& ids, int64_t n, int64_t lo, int64_t hi, bool has_skip, int32_t skip) {
  if (n <= 0) return true;
  if (!ids.storage || ids.dtype != DType::i32 || n > ids.numel()) return false;
  const size_t begin = ids.byte_begin();
  const std::optional<IdBounds> b = ids.storage->known_ids(begin, begin + static_cast<size_t>(n) * sizeof(int32_t));
  return b && b->all_valid(lo, hi, has_skip, skip);
}

}  // namespace sf
