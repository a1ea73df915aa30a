// l2_plan.h — the decisions of the shared-weight L2 window (cuda/l2.cu), as pure host code: no CUDA types and no
// CUDA calls, so that test/native/l2_plan_test.cpp checks them in every build, with or without a GPU.
//
// The state (L2State) belongs to one device's CUDA backend (cuda/cuda_backend.cu owns it; Backend::l2_state() reaches
// it) and is touched only by that backend's Stream tasks, in submission order. persist_l2 (l2.cu) runs one request:
//
//   1. the first time a window is asked for, it reads the device's limits and records them (l2_note_limits);
//   2. plan_l2(state, request) says what to do, assuming every step succeeds;
//   3. l2.cu carries the plan out with non-throwing CUDA calls; after the carve-out step it records the outcome
//      (l2_note_carve_out) and plans again; after the window step, l2_note_window; on any failed call, l2_note_failure.
//
// Decisions (docs/gpu.md, "Shared weights in L2"):
//  * The persisting set-aside (cudaLimitPersistingL2CacheSize, device-wide) is set ONCE per backend, to the device's
//    maximum (cudaDevAttrMaxPersistingL2CacheSize). Why the maximum rather than the first window's size: the set-aside
//    is only a ceiling for persisting lines — when it holds none, normal accesses use that part of L2 as usual (CUDA
//    programming guide, "L2 cache set-aside for persisting accesses") — and how much of each window may persist is
//    chosen per window by its hitRatio; one fixed value also means that two addon instances (worker threads) sharing
//    the process's CUDA context ask for the same value, whichever comes first. If setting it fails (under MPS it is
//    fixed when the MPS server starts; MIG instances have none), the set-aside already in effect is used when it is
//    not zero, else persisting L2 is off on that device, with the reason recorded.
//  * A window covers [base, base + min(bytes, max window)) with hitProp = persisting, missProp = NORMAL (never
//    streaming: the part of the window beyond the set-aside must be cached like any other data, not evicted first),
//    and hitRatio = min(1, set-aside / window bytes), so that the persisting part fits the set-aside.
//  * Ending a window is stream-ordered: the window is set again over the same bytes with hitProp = NORMAL (hitRatio 1,
//    missProp normal), so that the kernels queued after it that touch those bytes demote persisting lines to normal —
//    the guide's first way to reset persisting lines. cudaCtxResetPersistingL2Cache() is not used: it acts when the
//    host calls it, not after the work queued before it, so it would demote the weights while earlier layers still
//    run. The normal window is left in place (it behaves exactly as no window, except that it demotes): the next
//    window replaces it, and a second end clears it (num_bytes = 0). Clearing it at once would demote nothing, since
//    no kernel would run under it.
//  * Any failed CUDA call turns persisting L2 off for that backend (no further attempt, no error thrown); the reason
//    is kept for backends() and summary().
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

