// check.h — the native tests' harness: CHECK / CHECK_NEAR record failures and keep going; TEST_MAIN runs the tests,
// prints one line per test and exits non-zero if any failed, or with 77 (ctest's SKIP_RETURN_CODE) if asked to skip.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace sfcheck {

struct Registry {
  std::vector<std::pair<std::string, std::function<void()>>> tests;
  int failures = 0;
  static Registry& get() {
    static Registry r;  // test binaries only: not part of the addon
    return r;
  }
};

struct Register {
  Register(const char* name, std::function<void()> fn) { Registry::get().tests.emplace_back(name, std::move(fn)); }
};

inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what.c_str());
  ++Registry::get().failures;
}

inline int run_all() {
  int failed_tests = 0;
  for (auto& [name, fn] : Registry::get().tests) {
    int before = Registry::get().failures;
    try {
      fn();
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, std::string("unexpected exception: ") + e.what());
    }
    bool ok = Registry::get().failures == before;
    std::printf("%s %s\n", ok ? "ok" : "not ok", name.c_str());
    if (!ok) ++failed_tests;
  }
  std::printf("%zu tests, %d failed\n", Registry::get().tests.size(), failed_tests);
  return failed_tests ? 1 : 0;
}

}  // namespace sfcheck

#define SF_CAT2(a, b) a##b
#define SF_CAT(a, b) SF_CAT2(a, b)
#define TEST(name)                                                              \
  static void name();                                                           \
  static sfcheck::Register SF_CAT(reg_, name)(#name, name);                    \
  static void name()
#define CHECK(cond)                                             \
  do {                                                          \
    if (!(cond)) sfcheck::fail(__FILE__, __LINE__, #cond);      \
  } while (0)
#define CHECK_EQ(a, b)                                                                                  \
  do {                                                                                                  \
    auto sf_a_ = (a);                                                                                   \
    auto sf_b_ = (b);                                                                                   \
    if (!(sf_a_ == sf_b_))                                                                              \
      sfcheck::fail(__FILE__, __LINE__, std::string(#a " == " #b ": ") + std::to_string(sf_a_) + " vs " + \
                                            std::to_string(sf_b_));                                     \
  } while (0)
#define CHECK_NEAR(a, b, tol)                                                                              \
  do {                                                                                                     \
    double sf_a_ = (a), sf_b_ = (b);                                                                       \
    if (!(std::fabs(sf_a_ - sf_b_) <= (tol)))                                                              \
      sfcheck::fail(__FILE__, __LINE__, std::string(#a " ~ " #b ": ") + std::to_string(sf_a_) + " vs " +   \
                                            std::to_string(sf_b_));                                        \
  } while (0)
// CHECK_THROWS(expr, kind): expr must throw sf::Error of that ErrorKind.
#define CHECK_THROWS(expr, k)                                                     \
  do {                                                                            \
    bool sf_thrown_ = false;                                                      \
    try {                                                                         \
      (void)(expr);                                                               \
    } catch (const sf::Error& e) {                                                \
      sf_thrown_ = e.kind() == (k);                                               \
    }                                                                             \
    if (!sf_thrown_) sfcheck::fail(__FILE__, __LINE__, "expected throw: " #expr); \
  } while (0)
#define TEST_MAIN() \
  int main() { return sfcheck::run_all(); }
