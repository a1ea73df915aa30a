// bench_common.h — timing and reporting for the native benchmarks (sf_bench): median wall time of repeated runs
// after warm-up; rows printed as a table and written as JSON {name, shape, ms, gflops | gbps, ref, ref_ms, ratio,
// peak_share}.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace sfbench {

struct Row {
  std::string name, shape;
  double ms = 0, gflops = -1, gbps = -1;
  std::string ref;  // what the ratio compares against ("" if none)
  double ref_ms = -1, ratio = -1, peak_share = -1;
};

// Median of `reps` timed runs (ms) after `warm` untimed ones; reps adapts so that tiny kernels run >= ~0.2 s.
inline double time_ms(const std::function<void()>& fn, int warm = 2, int reps = 0) {
  for (int i = 0; i < warm; ++i) fn();
  if (reps <= 0) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    double one = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    reps = std::clamp(static_cast<int>(200.0 / std::max(one, 1e-3)), 5, 200);
  }
  std::vector<double> t(static_cast<size_t>(reps));
  for (auto& x : t) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    x = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<size_t>(reps / 2)];
}

inline std::vector<float> randn(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline void print_rows(const std::vector<Row>& rows) {
  std::printf("%-34s %-22s %10s %10s %9s %-22s %10s %7s %6s\n", "name", "shape", "ms", "GFLOP/s", "GB/s", "ref",
              "ref ms", "ratio", "peak");
  for (const auto& r : rows) {
    char gf[32] = "", gb[32] = "", rm[32] = "", ra[32] = "", pk[32] = "";
    if (r.gflops >= 0) std::snprintf(gf, sizeof gf, "%.1f", r.gflops);
    if (r.gbps >= 0) std::snprintf(gb, sizeof gb, "%.1f", r.gbps);
    if (r.ref_ms >= 0) std::snprintf(rm, sizeof rm, "%.3f", r.ref_ms);
    if (r.ratio >= 0) std::snprintf(ra, sizeof ra, "%.2f", r.ratio);
    if (r.peak_share >= 0) std::snprintf(pk, sizeof pk, "%.0f%%", 100 * r.peak_share);
    std::printf("%-34s %-22s %10.3f %10s %9s %-22s %10s %7s %6s\n", r.name.c_str(), r.shape.c_str(), r.ms, gf, gb,
                r.ref.c_str(), rm, ra, pk);
  }
}

inline void write_json(const std::vector<Row>& rows, const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "sf_bench: cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "[\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::fprintf(f, "  {\"name\": \"%s\", \"shape\": \"%s\", \"ms\": %.6f", r.name.c_str(), r.shape.c_str(), r.ms);
    if (r.gflops >= 0) std::fprintf(f, ", \"gflops\": %.3f", r.gflops);
    if (r.gbps >= 0) std::fprintf(f, ", \"gbps\": %.3f", r.gbps);
    std::fprintf(f, ", \"ref\": \"%s\"", r.ref.c_str());
    if (r.ref_ms >= 0) std::fprintf(f, ", \"ref_ms\": %.6f", r.ref_ms);
    if (r.ratio >= 0) std::fprintf(f, ", \"ratio\": %.4f", r.ratio);
    if (r.peak_share >= 0) std::fprintf(f, ", \"peak_share\": %.4f", r.peak_share);
    std::fprintf(f, "}%s\n", i + 1 < rows.size() ? "," : "");
  }
  std::fprintf(f, "]\n");
  std::fclose(f);
}

}  // namespace sfbench
