// l2_plan_test.cpp — the decisions of the shared-weight L2 window (cuda/l2_plan.h), without a GPU: what persist_l2
// (cuda/l2.cu) would do for each request and state, and what backends() reports. l2.cu only carries these plans out.
#include <cstdint>
#include <string>

#include "../../cuda/l2_plan.h"
#include "check.h"

using namespace sf::cuda;

namespace {

// H100-like limits: 60 MiB L2, at most 45 MiB persisting, windows up to 128 MiB - 4 KiB.
constexpr int64_t kMaxPersist = 45 << 20;
constexpr int64_t kMaxWindow = (128 << 20) - 4096;

// A pointer into a pretend device buffer (never dereferenced).
const void* at(int64_t byte) { return reinterpret_cast<const void*>(static_cast<uintptr_t>(0x7f0000000000ull + byte)); }

int phase(L2Phase p) { return static_cast<int>(p); }

// What l2.cu does with a plan when every CUDA call succeeds; returns the plans it carried out.
struct Run {
  L2Plan first, final;
};
Run run_ok(L2State& st, const void* base, int64_t bytes) {
  Run r;
  r.first = r.final = plan_l2(st, base, bytes);
  if (r.first.set_carve_out) {
    l2_note_carve_out(st, true, r.first.carve_out_bytes, r.first.carve_out_bytes, "");
    r.final = plan_l2(st, base, bytes);
  }
  if (r.final.set_window) l2_note_window(st, r.final);
  return r;
}

L2State fresh(int64_t max_persist = kMaxPersist, int64_t max_window = kMaxWindow) {
  L2State st;
  st.device = 0;
  l2_note_limits(st, L2Limits{max_persist, max_window});
  return st;
}

}  // namespace

TEST(no_persisting_l2_is_inactive_with_a_reason_and_plans_nothing) {
  L2State st;
  l2_note_limits(st, L2Limits{0, kMaxWindow});
  CHECK(st.disabled);
  CHECK(st.reason.find("no persisting L2") != std::string::npos);
  L2Plan p = plan_l2(st, at(0), 1 << 20);
  CHECK(!p.set_carve_out);
  CHECK(!p.set_window);
  CHECK(!plan_l2(st, nullptr, 0).set_window);
  L2Report r = l2_report(st);
  CHECK(!r.active);
  CHECK(r.reason.find("no persisting L2") != std::string::npos);
  // no access-policy window either way
  L2State w;
  l2_note_limits(w, L2Limits{kMaxPersist, 0});
  CHECK(w.disabled);
  CHECK(w.reason.find("access-policy window") != std::string::npos);
  CHECK(!plan_l2(w, at(0), 64).set_window);
}

TEST(never_requested_is_reported_as_such) {
  L2State st;  // a backend whose stream never asked for a window
  L2Report r = l2_report(st);
  CHECK(!r.active);
  CHECK(r.reason.find("never requested") == 0);
  CHECK_EQ(phase(r.phase), phase(L2Phase::None));
  // and a window request before the limits are known plans nothing (l2.cu reads them first)
  L2Plan p = plan_l2(st, at(0), 1024);
  CHECK(!p.set_carve_out);
  CHECK(!p.set_window);
}

TEST(the_first_window_sets_the_set_aside_once_to_the_device_maximum_the_second_does_not) {
  L2State st = fresh();
  Run a = run_ok(st, at(0), 1 << 20);
  CHECK(a.first.set_carve_out);
  CHECK_EQ(a.first.carve_out_bytes, kMaxPersist);
  CHECK(a.final.set_window);
  CHECK(!a.final.set_carve_out);
  CHECK(a.final.window.base == at(0));
  CHECK_EQ(a.final.window.bytes, int64_t{1} << 20);
  CHECK_NEAR(a.final.window.hit_ratio, 1.0, 0.0);
  CHECK(a.final.window.hit == L2Access::Persisting);
  CHECK(a.final.window.miss == L2Access::Normal);
  CHECK_EQ(phase(st.phase), phase(L2Phase::Persisting));
  CHECK(st.carve_out_done);
  CHECK_EQ(st.carve_out_bytes, kMaxPersist);
  Run b = run_ok(st, at(4096), 2 << 20);
  CHECK(!b.first.set_carve_out);
  CHECK(b.first.set_window);
  CHECK(b.final.window.base == at(4096));
  CHECK_EQ(b.final.window.bytes, int64_t{2} << 20);
  CHECK_EQ(st.windows, int64_t{2});
  L2Report r = l2_report(st);
  CHECK(r.active);
  CHECK_EQ(r.carve_out_bytes, kMaxPersist);
  CHECK_EQ(r.last_bytes, int64_t{2} << 20);
  CHECK_EQ(phase(r.phase), phase(L2Phase::Persisting));
}

TEST(a_window_larger_than_the_set_aside_persists_a_fraction_the_rest_cached_normally) {
  L2State st = fresh();
  const int64_t bytes = 90 << 20;  // twice the set-aside, under the maximum window
  Run a = run_ok(st, at(0), bytes);
  CHECK_EQ(a.final.window.bytes, bytes);
  CHECK_NEAR(a.final.window.hit_ratio, 0.5, 1e-6);
  CHECK(a.final.window.hit == L2Access::Persisting);
  CHECK(a.final.window.miss == L2Access::Normal);  // never streaming: that would make the rest evict-first
  CHECK_NEAR(st.last_hit_ratio, 0.5, 1e-6);
}

