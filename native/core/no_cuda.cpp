// no_cuda.cpp — the CUDA entry points of a binary built without CUDA (node-gyp, or cmake-js with no nvcc or
// SHAREDFORMER_CUDA=OFF). backends() reports why CUDA is unavailable; asking for a CUDA device is a clear error.
#include "backend.h"

namespace sf {

CudaInfo cuda_probe() {
  CudaInfo info;
  info.reason =
      "this binary was built without CUDA (node-gyp build, or cmake-js without nvcc or with "
      "--CDSHAREDFORMER_CUDA=OFF); install the CUDA package or rebuild with `npm run build` where nvcc is present";
  return info;
}

std::unique_ptr<Backend> make_cuda_backend(int index) {
  error("device 'cuda:", index, "' is not available: ", cuda_probe().reason);
}

}  // namespace sf
