// packed_weights.h — the CPU matmul's packed copies of its B operand (weights), kept with B's storage.
#pragma once
#include <memory>

#include "../core/storage.h"
#include "../core/tensor.h"
#include "kernels.h"

namespace sf::cpu {

// Called from inside the matmul's stream task, before cpu::matmul(d): a packed copy of op(B) (b's elements, as d
// reads them) current for b's storage right now, to set as d.b_packed, or null (the product then packs B itself).
// `hold` keeps the copy alive while the product reads it. See packed_weights.cpp for when a copy is made.
const float* packed_weight(ThreadPool& pool, const Tensor& b, const MatmulDesc& d, std::shared_ptr<const void>& hold);

}  // namespace sf::cpu
