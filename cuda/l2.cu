// l2.cu — the shared-weight path (see kernels.h): while consecutive layers apply the same block, that block's
// parameter window is marked "persisting" in L2 for the device's stream (an access-policy window), so that the second
// and later layers read the weights from L2 instead of HBM. The persisting carve-out is sized to the window (capped by
// the device's maximum), and ending the window resets the persisting lines so that they do not crowd out other data.
// A no-op on devices without a persisting L2 (cudaDevAttrMaxPersistingL2CacheSize = 0).
#include <cstdint>

#include "cuda_common.cuh"

namespace sf::cuda {

void persist_l2(Stream s, const void* base, int64_t bytes) {
  int dev = 0;
  SF_CUDA_CALL(cudaGetDevice(&dev));
  int max_persist = 0, max_window = 0;
  SF_CUDA_CALL(cudaDeviceGetAttribute(&max_persist, cudaDevAttrMaxPersistingL2CacheSize, dev));
  if (max_persist <= 0) return;
  SF_CUDA_CALL(cudaDeviceGetAttribute(&max_window, cudaDevAttrMaxAccessPolicyWindowSize, dev));
  cudaStreamAttrValue attr{};
  if (!base || bytes <= 0 || max_window <= 0) {
    attr.accessPolicyWindow.base_ptr = nullptr;
    attr.accessPolicyWindow.num_bytes = 0;
    attr.accessPolicyWindow.hitRatio = 0.0f;
    attr.accessPolicyWindow.hitProp = cudaAccessPropertyNormal;
    attr.accessPolicyWindow.missProp = cudaAccessPropertyNormal;
    SF_CUDA_CALL(cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &attr));
    SF_CUDA_CALL(cudaCtxResetPersistingL2Cache());
    return;
  }
  const int64_t window = bytes < max_window ? bytes : max_window;
  const int64_t carve = window < max_persist ? window : max_persist;
  SF_CUDA_CALL(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, static_cast<size_t>(carve)));
  attr.accessPolicyWindow.base_ptr = const_cast<void*>(base);
  attr.accessPolicyWindow.num_bytes = static_cast<size_t>(window);
  // The fraction of the window that may persist: all of it when it fits the carve-out.
  attr.accessPolicyWindow.hitRatio = static_cast<float>(static_cast<double>(carve) / static_cast<double>(window));
  attr.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
  attr.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
  SF_CUDA_CALL(cudaStreamSetAttribute(s, cudaStreamAttributeAccessPolicyWindow, &attr));
}

}  // namespace sf::cuda
