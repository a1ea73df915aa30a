// device.h — where a tensor's bytes live: the host ("cpu") or one CUDA device ("cuda:N").
#pragma once
#include <string>

#include "error.h"

namespace sf {

enum class DeviceType : int { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  bool is_cpu() const { return type == DeviceType::CPU; }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

// "cpu", "cuda" (= cuda:0) or "cuda:N" with 0 <= N < 64.
inline Device parse_device(const std::string& s, const char* op) {
  if (s == "cpu") return {DeviceType::CPU, 0};
  if (s == "cuda") return {DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 7) {
    int n = 0;
    for (size_t i = 5; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') type_error(op, ": device must be 'cpu', 'cuda' or 'cuda:N', got '", s, "'");
      n = n * 10 + (s[i] - '0');
    }
    if (n < 64) return {DeviceType::CUDA, n};
  }
  type_error(op, ": device must be 'cpu', 'cuda' or 'cuda:N', got '", s, "'");
}

}  // namespace sf
