// core_test.cpp — storage, tensor views, shape checks, bf16 conversion, the thread pool and the stream, without Node.
#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "check.h"
#include "core/context.h"
#include "core/philox.h"
#include "cpu/cpu_backend.h"

using namespace sf;

TEST(numel_checks_rank_sign_and_overflow) {
  CHECK_EQ(checked_numel({2, 3, 4}, "t"), int64_t{24});
  CHECK_EQ(checked_numel({}, "t"), int64_t{1});
  CHECK_EQ(checked_numel({5, 0, int64_t{1} << 40}, "t"), int64_t{0});
  CHECK_THROWS(checked_numel({2, -1}, "t"), ErrorKind::Range);
  CHECK_THROWS(checked_numel({int64_t{1} << 30, int64_t{1} << 30}, "t"), ErrorKind::Range);
  CHECK_THROWS(checked_numel(Shape(9, 1), "t"), ErrorKind::Range);
  // Issue 13.6: a zero dimension does not exempt the others from the bound (their product would overflow int64 in
  // any partial product a kernel forms), and numel() of such a shape is 0 without overflowing.
  CHECK_THROWS(checked_numel({int64_t{1} << 47, int64_t{1} << 47, 0}, "t"), ErrorKind::Range);
  CHECK_THROWS(checked_numel({0, int64_t{1} << 40, int64_t{1} << 40}, "t"), ErrorKind::Range);
  {
    Tensor z;
    z.shape = {int64_t{1} << 47, int64_t{1} << 47, 0};
    CHECK_EQ(z.numel(), int64_t{0});
  }
}

TEST(storage_counts_bytes_and_frees_when_last_view_goes) {
  auto alloc = std::make_shared<CpuAllocator>();
  auto& c = alloc->counters();
  {
    Tensor t = empty_tensor(alloc, {4, 8}, DType::f32, "t");
    CHECK_EQ(c.bytes.load(), int64_t{128});
    CHECK_EQ(c.storages.load(), int64_t{1});
    CHECK(reinterpret_cast<uintptr_t>(t.raw()) % 64 == 0);
    Tensor v = view_of(t, 8, {2, 4}, "v");
    t = Tensor{};
    CHECK_EQ(c.storages.load(), int64_t{1});  // the view keeps the storage alive
    CHECK_EQ(v.offset, int64_t{8});
  }
  CHECK_EQ(c.bytes.load(), int64_t{0});
  CHECK_EQ(c.storages.load(), int64_t{0});
  CHECK_EQ(c.peak_bytes.load(), int64_t{128});
}

TEST(views_are_bounds_checked) {
  auto alloc = std::make_shared<CpuAllocator>();
  Tensor t = empty_tensor(alloc, {10}, DType::f32, "t");
  Tensor v = view_of(t, 2, {4}, "v");
  Tensor w = view_of(v, 1, {3}, "w");
  CHECK_EQ(w.offset, int64_t{3});
  CHECK_THROWS(view_of(v, 1, {4}, "w"), ErrorKind::Range);
  CHECK_THROWS(view_of(t, -1, {1}, "w"), ErrorKind::Range);
  CHECK_THROWS(view_of(t, 11, {0}, "w"), ErrorKind::Range);
  CHECK_EQ(view_of(t, 10, {0}, "w").numel(), int64_t{0});
}

TEST(cpu_allocator_refuses_more_than_physical_memory) {
  auto alloc = std::make_shared<CpuAllocator>();
  CHECK_THROWS(empty_tensor(alloc, {int64_t{1} << 46}, DType::f32, "t"), ErrorKind::Range);
  CHECK_EQ(alloc->counters().bytes.load(), int64_t{0});
}

TEST(bf16_rounds_to_nearest_even) {
  CHECK_EQ(f32_to_bf16(1.0f), uint16_t{0x3f80});
  CHECK_EQ(bf16_to_f32(f32_to_bf16(1.5f)), 1.5f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to even (1.0).
  CHECK_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  CHECK_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  CHECK(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  CHECK(std::isinf(bf16_to_f32(f32_to_bf16(INFINITY))));
}

TEST(thread_pool_covers_every_index_once) {
  ThreadPool pool(4);
  CHECK_EQ(pool.threads(), 4);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{1000}, int64_t{100003}}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 3, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
    });
    bool once = true;
    for (auto& h : hits) once = once && h.load() == 1;
    CHECK(once);
  }
  pool.set_threads(2);
  CHECK_EQ(pool.threads(), 2);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(1000, 10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  CHECK_EQ(sum.load(), int64_t{499500});
  CHECK_THROWS(pool.set_threads(0), ErrorKind::Range);
}

TEST(thread_pool_uses_several_threads) {
  ThreadPool pool(2);
  std::mutex mu;
  std::set<std::thread::id> ids;
  pool.parallel_for(64, 1, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lk(mu);
    ids.insert(std::this_thread::get_id());
  });
  CHECK_EQ(ids.size(), size_t{2});
}

