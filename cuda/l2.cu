// l2.cu — the shared-weight path (see kernels.h): while consecutive layers apply the same block, that block's
// parameter bytes are marked "persisting" in L2 for the device's stream (an access-policy window), so that the second
// and later layers read the weights from L2 instead of HBM.
//
// Best effort: this file carries out the plan of cuda/l2_plan.h (which holds every decision, and says why) with CUDA
// calls whose errors are cleared (cudaGetLastError) and recorded in the backend's L2State, never thrown: under MPS or
// MIG, or on a device without persisting L2, the forward pass runs exactly as without a window, and backends() says
// why there is none. Everything here is host code that only enqueues: cudaStreamSetAttribute applies to the kernels
// launched on the stream after it, so setting and ending a window are ordered with the layers' kernels.
#include <cstdint>
#include <string>

#include "cuda_common.cuh"
#include "l2_plan.h"

namespace sf::cuda {

namespace {

// "cudaFoo(...) failed: cudaErrorX (text)", and the error cleared (it is not sticky: the next call is unaffected).
std::string failed(const char* call, cudaError_t e) {
  cudaGetLastError();
  return std::string(call) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

cudaAccessProperty prop(L2Access a) {
  return a == L2Access::Persisting ? cudaAccessPropertyPersisting : cudaAccessPropertyNormal;
}

cudaError_t set_window(Stream s, const L2Window& w) {
  cudaStreamAttrValue attr{};
  attr.accessPolicyWindow.base_ptr = w.bytes > 0 ? const_cast<void*>(w.base) : nullptr;
  attr.accessPolicyWindow.num_bytes = static_cast<size_t>(w.bytes > 0 ? w.bytes : 0);
  attr.accessPolicyWindow.hitRatio = w.bytes > 0 ? w.hit_ratio : 0.0f;
  attr.accessPolicyWindow.hitProp = prop(w.hit);
  attr.accessPolicyWindow.missProp = prop(w.miss);
  return cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &attr);
}

}  // namespace

L2Status persist_l2(Stream s, L2State& st, const void* base, int64_t bytes) {
  const bool start = base && bytes > 0;
  if (st.disabled) return L2Status::Off;
  if (start && !st.limits_known) {
    int dev = st.device;
    cudaError_t e = dev >= 0 ? cudaSuccess : cudaGetDevice(&dev);
    int max_persist = 0, max_window = 0;
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&max_persist, cudaDevAttrMaxPersistingL2CacheSize, dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&max_window, cudaDevAttrMaxAccessPolicyWindowSize, dev);
    if (e != cudaSuccess) {
      l2_note_failure(st, "the persisting-L2 limits could not be read: " + failed("cudaDeviceGetAttribute", e));
      return L2Status::Off;
    }
    l2_note_limits(st, L2Limits{max_persist, max_window});
    if (st.disabled) return L2Status::Off;
  }
  L2Plan p = plan_l2(st, base, bytes);
  if (p.set_carve_out) {
    cudaError_t e = cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, static_cast<size_t>(p.carve_out_bytes));
    if (e == cudaSuccess) {
      l2_note_carve_out(st, true, p.carve_out_bytes, p.carve_out_bytes, "");
    } else {
      const std::string why = failed("cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize)", e);
      size_t in_effect = 0;
      if (cudaDeviceGetLimit(&in_effect, cudaLimitPersistingL2CacheSize) != cudaSuccess) {
        cudaGetLastError();
        in_effect = 0;
      }
      l2_note_carve_out(st, false, p.carve_out_bytes, static_cast<int64_t>(in_effect), why);
    }
    if (st.disabled) return L2Status::Off;
    p = plan_l2(st, base, bytes);  // the set-aside is settled now: the window's hit ratio follows from it
  }
  if (!p.set_window) return L2Status::Unchanged;
  const cudaError_t e = set_window(s, p.window);
  if (e != cudaSuccess) {
    const std::string why = failed("cudaStreamSetAttribute(cudaStreamAttributeAccessPolicyWindow)", e);
    if (set_window(s, L2Window{}) != cudaSuccess) cudaGetLastError();  // best effort: leave no window behind
    l2_note_failure(st, why);
    return L2Status::Off;
  }
  l2_note_window(st, p);
  switch (st.phase) {
    case L2Phase::Persisting: return L2Status::Persisting;
    case L2Phase::Demoting: return L2Status::Demoting;
    default: return L2Status::Cleared;
  }
}

}  // namespace sf::cuda