namespace sf::cuda {

// The access properties the plan uses (mapped onto cudaAccessProperty by l2.cu).
enum class L2Access : int { Normal = 0, Persisting = 1 };

// One access-policy window for the stream. bytes == 0 clears the stream's window.
struct L2Window {
  const void* base = nullptr;
  int64_t bytes = 0;
  float hit_ratio = 0.0f;
  L2Access hit = L2Access::Normal, miss = L2Access::Normal;
};

// What the stream's window is now.
enum class L2Phase : int { None = 0, Persisting = 1, Demoting = 2 };

// The device's limits (cudaDevAttrMaxPersistingL2CacheSize, cudaDevAttrMaxAccessPolicyWindowSize).
struct L2Limits {
  int64_t max_persisting = 0;
  int64_t max_window = 0;
};

// Per-device state, owned by the CUDA backend. Plain data: copyable, no CUDA types.
struct L2State {
  int device = -1;               // the backend's device (for messages)
  bool limits_known = false;     // limits read (first window request)
  L2Limits limits;
  bool carve_out_done = false;   // the set-aside has been set (or found set) once
  int64_t carve_out_bytes = 0;   // the set-aside in effect
  std::string carve_out_note;    // how it was obtained when not by setting it (MPS)
  bool disabled = false;         // no more windows on this device: why is in `reason`
  std::string reason;
  L2Phase phase = L2Phase::None;
  L2Window window;               // the stream's window now (phase != None)
  int64_t windows = 0;           // persisting windows set so far
  int64_t last_bytes = 0;        // the last persisting window: bytes and hit ratio
  float last_hit_ratio = 0.0f;
};

// What one persist_l2 request does, in order: (1) set the set-aside, (2) set the stream's window.
struct L2Plan {
  bool set_carve_out = false;
  int64_t carve_out_bytes = 0;
  bool set_window = false;
  L2Window window;
  L2Phase phase_after = L2Phase::None;  // the phase once the window step has succeeded
};

// Records the device's limits; a device without persisting L2 (or without access-policy windows) turns it off.
inline void l2_note_limits(L2State& st, const L2Limits& lim) {
  st.limits_known = true;
  st.limits = lim;
  if (st.disabled) return;
  if (lim.max_persisting <= 0) {
    st.disabled = true;
    st.reason = "device has no persisting L2 (cudaDevAttrMaxPersistingL2CacheSize is 0: a GPU older than compute "
                "capability 8.0, or a MIG instance)";
  } else if (lim.max_window <= 0) {
    st.disabled = true;
    st.reason = "device has no access-policy window (cudaDevAttrMaxAccessPolicyWindowSize is 0)";
  }
}

// Records a failed CUDA call: persisting L2 is off on this device from now on, and the stream's window is taken as
// cleared (l2.cu makes a best-effort attempt to clear it).
inline void l2_note_failure(L2State& st, const std::string& what) {
  st.disabled = true;
  st.reason = what;
  st.phase = L2Phase::None;
  st.window = L2Window{};
}

// The plan for one request: a window over [base, base + bytes), or the end of the window (base null or bytes <= 0).
// A window request before l2_note_limits plans nothing (l2.cu reads the limits first).
inline L2Plan plan_l2(const L2State& st, const void* base, int64_t bytes) {
  L2Plan p;
  p.phase_after = st.phase;
  if (st.disabled) return p;
  if (!base || bytes <= 0) {  // end
    if (st.phase == L2Phase::Persisting) {
      p.set_window = true;
      p.window.base = st.window.base;
      p.window.bytes = st.window.bytes;
      p.window.hit_ratio = 1.0f;
      p.window.hit = L2Access::Normal;
      p.window.miss = L2Access::Normal;
      p.phase_after = L2Phase::Demoting;
    } else if (st.phase == L2Phase::Demoting) {
      p.set_window = true;  // window = {} : num_bytes 0
      p.phase_after = L2Phase::None;
    }
    return p;
  }
  if (!st.limits_known) return p;
  int64_t carve = st.carve_out_bytes;
  if (!st.carve_out_done) {
    p.set_carve_out = true;
    p.carve_out_bytes = carve = st.limits.max_persisting;
  }
  const int64_t window = std::min(bytes, st.limits.max_window);
  p.set_window = true;
  p.window.base = base;
  p.window.bytes = window;
  p.window.hit_ratio = window <= carve ? 1.0f : static_cast<float>(static_cast<double>(carve) / static_cast<double>(window));
  p.window.hit = L2Access::Persisting;
  p.window.miss = L2Access::Normal;
  p.phase_after = L2Phase::Persisting;
  return p;
}

// Records the outcome of setting the set-aside. ok: it is now `requested` bytes. Otherwise `error` says why and
// `in_effect` is the set-aside cudaDeviceGetLimit reported (0 when that failed too): when not zero it is used (MPS
// fixes it at server start), else persisting L2 is off.
inline void l2_note_carve_out(L2State& st, bool ok, int64_t requested, int64_t in_effect, const std::string& error) {
  st.carve_out_done = true;
  if (ok) {
    st.carve_out_bytes = requested;
    st.carve_out_note.clear();
    return;
  }
  if (in_effect > 0) {
    st.carve_out_bytes = in_effect;
    st.carve_out_note = "setting the set-aside failed (" + error + "); using the " + std::to_string(in_effect) +
                        " bytes already in effect (under MPS the set-aside is fixed when the server starts)";
    return;
  }
  st.carve_out_bytes = 0;
  l2_note_failure(st, "not supported here: setting the persisting-L2 set-aside failed (" + error +
                          ") and none is in effect; under MPS it is fixed when the server starts "
                          "(CUDA_DEVICE_DEFAULT_PERSISTING_L2_CACHE_PERCENTAGE_LIMIT), MIG instances have none");
}

// Records that the plan's window step succeeded.
inline void l2_note_window(L2State& st, const L2Plan& p) {
  st.phase = p.phase_after;
  st.window = p.phase_after == L2Phase::None ? L2Window{} : p.window;
  if (p.phase_after == L2Phase::Persisting) {
    ++st.windows;
    st.last_bytes = p.window.bytes;
    st.last_hit_ratio = p.window.hit_ratio;
  }
}

// What backends() and summary() report for one device.
struct L2Report {
  bool active = false;  // persisting windows are in use on this device: one was set, and no CUDA call failed
  std::string reason;   // when !active: why
  L2Phase phase = L2Phase::None;
  int64_t max_persisting = 0, carve_out_bytes = 0, windows = 0, last_bytes = 0;
  float last_hit_ratio = 0.0f;
  std::string note;     // e.g. how the set-aside was obtained
};

inline L2Report l2_report(const L2State& st) {
  L2Report r;
  r.phase = st.phase;
  r.max_persisting = st.limits.max_persisting;
  r.carve_out_bytes = st.carve_out_bytes;
  r.windows = st.windows;
  r.last_bytes = st.last_bytes;
  r.last_hit_ratio = st.last_hit_ratio;
  r.note = st.carve_out_note;
  if (st.disabled) {
    r.reason = st.reason;
  } else if (st.windows == 0) {
    r.reason = "never requested: no window has been set on this device yet (the layer stacks ask for one while "
               "consecutive layers apply the same blocks, on CUDA)";
  } else {
    r.active = true;
  }
  return r;
}

inline const char* l2_phase_name(L2Phase p) {
  return p == L2Phase::Persisting ? "persisting" : p == L2Phase::Demoting ? "demoting" : "none";
}

}  // namespace sf::cuda
