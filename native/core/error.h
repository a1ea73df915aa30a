// error.h — the one error type native code throws.
//
// Every entry point validates its arguments before touching memory and throws sf::Error with a kind that the
// Node-API binding maps to a JavaScript TypeError, RangeError or Error. Messages name the function and the values:
//   sf::type_error("tensor: dtype must be 'float32', 'int32' or 'bfloat16', got ", name)
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace sf {

enum class ErrorKind { Type, Range, Generic };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void type_error(Args&&... args) {
  throw Error(ErrorKind::Type, cat(std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void range_error(Args&&... args) {
  throw Error(ErrorKind::Range, cat(std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void error(Args&&... args) {
  throw Error(ErrorKind::Generic, cat(std::forward<Args>(args)...));
}

}  // namespace sf
