// adamw_math.h — the AdamW update, written once for every device (native/cpu/optim.cpp, cuda/optim.cu), as philox.h
// is for the random streams.
//
// adamw_constants() turns the step's hyperparameters into the per-step constants, in double on the host and then
// rounded to float (so both devices start from the same bits); adamw_update() is the per-element arithmetic, in one
// order, over a float (CUDA) or a vector of floats (the CPU's SF_VARIANTS). The square root is the caller's (sqrtf
// on the device, the ISA's vector square root on the CPU): both are correctly rounded, so an element's result does
// not depend on the device beyond the compilers' contraction of a * b + c.
#pragma once
#include <cmath>
#include <cstdint>

#include "philox.h"  // SF_HD

namespace sf {

struct AdamWConst {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;     // lr / (1 - beta1^step)
  float inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^step)
  float eps;
  float lr_wd;         // lr * weight_decay (times decay[i] per element)
  float keep;          // 1 - lr * weight_decay, when there is no decay mask
};

// The constants of step `step` (>= 1), computed on the host.
inline AdamWConst adamw_constants(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  const double t = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), t);
  const double lr_d = static_cast<double>(lr), wd = static_cast<double>(weight_decay);
  AdamWConst c;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(beta1));
  c.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(beta2));
  c.step_size = static_cast<float>(lr_d / bc1);
  c.inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = eps;
  c.lr_wd = static_cast<float>(lr_d * wd);
  c.keep = static_cast<float>(1.0 - lr_d * wd);
  return c;
}

// One AdamW step of parameter p with gradient g and moments m, v (T: float, or a vector of floats with scalar
// broadcasting). dec is the element's decay-mask value, read only when has_mask (else the decay is lr * weight_decay
// for every element). sqrt_of(x) is the square root of x, element-wise. Vectors go by reference: no vector crosses a
// call boundary by value where the call is not inlined (an -O0 build; see native/cpu/optim.cpp's vsqrt).
template <typename T, typename Sqrt>
SF_HD void adamw_update(const AdamWConst& c, T& p, const T& g, T& m, T& v, const T& dec, bool has_mask, Sqrt sqrt_of) {
  p = has_mask ? p * (1.0f - c.lr_wd * dec) : p * c.keep;  // decoupled weight decay, on the old parameter
  m = c.beta1 * m + c.one_minus_beta1 * g;
  v = c.beta2 * v + c.one_minus_beta2 * (g * g);
  const T denom = sqrt_of(v) * c.inv_bc2_sqrt + c.eps;
  p = p - c.step_size * (m / denom);
}

}  // namespace sf
