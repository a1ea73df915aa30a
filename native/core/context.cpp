#include "context.h"

#include "../cpu/cpu_backend.h"

namespace sf {

Context::Context() : pool_(std::make_unique<ThreadPool>()), cpu_(std::make_unique<CpuBackend>(*pool_)) {}

// Backends (and their streams, whose tasks may use the pool) go before the pool.
// The distributed runtime goes after the streams (their queued collectives finish first) and before the pool.
Context::~Context() {
  cuda_.clear();
  cpu_.reset();
  comm_.reset();
  pool_.reset();
}

Comm* Context::comm() {
  std::lock_guard<std::mutex> lk(mu_);
  return comm_.get();
}

Comm& Context::init_comm() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!comm_) comm_ = std::make_unique<Comm>();
  return *comm_;
}

const CommProbe& Context::comm_probe() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!comm_probe_) comm_probe_ = std::make_unique<CommProbe>(sf::comm_probe());
  return *comm_probe_;
}

const CudaInfo& Context::cuda_info() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!probed_) {
    cuda_info_ = cuda_probe();
    probed_ = true;
  }
  return cuda_info_;
}

Backend& Context::backend(Device d, const char* op) {
  if (d.is_cpu()) return *cpu_;
  const CudaInfo& info = cuda_info();
  if (!info.available) error(op, ": device '", d.str(), "' is not available: ", info.reason);
  if (d.index >= static_cast<int>(info.devices.size()))
    range_error(op, ": device '", d.str(), "' does not exist: this machine has ", info.devices.size(),
                " CUDA device(s)");
  std::lock_guard<std::mutex> lk(mu_);
  auto it = cuda_.find(d.index);
  if (it == cuda_.end()) it = cuda_.emplace(d.index, make_cuda_backend(d.index)).first;
  return *it->second;
}

std::vector<Backend*> Context::backends() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<Backend*> out{cpu_.get()};
  for (auto& kv : cuda_) out.push_back(kv.second.get());
  return out;
}

}  // namespace sf
