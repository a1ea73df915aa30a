// core_test.cpp — storage, tensor views, shape checks, bf16 conversion, the thread pool and the stream, without Node.
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
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

// Back-to-back jobs of random sizes and grains, some after a pause long enough for the workers to fall asleep (past
// their ~50 us spin), some while they still spin: every index of every job runs exactly once, and no chunk of a job
// runs after its parallel_for has returned.
TEST(thread_pool_jobs_back_to_back_with_sleeping_and_late_workers) {
  for (int threads : {2, 3, 5}) {
    ThreadPool pool(threads);
    std::mt19937 g(static_cast<unsigned>(threads));
    bool ok = true;
    for (int job = 0; job < 3000 && ok; ++job) {
      const int64_t n = 1 + static_cast<int64_t>(g() % 97);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      const int tag = job;
      std::atomic<int> wrong{0};
      pool.parallel_for(n, 1 + static_cast<int64_t>(g() % 4), [&, tag](int64_t b, int64_t e) {
        if (tag != job) wrong++;  // a chunk of an old job run after it returned would see the new job
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
      });
      for (auto& h : hits) ok = ok && h.load() == 1;
      ok = ok && wrong.load() == 0;
      if (g() % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));  // workers go to sleep
    }
    CHECK(ok);
  }
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