TEST(a_window_larger_than_the_maximum_window_is_capped) {
  L2State st = fresh();
  Run a = run_ok(st, at(0), int64_t{1} << 30);
  CHECK_EQ(a.final.window.bytes, kMaxWindow);
  CHECK(a.final.window.base == at(0));
  CHECK_NEAR(a.final.window.hit_ratio, static_cast<double>(kMaxPersist) / static_cast<double>(kMaxWindow), 1e-6);
  // a set-aside larger than the window (a small device maximum window) still gives hit ratio 1
  L2State small = fresh(kMaxPersist, 1 << 20);
  Run b = run_ok(small, at(0), 8 << 20);
  CHECK_EQ(b.final.window.bytes, int64_t{1} << 20);
  CHECK_NEAR(b.final.window.hit_ratio, 1.0, 0.0);
}

TEST(ending_a_window_demotes_its_lines_in_stream_order_then_a_second_end_clears_it) {
  L2State st = fresh();
  run_ok(st, at(128), 3 << 20);
  // end: the same bytes again with hitProp normal, so that the kernels queued after it demote the persisting lines
  Run end = run_ok(st, nullptr, 0);
  CHECK(!end.first.set_carve_out);
  CHECK(end.first.set_window);
  CHECK(end.first.window.base == at(128));
  CHECK_EQ(end.first.window.bytes, int64_t{3} << 20);
  CHECK(end.first.window.hit == L2Access::Normal);
  CHECK(end.first.window.miss == L2Access::Normal);
  CHECK_NEAR(end.first.window.hit_ratio, 1.0, 0.0);
  CHECK_EQ(phase(end.first.phase_after), phase(L2Phase::Demoting));
  CHECK_EQ(phase(st.phase), phase(L2Phase::Demoting));
  CHECK_EQ(st.windows, int64_t{1});  // demoting is not a persisting window
  CHECK(l2_report(st).active);       // persisting L2 is in use on the device; no window persists now
  // a second end clears the window (num_bytes 0)
  Run clear = run_ok(st, nullptr, 0);
  CHECK(clear.first.set_window);
  CHECK_EQ(clear.first.window.bytes, int64_t{0});
  CHECK(clear.first.window.base == nullptr);
  CHECK_EQ(phase(st.phase), phase(L2Phase::None));
  // a new window after a demoting one replaces it directly
  run_ok(st, at(0), 1024);
  run_ok(st, nullptr, 0);
  Run next = run_ok(st, at(4096), 2048);
  CHECK(next.first.window.hit == L2Access::Persisting);
  CHECK_EQ(phase(st.phase), phase(L2Phase::Persisting));
}

TEST(ending_with_nothing_active_is_a_no_op) {
  L2State never;  // limits not even read
  L2Plan p = plan_l2(never, nullptr, 0);
  CHECK(!p.set_carve_out);
  CHECK(!p.set_window);
  L2State st = fresh();
  p = plan_l2(st, nullptr, 0);
  CHECK(!p.set_carve_out);
  CHECK(!p.set_window);
  run_ok(st, at(0), 64);
  run_ok(st, nullptr, 0);
  run_ok(st, nullptr, 0);
  CHECK(!plan_l2(st, nullptr, 0).set_window);
}

TEST(a_set_aside_that_cannot_be_set_turns_persisting_l2_off_with_the_reason) {
  L2State st = fresh();
  L2Plan p = plan_l2(st, at(0), 1 << 20);
  CHECK(p.set_carve_out);
  l2_note_carve_out(st, false, p.carve_out_bytes, 0, "cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize) failed: x");
  CHECK(st.disabled);
  CHECK(st.reason.find("not supported here") == 0);
  CHECK(st.reason.find("MPS") != std::string::npos);
  CHECK(st.reason.find("failed: x") != std::string::npos);
  CHECK(!plan_l2(st, at(0), 1 << 20).set_window);
  CHECK(!plan_l2(st, nullptr, 0).set_window);
  L2Report r = l2_report(st);
  CHECK(!r.active);
  CHECK(r.reason == st.reason);
}

TEST(a_set_aside_already_in_effect_is_used_when_it_cannot_be_set) {
  L2State st = fresh();
  L2Plan p = plan_l2(st, at(0), 8 << 20);
  l2_note_carve_out(st, false, p.carve_out_bytes, 4 << 20, "cudaDeviceSetLimit failed: not supported");
  CHECK(!st.disabled);
  CHECK_EQ(st.carve_out_bytes, int64_t{4} << 20);
  CHECK(st.carve_out_note.find("already in effect") != std::string::npos);
  L2Plan q = plan_l2(st, at(0), 8 << 20);
  CHECK(!q.set_carve_out);
  CHECK(q.set_window);
  CHECK_NEAR(q.window.hit_ratio, 0.5, 1e-6);
  l2_note_window(st, q);
  CHECK(l2_report(st).active);
  CHECK(!l2_report(st).note.empty());
}

TEST(a_failed_window_call_is_recorded_and_turns_persisting_l2_off_never_throwing) {
  L2State st = fresh();
  run_ok(st, at(0), 1 << 20);
  L2Plan p = plan_l2(st, nullptr, 0);  // the end fails
  CHECK(p.set_window);
  l2_note_failure(st, "cudaStreamSetAttribute(cudaStreamAttributeAccessPolicyWindow) failed: cudaErrorNotSupported");
  CHECK(st.disabled);
  CHECK_EQ(phase(st.phase), phase(L2Phase::None));
  CHECK(!plan_l2(st, at(0), 1 << 20).set_window);
  CHECK(!plan_l2(st, nullptr, 0).set_window);
  L2Report r = l2_report(st);
  CHECK(!r.active);
  CHECK(r.reason.find("cudaErrorNotSupported") != std::string::npos);
  CHECK_EQ(r.windows, int64_t{1});
  // limits read after a failure do not clear it
  l2_note_limits(st, L2Limits{kMaxPersist, kMaxWindow});
  CHECK(st.disabled);
}

TEST_MAIN()
