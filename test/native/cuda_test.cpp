// cuda_test.cpp — every CUDA kernel against the CPU kernel on the same inputs. Skips (exit 77) without a GPU.
#include <cstring>

#include "check.h"
#include "core/context.h"

using namespace sf;

int main() {
  Context ctx;
  const CudaInfo& info = ctx.cuda_info();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.reason.c_str());
    return 77;
  }
  Backend& gpu = ctx.backend(Device{DeviceType::CUDA, 0});
  Backend& cpu = ctx.cpu();
  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok" : "not ok", what.c_str());
    if (!ok) ++failures;
  };
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{1000003}}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      for (RandomKind kind : {RandomKind::Uniform, RandomKind::Normal}) {
        Tensor c = empty_tensor(cpu.allocator(), {n}, dt, "t");
        Tensor g = empty_tensor(gpu.allocator(), {n}, dt, "t");
        std::vector<char> poison(g.nbytes(), static_cast<char>(0xff)), back(g.nbytes());
        gpu.stream().run_sync("poison", [&] { gpu.copy_from_host(g, poison.data()); });
        cpu.stream().run_sync("rand", [&] { cpu.random(c, kind, 99, 5, -0.5f, 2.0f); });
        gpu.stream().run_sync("rand", [&] {
          gpu.random(g, kind, 99, 5, -0.5f, 2.0f);
          gpu.copy_to_host(back.data(), g);
        });
        double worst = 0;
        bool nan = false;
        for (int64_t k = 0; k < n; ++k) {
          float a = dt == DType::f32 ? c.data<float>()[k] : bf16_to_f32(c.data<uint16_t>()[k]);
          float b;
          if (dt == DType::f32)
            std::memcpy(&b, back.data() + 4 * k, 4);
          else {
            uint16_t h;
            std::memcpy(&h, back.data() + 2 * k, 2);
            b = bf16_to_f32(h);
          }
          nan = nan || std::isnan(b);
          double rel = std::fabs(a - b) / std::max(1.0, static_cast<double>(std::fabs(a)));
          worst = std::max(worst, rel);
        }
        // uniform: bit-exact; normal: libm differences within 1e-5 (fp32) / one bf16 ulp
        double tol = kind == RandomKind::Uniform ? 0.0 : (dt == DType::f32 ? 1e-5 : 1e-2);
        expect(!nan && worst <= tol, cat("random ", kind == RandomKind::Uniform ? "uniform" : "normal", " ",
                                         dtype_name(dt), " n=", n, " max rel err ", worst));
      }
    }
    Tensor c = empty_tensor(cpu.allocator(), {n}, DType::i32, "t");
    Tensor g = empty_tensor(gpu.allocator(), {n}, DType::i32, "t");
    std::vector<int32_t> back(static_cast<size_t>(n));
    cpu.stream().run_sync("fill", [&] { cpu.fill(c, -3); });
    gpu.stream().run_sync("fill", [&] {
      gpu.fill(g, -3);
      gpu.copy_to_host(back.data(), g);
    });
    expect(std::memcmp(back.data(), c.raw(), c.nbytes()) == 0, cat("fill int32 n=", n));
  }
  std::printf("%s\n", failures ? "FAILED" : "all CUDA checks passed");
  return failures ? 1 : 0;
}