// Recording (stream.h): recordable work submitted by the capturing thread is recorded, not run; a replay runs it in
// order, each time, as ordinary tasks (a failure marks what the task writes, an input failure stops it); other threads'
// work runs meanwhile; reads, waits and unrecordable work on the capturing thread throw; abort drops the recording.
TEST(stream_records_and_replays) {
  auto alloc = std::make_shared<CpuAllocator>();
  Stream s("test");
  std::atomic<int> x{0};
  s.begin_capture("rec");
  CHECK(s.capturing());
  s.submit("add", [&x] { x += 1; }, {}, Stream::Record::Allow);
  s.submit("double", [&x] { x = x * 2; }, {}, Stream::Record::Allow);
  std::thread other([&] { s.wait(s.submit("other", [] {})); });  // not the capturing thread: runs now
  other.join();
  bool refused = false, wait_refused = false, sync_refused = false, nested = false;
  try {
    s.submit("read", [] {});  // Record::Refuse
  } catch (const Error& e) {
    refused = std::string(e.what()).find("read: cannot run while the test stream records") != std::string::npos;
  }
  try {
    s.wait_all();
  } catch (const Error&) {
    wait_refused = true;
  }
  try {
    s.run_sync("sync", [] {});
  } catch (const Error&) {
    sync_refused = true;
  }
  try {
    s.begin_capture("again");
  } catch (const Error& e) {
    nested = std::string(e.what()).find("already recording") != std::string::npos;
  }
  CHECK(refused && wait_refused && sync_refused && nested);
  std::shared_ptr<const Stream::Recording> r = s.end_capture("rec");
  CHECK(!s.capturing());
  CHECK_EQ(r->items.size(), size_t{2});
  s.wait_all();
  CHECK_EQ(x.load(), 0);  // nothing recorded ran
  s.replay(*r);
  s.replay(*r);
  s.wait_all();
  CHECK_EQ(x.load(), 6);  // ((0 + 1) * 2 + 1) * 2, in order
  // replayed tasks keep the failure rules
  Tensor a = empty_tensor(alloc, {4}, DType::f32, "t"), b = empty_tensor(alloc, {4}, DType::f32, "t");
  std::atomic<int> fail{1}, ran{0};
  s.begin_capture("rec");
  s.submit("maybe", [&fail] { if (fail) range_error("maybe: failed"); }, Effects{{}, {a}}, Stream::Record::Allow);
  s.submit("next", [&ran] { ++ran; }, Effects{{a}, {b}}, Stream::Record::Allow);
  r = s.end_capture("rec");
  s.replay(*r);
  s.wait_all();
  CHECK(a.failure() && b.failure() && ran == 0);
  CHECK(b.failure() && b.failure()->message.find("maybe: failed") != std::string::npos);
  fail = 0;
  s.replay(*r);
  s.wait_all();
  CHECK(!a.failure() && !b.failure() && ran == 1);  // a successful replay clears them
  CHECK_EQ(s.take_failures().size(), size_t{2});
  // abort drops what was recorded; ending without a capture throws
  s.begin_capture("rec");
  s.submit("dropped", [&x] { x = -1; }, {}, Stream::Record::Allow);
  s.abort_capture();
  s.abort_capture();  // no-op
  s.wait_all();
  CHECK_EQ(x.load(), 6);
  bool no_capture = false;
  try {
    s.end_capture("end");
  } catch (const Error& e) {
    no_capture = std::string(e.what()).find("end: the test stream is not recording") != std::string::npos;
  }
  CHECK(no_capture);
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

// ---- ids known on the host (IdBounds, Storage::note_ids / forget_ids / known_ids, ids_known_valid) -----------------

// The brute-force answer: every value in [lo, hi) or equal to skip (when has_skip).
static bool valid_ids(const std::vector<int32_t>& v, int64_t lo, int64_t hi, bool has_skip, int32_t skip) {
  for (int32_t x : v)
    if (!(has_skip && x == skip) && (x < lo || x >= hi)) return false;
  return true;
}

TEST(id_bounds_decide_ids_with_and_without_a_skipped_value) {
  const int32_t a[] = {3, 1, 4, 1, 5};
  IdBounds b = IdBounds::of(a, 5);
  CHECK_EQ(b.min1, int64_t{1});
  CHECK_EQ(b.min2, int64_t{3});
  CHECK_EQ(b.max1, int64_t{5});
  CHECK_EQ(b.max2, int64_t{4});
  CHECK(b.all_valid(0, 6, false, 0));
  CHECK(!b.all_valid(0, 5, false, 0));
  CHECK(!b.all_valid(2, 6, false, 0));
  // cross-entropy targets: the ignored value is the minimum, the rest must be in range
  const int32_t t[] = {-100, 2, 3, -100};
  IdBounds tb = IdBounds::of(t, 4);
  CHECK(tb.all_valid(0, 4, true, -100));
  CHECK(!tb.all_valid(0, 4, false, 0));
  CHECK(!tb.all_valid(0, 3, true, -100));
  CHECK(!tb.all_valid(0, 4, true, 2));
  const int32_t top[] = {0, 1, 99};  // the skipped value is the maximum
  CHECK(IdBounds::of(top, 3).all_valid(0, 2, true, 99));
  CHECK(!IdBounds::of(top, 3).all_valid(0, 1, true, 99));
  const int32_t all_skip[] = {-100, -100};
  CHECK(IdBounds::of(all_skip, 2).all_valid(0, 1, true, -100));
  CHECK(!IdBounds::of(all_skip, 2).all_valid(0, 1, false, 0));
  const int32_t mid[] = {-1, 7, 9};  // a skipped value strictly inside proves nothing about the others
  CHECK(!IdBounds::of(mid, 3).all_valid(0, 10, true, 7));
  CHECK(IdBounds::of(nullptr, 0).all_valid(0, 0, false, 0));  // no values
  CHECK(IdBounds::single(5).all_valid(0, 6, false, 0));
  CHECK(!IdBounds::single(5).all_valid(0, 5, false, 0));
  CHECK(IdBounds::single(-100).all_valid(0, 5, true, -100));
  CHECK(IdBounds::of(a, 5).all_valid(INT32_MIN, INT64_C(2147483648), false, 0));
  // merged bounds: the union's two smallest and two largest distinct values
  const int32_t p[] = {1, 2}, q[] = {0, 5};
  IdBounds m = IdBounds::merge(IdBounds::of(p, 2), IdBounds::of(q, 2));
  CHECK_EQ(m.min1, int64_t{0});
  CHECK_EQ(m.min2, int64_t{1});
  CHECK_EQ(m.max1, int64_t{5});
  CHECK_EQ(m.max2, int64_t{2});
  IdBounds m2 = IdBounds::merge(IdBounds::of(all_skip, 2), IdBounds::single(3));
  CHECK(m2.all_valid(0, 4, true, -100));
  CHECK(!m2.all_valid(0, 3, true, -100));
  // exhaustively against brute force: one run, and a run split in two and merged, are exact (so never let a bad id
  // through, and never send valid ids to the device check)
  uint32_t r = 12345;
  auto next = [&r](int mod) {
    r = r * 1664525u + 1013904223u;
    return static_cast<int>((r >> 8) % static_cast<uint32_t>(mod));
  };
  for (int iter = 0; iter < 4000; ++iter) {
    std::vector<int32_t> v(static_cast<size_t>(next(7)));
    for (int32_t& x : v) x = next(10) - 3;
    const size_t cut = v.empty() ? 0 : static_cast<size_t>(next(static_cast<int>(v.size()) + 1));
    const IdBounds whole = IdBounds::of(v.data(), static_cast<int64_t>(v.size()));
    const IdBounds split = IdBounds::merge(IdBounds::of(v.data(), static_cast<int64_t>(cut)),
                                           IdBounds::of(v.data() + cut, static_cast<int64_t>(v.size() - cut)));
    const int64_t lo = next(5) - 2, hi = lo + next(7);
    const bool has_skip = next(2) == 1;
    const int32_t skip = next(10) - 3;
    const bool want = valid_ids(v, lo, hi, has_skip, skip);
    CHECK(whole.all_valid(lo, hi, has_skip, skip) == want);
    CHECK(split.all_valid(lo, hi, has_skip, skip) == want);
  }
}

TEST(storage_notes_id_bounds_and_forgets_them_where_written) {
  auto alloc = std::make_shared<CpuAllocator>();
  Storage st(alloc, 80);
  CHECK(!st.known_ids(0, 64));  // nothing noted
  const int32_t v[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  st.note_ids(0, 64, IdBounds::of(v, 16));
  CHECK(st.known_ids(0, 64) && st.known_ids(0, 64)->max1 == 15);
  CHECK(st.known_ids(16, 32));  // a window: the whole upload's bounds still bound it
  CHECK(!st.known_ids(0, 68));  // bytes past the upload are unknown
  CHECK(!st.known_ids(64, 80));
  st.forget_ids(8, 12);  // one value written
  CHECK(!st.known_ids(0, 64));
  CHECK(!st.known_ids(4, 12));
  CHECK(st.known_ids(0, 8));
  CHECK(st.known_ids(12, 64));
  st.forget_ids(14, 15);  // one byte of a value (a write through a narrower dtype's window)
  CHECK(!st.known_ids(12, 16));
  CHECK(st.known_ids(16, 20));
  st.note_ids(8, 16, IdBounds::single(77));  // a second upload into a window
  auto b = st.known_ids(0, 64);
  CHECK(b && b->min1 == 0 && b->max1 == 77);
  // a new upload over the whole range replaces the old bounds
  st.note_ids(0, 80, IdBounds::single(3));
  b = st.known_ids(0, 80);
  CHECK(b && b->min1 == 3 && b->max1 == 3);
  st.forget_ids(0, 80);
  CHECK(!st.known_ids(0, 4));
  CHECK(st.known_ids(4, 4));  // an empty range holds nothing to know
  // two uploads side by side cover a read across both
  st.note_ids(0, 40, IdBounds::of(v, 10));
  st.note_ids(40, 80, IdBounds::single(100));
  b = st.known_ids(0, 80);
  CHECK(b && b->min1 == 0 && b->max1 == 100 && b->max2 == 9);
  // at most kMaxIdRanges are kept: the oldest are forgotten (never wrongly kept)
  st.forget_ids(0, 80);
  for (size_t i = 0; i < 20; ++i) st.note_ids(4 * i, 4 * i + 4, IdBounds::single(static_cast<int32_t>(i)));
  CHECK(!st.known_ids(0, 4));
  CHECK(!st.known_ids(12, 16));
  CHECK(st.known_ids(16, 80));
}

// Uploads note bounds inside their stream task; every other write (a kernel, a copy, a partial window, a failed
// task) makes the bytes it writes unknown, so only ids untouched since their upload are decided on the host.
TEST(stream_writes_forget_noted_ids_and_uploads_note_them) {
  Context ctx;
  Backend& be = ctx.backend(Device{DeviceType::CPU, 0});
  Stream& s = be.stream();
  Tensor buf = empty_tensor(be.allocator(), {8}, DType::i32, "t");
  const int32_t host[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  auto upload = [&](const Tensor& dst, const int32_t* src) {
    s.submit("upload", [&be, dst, src] { be.upload(dst, src); }, Effects{{}, {dst}});
    s.wait_all();
  };
  CHECK(!ids_known_valid(buf, 8, 0, 8, false, 0));  // never written by an upload
  upload(buf, host);
  CHECK(buf.data<int32_t>()[5] == 5);
  CHECK(ids_known_valid(buf, 8, 0, 8, false, 0));
  CHECK(!ids_known_valid(buf, 8, 0, 7, false, 0));  // 7 is out of range: not proven (the device check decides)
  CHECK(ids_known_valid(buf, 7, 0, 8, false, 0));   // the first n values only: still bounded by the upload's
  CHECK(ids_known_valid(buf, 0, 0, 0, false, 0));   // no ids
  CHECK(!ids_known_valid(buf, 9, 0, 8, false, 0));  // more than the tensor holds
  Tensor w = view_of(buf, 2, {3}, "t");  // a view shares the storage's bounds (those of the whole upload)
  CHECK(ids_known_valid(w, 3, 0, 8, false, 0));
  CHECK(!ids_known_valid(w, 3, 0, 5, false, 0));  // conservative: 2..4 are in range, but the bounds say 0..7
  // a kernel writes one element (a window of it): that window is unknown, the rest stays known
  s.submit("kernel", [buf] { buf.data<int32_t>()[3] = 99; }, Effects{{}, {view_of(buf, 3, {1}, "t")}});
  s.wait_all();
  CHECK(!ids_known_valid(buf, 8, 0, 100, false, 0));
  CHECK(!ids_known_valid(w, 3, 0, 100, false, 0));
  CHECK(ids_known_valid(view_of(buf, 0, {3}, "t"), 3, 0, 8, false, 0));
  CHECK(ids_known_valid(view_of(buf, 4, {4}, "t"), 4, 0, 8, false, 0));
  // a device copy into a window, even from ids known valid, makes the window unknown
  Tensor src = empty_tensor(be.allocator(), {2}, DType::i32, "t");
  upload(src, host);
  CHECK(ids_known_valid(src, 2, 0, 8, false, 0));
  Tensor dst = view_of(buf, 6, {2}, "t");
  s.submit("copy", [&be, dst, src] { be.copy(dst, src); }, Effects{{src}, {dst}});
  s.wait_all();
  CHECK(!ids_known_valid(dst, 2, 0, 8, false, 0));
  CHECK(ids_known_valid(view_of(buf, 4, {2}, "t"), 2, 0, 8, false, 0));
  CHECK(ids_known_valid(src, 2, 0, 8, false, 0));  // a read changes nothing
  // a new upload makes the whole tensor known again
  upload(buf, host);
  CHECK(ids_known_valid(buf, 8, 0, 8, false, 0));
  // an upload that fails after noting (or any failing task that writes) leaves its range unknown
  s.submit("bad upload", [&be, buf, &host] {
    be.upload(buf, host);
    error("bad upload: no");
  }, Effects{{}, {buf}});
  s.wait_all();
  CHECK(!ids_known_valid(buf, 8, 0, 8, false, 0));
  CHECK(buf.failure() != nullptr);
  upload(buf, host);
  CHECK(ids_known_valid(buf, 8, 0, 8, false, 0) && buf.failure() == nullptr);
  // a task that does not run (a failed input) still forgets what it was to write
  Tensor failed = empty_tensor(be.allocator(), {1}, DType::f32, "t");
  s.submit("fails", [] { error("fails: no"); }, Effects{{}, {failed}});
  s.submit("skipped", [] {}, Effects{{failed}, {view_of(buf, 0, {1}, "t")}});
  s.wait_all();
  CHECK(!ids_known_valid(buf, 8, 0, 8, false, 0));
  CHECK(ids_known_valid(view_of(buf, 1, {7}, "t"), 7, 0, 8, false, 0));
  // a float upload notes nothing; an int32 read of another dtype's tensor is never decided on the host
  Tensor f = empty_tensor(be.allocator(), {2}, DType::f32, "t");
  const float fh[2] = {1, 2};
  s.submit("upload", [&be, f, &fh] { be.upload(f, fh); }, Effects{{}, {f}});
  s.wait_all();
  CHECK(!f.storage->known_ids(0, 8));
  CHECK(!ids_known_valid(f, 2, 0, 8, false, 0));
  s.take_failures();
}

// ---- the bf16 copy's validity (Storage write versions and mirrors; stream.cpp bumps, the writer notes) ---------------
// A copy storage mirrors a source range only while neither storage has been written since the task that wrote the copy
// noted it, and only for the corresponding bytes: every kind of write (a kernel over part of the source, a copy into
// it, a failed task, a skipped task, a write into the copy itself, a host-writable view) makes it stale; reads do not.
TEST(stream_writes_make_a_noted_mirror_stale) {
  Context ctx;
  Backend& be = ctx.backend(Device{DeviceType::CPU, 0});
  Stream& s = be.stream();
  Tensor src = empty_tensor(be.allocator(), {64}, DType::f32, "t");
  Tensor cp = empty_tensor(be.allocator(), {64}, DType::bf16, "t");
  be.fill(src, 1.0);
  // the writer: writes both (as adamw with bf16Copy does), then notes the mirror from inside its task
  auto write_copy = [&](const Tensor& p, const Tensor& c) {
    s.submit("adamw", [p, c] { c.storage->note_mirror(p.storage, p.byte_begin(), p.byte_end(), c.byte_begin()); },
             Effects{{}, {p, c}});
    s.wait_all();
  };
  auto current = [&](const Tensor& p, const Tensor& c) {
    bool r = false;
    s.submit("consumer", [p, c, &r] { r = c.storage->mirrors(*p.storage, p.byte_begin(), p.byte_end(), c.byte_begin()); },
             Effects{{p, c}, {}});
    s.wait_all();
    return r;
  };
  CHECK(!current(src, cp));  // never written: stale
  write_copy(src, cp);
  CHECK(current(src, cp));
  CHECK(current(src, cp));  // a read (the consumer itself) changes nothing
  // windows: a parameter's window and the copy's window at the corresponding offset; a shifted one is not a mirror
  CHECK(current(view_of(src, 32, {16}, "t"), view_of(cp, 32, {16}, "t")));
  CHECK(!current(view_of(src, 32, {16}, "t"), view_of(cp, 31, {16}, "t")));
  CHECK(!current(view_of(src, 32, {16}, "t"), view_of(cp, 0, {16}, "t")));
  // another storage with the same contents is not the source
  Tensor other = empty_tensor(be.allocator(), {64}, DType::f32, "t");
  CHECK(!current(other, cp));
  // a write to a part of the source (a kernel over one parameter's window) makes the whole copy stale
  s.submit("sgd", [] {}, Effects{{}, {view_of(src, 60, {4}, "t")}});
  s.wait_all();
  CHECK(!current(src, cp));
  CHECK(!current(view_of(src, 0, {16}, "t"), view_of(cp, 0, {16}, "t")));
  write_copy(src, cp);
  CHECK(current(src, cp));
  // a copy into the source (a checkpoint load, copyInto)
  s.submit("copyInto", [&be, src, other] { be.copy(src, other); }, Effects{{other}, {src}});
  s.wait_all();
  CHECK(!current(src, cp));
  write_copy(src, cp);
  // a write into the copy itself
  s.submit("fill", [] {}, Effects{{}, {view_of(cp, 0, {1}, "t")}});
  s.wait_all();
  CHECK(!current(src, cp));
  // a failed writer (it threw before noting) leaves the copy stale, even though the copy was current before it
  write_copy(src, cp);
  CHECK(current(src, cp));
  s.submit("adamw", [] { error("adamw: no"); }, Effects{{}, {src, cp}});
  s.wait_all();
  CHECK(!current(src, cp));
  // a task that does not run (a failed input) still counts as a write of its outputs
  write_copy(src, cp);
  Tensor failed = empty_tensor(be.allocator(), {1}, DType::f32, "t");
  s.submit("fails", [] { error("fails: no"); }, Effects{{}, {failed}});
  s.submit("skipped", [] {}, Effects{{failed}, {src}});
  s.wait_all();
  CHECK(!current(src, cp));
  // a copy noted for a part of the source covers that part only
  write_copy(view_of(src, 16, {16}, "t"), view_of(cp, 16, {16}, "t"));
  CHECK(current(view_of(src, 16, {16}, "t"), view_of(cp, 16, {16}, "t")));
  CHECK(current(view_of(src, 20, {4}, "t"), view_of(cp, 20, {4}, "t")));
  CHECK(!current(src, cp));
  CHECK(!current(view_of(src, 8, {16}, "t"), view_of(cp, 8, {16}, "t")));
  // a source that is gone is never matched, even by a new storage
  {
    Tensor tmp = empty_tensor(be.allocator(), {64}, DType::f32, "t");
    write_copy(tmp, cp);
    CHECK(current(tmp, cp));
  }
  Tensor again = empty_tensor(be.allocator(), {64}, DType::f32, "t");
  CHECK(!current(again, cp));
  // memory JavaScript can write (Tensor.sharedData) is never trusted
  write_copy(src, cp);
  CHECK(current(src, cp));
  src.storage->mark_host_writable();
  CHECK(!current(src, cp));
  write_copy(src, cp);
  CHECK(!current(src, cp));
  s.take_failures();
}

TEST_MAIN()