TEST(stream_runs_in_order_and_reports_errors_once) {
  Stream s("test");
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) s.submit("push", [&order, i] { order.push_back(i); });
  s.wait_all();
  bool sorted = order.size() == 100;
  for (int i = 0; i < 100 && sorted; ++i) sorted = order[static_cast<size_t>(i)] == i;
  CHECK(sorted);
  s.submit("boom", [] { throw std::runtime_error("kaput"); });
  s.wait_all();  // waiting never throws: the failure is kept for take_failures()
  std::vector<FailurePtr> fs = s.take_failures();
  CHECK_EQ(fs.size(), size_t{1});
  CHECK(!fs.empty() && fs[0]->message.find("boom") != std::string::npos &&
        fs[0]->message.find("kaput") != std::string::npos && fs[0]->message.find("test stream") != std::string::npos);
  CHECK(s.take_failures().empty());  // reported once, then cleared
  int after = 0;
  s.run_sync("after", [&] { after = 1; });
  CHECK_EQ(after, 1);
  // run_sync throws its own task's error to its caller, with the kind, and records nothing
  bool thrown = false;
  try {
    s.run_sync("mine", [] { range_error("bad value"); });
  } catch (const Error& e) {
    thrown = e.kind() == ErrorKind::Range && std::string(e.what()).find("mine") != std::string::npos;
  }
  CHECK(thrown);
  CHECK(s.take_failures().empty());
}

// Design invariant 7: a failed task marks what it writes; a later task reading it fails with the cause and marks its
// own outputs; unrelated tensors and other windows of the same storage are untouched; a successful write clears.
TEST(stream_failed_ops_poison_their_outputs_only) {
  auto alloc = std::make_shared<CpuAllocator>();
  Stream s("test");
  Tensor a = empty_tensor(alloc, {4}, DType::f32, "t");
  Tensor b = empty_tensor(alloc, {4}, DType::f32, "t");
  Tensor buf = empty_tensor(alloc, {8}, DType::f32, "t");
  Tensor lo = view_of(buf, 0, {4}, "t"), hi = view_of(buf, 4, {4}, "t");
  s.submit("badop", [] { range_error("badop: id 9 is out of range [0, 5)"); }, Effects{{}, {a, lo}});
  s.wait_all();
  CHECK(a.failure() != nullptr);
  CHECK(lo.failure() != nullptr);
  CHECK(hi.failure() == nullptr);  // the other window of the same storage
  CHECK(b.failure() == nullptr);
  CHECK(buf.failure() != nullptr);  // the whole buffer covers the failed window
  CHECK(a.failure() && a.failure()->kind == ErrorKind::Range && a.failure()->message.find("badop") != std::string::npos);
  bool ran = false;
  s.submit("next", [&] { ran = true; }, Effects{{a}, {b}});
  s.wait_all();
  CHECK(!ran);  // an op whose input failed does not run
  CHECK(b.failure() && b.failure()->message.find("next") != std::string::npos &&
        b.failure()->message.find("badop") != std::string::npos && b.failure()->kind == ErrorKind::Range);
  CHECK_EQ(s.take_failures().size(), size_t{2});
  s.submit("overwrite", [] {}, Effects{{}, {a}});
  s.wait_all();
  CHECK(a.failure() == nullptr);
  CHECK(b.failure() != nullptr);
  // a partial overwrite keeps the rest failed
  s.submit("half", [] {}, Effects{{}, {view_of(buf, 0, {2}, "t")}});
  s.wait_all();
  CHECK(view_of(buf, 0, {2}, "t").failure() == nullptr);
  CHECK(view_of(buf, 2, {2}, "t").failure() != nullptr);
  // an empty output of a failed op is failed too
  Tensor e = empty_tensor(alloc, {0}, DType::f32, "t");
  s.submit("empty", [] { error("empty: no"); }, Effects{{}, {e}});
  s.wait_all();
  CHECK(e.failure() != nullptr);
}

TEST(stream_runs_off_the_calling_thread) {
  Stream s("test");
  std::thread::id worker;
  s.run_sync("id", [&] { worker = std::this_thread::get_id(); });
  CHECK(worker != std::this_thread::get_id());
}

TEST(context_gives_a_cpu_backend_and_refuses_cuda_when_absent) {
  Context ctx;
  CHECK(ctx.backend(Device{DeviceType::CPU, 0}).device().is_cpu());
  if (!ctx.cuda_info().available) {
    CHECK(!ctx.cuda_info().reason.empty());
    CHECK_THROWS(ctx.backend(Device{DeviceType::CUDA, 0}), ErrorKind::Generic);
  }
  CHECK_THROWS(parse_device("gpu", "t"), ErrorKind::Type);
  CHECK_THROWS(parse_device("cuda:x", "t"), ErrorKind::Type);
  CHECK(parse_device("cuda:3", "t").index == 3);
}

TEST_MAIN()
