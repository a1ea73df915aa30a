// emu.cpp — the CPU lane's CUDA execution model and runtime (see cuda_runtime.h here and docs/gpu.md "The CPU lane").
//
// A launch runs the blocks one after another on the calling thread. A block's threads are fibers (own stacks, a
// hand-written register switch on x86-64, ucontext elsewhere) driven by a scheduler that resumes them in a fixed
// order (thread 0 first, or the last first with SFEMU_ORDER=reverse); a fiber runs until it reaches a barrier or a
// warp collective, so the threads of a block interleave exactly at the synchronisation points and nowhere else:
//  * __syncthreads: a thread waits until every thread of the block that has not exited has arrived.
//  * A warp collective (__shfl*_sync, __syncwarp, __ballot_sync, mma.sync): every lane of the mask deposits its
//    operands and waits for the others; all of them must call the same collective with the same mask, and a lane of
//    the mask that has exited is a fault (CUDA leaves that undefined).
//  * No fiber can run and some have not finished: a deadlock (a barrier in divergent code), a fault.
// Memory is host memory; a "device" allocation is an aligned host allocation. Streams run every operation at once.
//
// This file is test code (the CPU lane), never part of the addon: it keeps process-wide emulator state (the device's
// allocations, limits and per-function attributes), which the product's native code must not.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda.h"
#include "cuda_runtime.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ---- fibers --------------------------------------------------------------------------------------------------------
extern "C" [[noreturn]] void sfemu_fiber_main(void* fiber);
#if defined(__x86_64__)
extern "C" void sfemu_switch(void** save_sp, void* load_sp);
extern "C" void sfemu_fiber_entry();
// Saves the callee-saved registers, the x87 control word and MXCSR on the current stack, stores the stack pointer in
// *save_sp, and resumes the stack load_sp (saved the same way, or prepared by Fiber::prepare).
asm(R"(
  .text
  .globl sfemu_switch
  .type sfemu_switch, @function
sfemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw (%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sfemu_switch, .-sfemu_switch
  .globl sfemu_fiber_entry
  .type sfemu_fiber_entry, @function
sfemu_fiber_entry:
  movq %rbx, %rdi
  call sfemu_fiber_main
  ud2
  .size sfemu_fiber_entry, .-sfemu_fiber_entry
)");
#endif

namespace sfemu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per thread; a guard page below it turns an overflow into a crash

enum class Wait { None, Barrier, Warp, Grid, WarpGroup, Yield, MBarrier };

struct Block;

// The blocks of one cooperative launch run at the same time (their fibers interleave) and meet at grid syncs.
struct Grid {
  bool cooperative = false;
  int live = 0;
  int arrived = 0;
  uint64_t gen = 0;
};

// One cp.async of 16 bytes: the source bytes as read at issue time (zero-filled past src-size), and where they land.
struct AsyncCopy {
  unsigned char* dst;
  unsigned char bytes[16];
};

struct Fiber {
  Block* block = nullptr;
  // wgmma: a wgmma.fence since this thread's last wgmma.wait_group (or since it started), as the ISA requires before
  // a wgmma.mma_async whose accumulator registers were accessed by other instructions
  bool wgmma_fenced = false;
  // cp.async state of this thread: copies issued since the last commit, and the committed groups not yet waited for
  // (oldest first). Nothing lands in shared memory before cp.async.wait_group lets its group complete.
  std::vector<AsyncCopy> async_open;
  std::deque<std::vector<AsyncCopy>> async_groups;
  uint3 tid{};
  int warp = 0, lane = 0;
  bool done = false;
  Wait wait = Wait::None;
  uint64_t wait_gen = 0;
  uint32_t wait_bar = 0, wait_parity = 0;  // Wait::MBarrier: the barrier's shared address and the awaited parity
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  char* stack = nullptr;
};

struct Warp {
  uint64_t gen = 0;
  uint32_t arrived = 0, mask = 0, present = 0;
  const char* what = nullptr;
  uint64_t slots[2][32][6] = {};
};

// One wgmma.mma_async of a warpgroup (128 threads), m64nNk16 .f32.bf16.bf16: A (64 x 16) and B (N x 16, K-major) as
// read from shared memory at issue, the bytes read (checked unchanged when the group completes), each thread's
// accumulator registers, and scale-d.
struct WgmmaOp {
  int n = 0;
  bool scale_d = true;
  std::vector<float> a, b;  // a[r * 16 + k], b[c * 16 + k]
  std::vector<std::pair<uint32_t, uint16_t>> reads;
  float* d[128] = {};
};

// The warpgroup collectives (wgmma.mma_async, wgmma.commit_group, wgmma.wait_group): the 128 threads of warps 4 g ..
// 4 g + 3 deposit and wait, as a warp exchange; plus the warpgroup's wgmma operations not yet committed (open) and
// the committed groups not yet completed (oldest first).
struct WarpGroup {
  uint64_t gen = 0;
  int arrived = 0;
  bool in[128] = {};
  const char* what = nullptr;
  uint64_t key[3] = {};
  void* slot[128] = {};
  std::vector<WgmmaOp> open;
  std::deque<std::vector<WgmmaOp>> groups;
};

// A cp.async.bulk.tensor load in flight: the box as read from global memory at issue, already in its shared-memory
// layout (swizzled, out-of-bounds elements filled), to land at shared offset dst when its mbarrier's phase completes.
struct BulkCopy {
  uint32_t dst = 0;
  std::vector<unsigned char> image;
};

// An mbarrier object (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier"): the expected
// arrival count of each phase, the arrivals still pending in the current phase, the tx-count (bytes announced by
// expect-tx operations minus bytes completed by complete-tx operations), the number of completed phases (the current
// phase's parity is phase & 1), the bulk copies that complete on it and have not landed, and a counter of events
// (arrivals, copies, completions) that wakes the threads waiting on it.
struct MBarrier {
  uint32_t expected = 0;
  int64_t pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0;
  uint64_t events = 0;
  std::vector<BulkCopy> inflight;
};

struct Block {
  const char* kernel = nullptr;
  const std::function<void()>* body = nullptr;
  Grid* grid = nullptr;
  uint3 bid{};
  dim3 bdim, gdim;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<WarpGroup> wgs;  // one per complete group of 4 warps
  int live = 0;
  uint64_t bar_gen = 0;
  int bar_arrived = 0;
  int bar_acc = 0;
  int bar_result[2] = {0, 0};
  std::vector<unsigned char> smem;
  std::map<uint32_t, MBarrier> mbars;  // by shared address (mbarrier.init)
  Fiber* cur = nullptr;
};

// Per OS thread: the block being run (kernels launched from two host threads each get their own) and the stacks.
thread_local Block* tl_block = nullptr;
#if defined(__x86_64__)
thread_local void* tl_sched_sp = nullptr;  // the scheduler's saved stack
#else
thread_local ucontext_t tl_sched;
#endif

struct StackPool {
  std::vector<char*> free;
  ~StackPool() {
    for (char* s : free) munmap(s - page(), kStackBytes + page());
  }
  static size_t page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }
  char* take() {
    if (!free.empty()) {
      char* s = free.back();
      free.pop_back();
      return s;
    }
    void* m = mmap(nullptr, kStackBytes + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
      std::fprintf(stderr, "sfemu: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(m, page(), PROT_NONE);
    return static_cast<char*>(m) + page();
  }
  void give(char* s) { free.push_back(s); }
};
thread_local StackPool tl_stacks;

[[noreturn]] void fault_at(const Block& b, const Fiber* f, const std::string& what) {
  std::fprintf(stderr, "sfemu: FAULT in kernel %s, block (%u,%u,%u)", b.kernel, b.bid.x, b.bid.y, b.bid.z);
  if (f) std::fprintf(stderr, ", thread (%u,%u,%u)", f->tid.x, f->tid.y, f->tid.z);
  std::fprintf(stderr, ": %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

Block& current_block() {
  if (!tl_block) {
    std::fprintf(stderr, "sfemu: a device function was called outside a kernel launch\n");
    std::abort();
  }
  return *tl_block;
}

void yield_to_scheduler(Fiber& f) {
#if defined(__x86_64__)
  sfemu_switch(&f.sp, tl_sched_sp);
#else
  swapcontext(&f.ctx, &tl_sched);
#endif
}

// The fiber waits (for the barrier, warp exchange or grid sync of generation gen to complete): back to the scheduler,
// which resumes it once runnable() says so.
void block_until(Fiber& f, Wait what, uint64_t gen) {
  f.wait = what;
  f.wait_gen = gen;
  yield_to_scheduler(f);
}

bool runnable(const Block& b, const Fiber& f) {
  if (f.done) return false;
  switch (f.wait) {
    case Wait::None:
      return true;
    case Wait::Barrier:
      return b.bar_gen > f.wait_gen;
    case Wait::Warp:
      return b.warps[static_cast<size_t>(f.warp)].gen > f.wait_gen;
    case Wait::Grid:
      return b.grid->gen > f.wait_gen;
    case Wait::WarpGroup:
      return b.wgs[static_cast<size_t>(f.warp / 4)].gen > f.wait_gen;
    case Wait::Yield:
      return true;
    case Wait::MBarrier: {
      auto it = b.mbars.find(f.wait_bar);
      return it != b.mbars.end() && it->second.events > f.wait_gen;
    }
  }
  return false;
}

void release_barrier(Block& b) {
  b.bar_result[b.bar_gen & 1] = b.bar_acc;
  b.bar_acc = 0;
  b.bar_arrived = 0;
  ++b.bar_gen;
}

void thread_exit(Block& b, Fiber& f) {
  f.done = true;
  --b.live;
  Warp& w = b.warps[static_cast<size_t>(f.warp)];
  if (w.arrived && ((w.mask >> f.lane) & 1u) && !((w.arrived >> f.lane) & 1u))
    fault_at(b, &f, std::string("the thread exited while the lanes of its warp wait for it in ") + w.what);
  if (static_cast<size_t>(f.warp / 4) < b.wgs.size()) {
    const WarpGroup& g = b.wgs[static_cast<size_t>(f.warp / 4)];
    if (g.arrived > 0 && !g.in[(f.warp % 4) * 32 + f.lane])
      fault_at(b, &f, std::string("the thread exited while its warpgroup waits for it in ") + g.what);
    if (!g.open.empty() || !g.groups.empty())
      fault_at(b, &f, "the thread exited with wgmma.mma_async operations of its warpgroup not completed (a missing "
                      "wgmma.commit_group / wgmma.wait_group)");
  }
  if (b.bar_arrived > 0 && b.bar_arrived == b.live) release_barrier(b);
  if (b.grid->cooperative) {
    --b.grid->live;
    if (b.grid->arrived > 0) fault_at(b, &f, "the thread exited while the grid waits for it in grid.sync()");
  }
}

#if !defined(__x86_64__)
void fiber_trampoline(unsigned hi, unsigned lo) {
  sfemu_fiber_main(reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif

// Threads resumed from the last one first (SFEMU_ORDER=reverse), and blocks from the last one, to expose a hazard
// that the forward order hides.
bool reverse_order() {
  static const bool reverse = [] {
    const char* o = std::getenv("SFEMU_ORDER");
    return o && std::string(o) == "reverse";
  }();
  return reverse;
}

void prepare_block(Block& b) {
  const int n = static_cast<int>(b.bdim.x * b.bdim.y * b.bdim.z);
  const int nwarps = (n + 31) / 32;
  b.fibers.assign(static_cast<size_t>(n), Fiber{});
  b.warps.assign(static_cast<size_t>(nwarps), Warp{});
  b.wgs.clear();
  b.wgs.resize(static_cast<size_t>(n / 128));
  b.live = n;
  b.bar_gen = 0;
  b.bar_arrived = 0;
  b.bar_acc = 0;
  b.mbars.clear();
  std::fill(b.smem.begin(), b.smem.end(), static_cast<unsigned char>(0xff));
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[static_cast<size_t>(i)];
    f.block = &b;
    f.tid = uint3{static_cast<unsigned>(i) % b.bdim.x, (static_cast<unsigned>(i) / b.bdim.x) % b.bdim.y,
                  static_cast<unsigned>(i) / (b.bdim.x * b.bdim.y)};
    f.warp = i / 32;
    f.lane = i % 32;
    b.warps[static_cast<size_t>(f.warp)].present |= 1u << f.lane;
    f.stack = tl_stacks.take();
#if defined(__x86_64__)
    // the frame sfemu_switch pops: x87 control word, MXCSR, r15, r14, r13, r12, rbx (= the fiber), rbp, return
    // address (sfemu_fiber_entry); 16-byte aligned so that sfemu_fiber_entry calls with an aligned stack
    uint64_t* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);
    uint64_t* sp = top - 9;
    sp[0] = 0x037f;  // x87 control word (default)
    sp[1] = 0x1f80;  // MXCSR (default: round to nearest, all exceptions masked)
    sp[2] = sp[3] = sp[4] = sp[5] = 0;
    sp[6] = reinterpret_cast<uint64_t>(&f);
    sp[7] = 0;
    sp[8] = reinterpret_cast<uint64_t>(&sfemu_fiber_entry);
    f.sp = sp;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
    makecontext(&f.ctx, reinterpret_cast<void (*)()>(&fiber_trampoline), 2, static_cast<unsigned>(p >> 32),
                static_cast<unsigned>(p & 0xffffffffu));
#endif
  }
}

std::string where(const Block& b, const Fiber& f) {
  if (f.wait == Wait::MBarrier) {
    const auto it = b.mbars.find(f.wait_bar);
    std::string at = "mbarrier.try_wait.parity " + std::to_string(f.wait_parity) +
                     " on the mbarrier at shared address " + std::to_string(f.wait_bar);
    if (it != b.mbars.end())
      at += " (current phase " + std::to_string(it->second.phase) + ": " + std::to_string(it->second.pending) +
            " arrivals pending, tx-count " + std::to_string(it->second.tx) + ", " +
            std::to_string(it->second.inflight.size()) + " bulk copies in flight)";
    return "block " + std::to_string(b.bid.x) + " thread " + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) +
           " at " + at;
  }
  std::string at = f.wait == Wait::Barrier   ? "__syncthreads"
                   : f.wait == Wait::Grid      ? "grid.sync()"
                   : f.wait == Wait::WarpGroup ? b.wgs[static_cast<size_t>(f.warp / 4)].what
                                           : (b.warps[static_cast<size_t>(f.warp)].what
                                                  ? b.warps[static_cast<size_t>(f.warp)].what
                                                  : "a warp collective");
  return "block " + std::to_string(b.bid.x) + " thread " + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) +
         " at " + at;
}

// Runs the fibers of the blocks until all have finished: blocks in order, a block's threads in order (both reversed
// with SFEMU_ORDER=reverse), each resumed when what it waits for has happened.
void schedule(std::vector<Block*>& blocks) {
  const bool reverse = reverse_order();
  size_t total = 0, finished = 0;
  for (Block* b : blocks) total += b->fibers.size();
  const size_t nb = blocks.size();
  while (finished < total) {
    bool progressed = false;
    for (size_t bi = 0; bi < nb; ++bi) {
      Block& b = *blocks[reverse ? nb - 1 - bi : bi];
      const size_t n = b.fibers.size();
      for (size_t k = 0; k < n; ++k) {
        Fiber& f = b.fibers[reverse ? n - 1 - k : k];
        if (!runnable(b, f)) continue;
        f.wait = Wait::None;
        b.cur = &f;
        tl_block = &b;
#if defined(__x86_64__)
        sfemu_switch(&tl_sched_sp, f.sp);
#else
        swapcontext(&tl_sched, &f.ctx);
#endif
        b.cur = nullptr;
        progressed = true;
        if (f.done) ++finished;
      }
    }
    if (!progressed && finished < total) {
      std::string who;
      int shown = 0;
      for (Block* b : blocks)
        for (const Fiber& f : b->fibers) {
          if (f.done || shown >= 4) continue;
          who += std::string(shown++ ? ", " : "") + where(*b, f);
        }
      fault_at(*blocks[0], nullptr, "deadlock: no thread can go on (" + who + ", ...): a barrier or warp collective in "
                                    "divergent code, or an mbarrier phase that can never complete");
    }
  }
  for (Block* b : blocks)
    for (Fiber& f : b->fibers) tl_stacks.give(f.stack);
  for (Block* b : blocks)
    for (const auto& m : b->mbars)
      if (!m.second.inflight.empty())
        fault_at(*b, nullptr, "the block finished with bulk tensor copies in flight on the mbarrier at shared "
                              "address " + std::to_string(m.first) + " (no thread waited for their completion)");
}

}  // namespace

}  // namespace sfemu

extern "C" [[noreturn]] void sfemu_fiber_main(void* fp) {
  using namespace sfemu;
  Fiber& f = *static_cast<Fiber*>(fp);
  Block& b = *f.block;
  (*b.body)();
  thread_exit(b, f);
  yield_to_scheduler(f);
  std::abort();  // a finished fiber is never resumed
}

namespace sfemu {

// ---- device side ---------------------------------------------------------------------------------------------------

const uint3& thread_idx() {
  Block& b = current_block();
  return b.cur->tid;
}
const uint3& block_idx() { return current_block().bid; }
const dim3& block_dim() { return current_block().bdim; }
const dim3& grid_dim() { return current_block().gdim; }
unsigned char* dynamic_smem() {
  Block& b = current_block();
  return b.smem.empty() ? nullptr : b.smem.data();
}
int lane_id() { return current_block().cur->lane; }

void fault(const char* what) {
  Block& b = current_block();
  fault_at(b, b.cur, what);
}

int syncthreads(int pred) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  const uint64_t gen = b.bar_gen;
  b.bar_acc |= pred;
  ++b.bar_arrived;
  if (b.bar_arrived == b.live)
    release_barrier(b);
  else
    block_until(f, Wait::Barrier, gen);
  return b.bar_result[gen & 1];
}

const uint64_t* warp_exchange(const char* what, unsigned mask, const uint64_t* mine, int n) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  Warp& w = b.warps[static_cast<size_t>(f.warp)];
  if (!((mask >> f.lane) & 1u)) fault_at(b, &f, std::string(what) + ": the calling lane is not in the mask");
  if (mask & ~w.present)
    fault_at(b, &f, std::string(what) + ": the mask names lanes that the block does not have (blockDim not a multiple of 32)");
  if (w.arrived == 0) {
    w.mask = mask;
    w.what = what;
    for (int l = 0; l < 32; ++l) {
      if (!((mask >> l) & 1u)) continue;
      const Fiber& o = b.fibers[static_cast<size_t>(f.warp * 32 + l)];
      if (o.done) fault_at(b, &f, std::string(what) + ": lane " + std::to_string(l) + " of the mask has exited");
    }
  } else if (w.mask != mask || w.what != what) {
    fault_at(b, &f, std::string("divergent warp collectives: ") + what + " (mask " + std::to_string(mask) +
                        ") while other lanes wait in " + w.what + " (mask " + std::to_string(w.mask) + ")");
  }
  const uint64_t gen = w.gen;
  uint64_t* slot = w.slots[gen & 1][f.lane];
  for (int i = 0; i < n; ++i) slot[i] = mine[i];
  w.arrived |= 1u << f.lane;
  if ((w.arrived & w.mask) == w.mask) {
    w.arrived = 0;
    ++w.gen;
  } else {
    block_until(f, Wait::Warp, gen);
  }
  // word 0 of every lane's deposit, for the single-word collectives (mma reads all six words through exchange6)
  static thread_local uint64_t flat[32];
  for (int l = 0; l < 32; ++l) flat[l] = w.slots[gen & 1][l][0];
  return flat;
}

namespace {

// The full deposits of the last exchange of the current lane's warp (mma operands: six words per lane; ldmatrix:
// three). Every lane of the warp takes part.
const uint64_t (*exchange_all(const char* what, const uint64_t* mine, int n))[6] {
  Block& b = current_block();
  Fiber& f = *b.cur;
  Warp& w = b.warps[static_cast<size_t>(f.warp)];
  const uint64_t gen = w.gen;  // the generation this lane's deposit goes to (it does not change before the deposit)
  warp_exchange(what, 0xffffffffu, mine, n);
  return w.slots[gen & 1];
}
const uint64_t (*exchange6(const char* what, const uint64_t* mine))[6] { return exchange_all(what, mine, 6); }

float bits_f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float bf16_lo(uint32_t r) { return bits_f(r << 16); }
float bf16_hi(uint32_t r) { return bits_f(r & 0xffff0000u); }

}  // namespace

// The calling lane's C/D fragment (both shapes): c0, c1 (groupID, 2 tig + {0,1}), c2, c3 (groupID + 8, 2 tig + {0,1})
// += the exact products A(r, k) B(k, n) summed over K in double, rounded once.
template <int K, typename FA, typename FB>
void accumulate_c(float (&c)[4], const FA& A, const FB& B) {
  const int lane = lane_id(), g = lane >> 2, t = lane & 3;
  for (int i = 0; i < 4; ++i) {
    const int r = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    double acc = c[i];
    for (int k = 0; k < K; ++k) acc += static_cast<double>(A(r, k)) * static_cast<double>(B(k, col));
    c[i] = static_cast<float>(acc);
  }
}

// m16n8k8, .tf32 (PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32): groupID = lane >> 2, tig = lane % 4;
// A (16 x 8, row): a0 (groupID, tig), a1 (groupID + 8, tig), a2 (groupID, tig + 4), a3 (groupID + 8, tig + 4);
// B (8 x 8, col): b0 (tig, groupID), b1 (tig + 4, groupID);
// C/D (16 x 8): c0, c1 (groupID, 2 tig + {0,1}), c2, c3 (groupID + 8, 2 tig + {0,1}).
// The tensor core reads the tf32 bits of each operand (the low 13 mantissa bits are ignored) and accumulates the exact
// products in at least fp32; here they are summed in double and rounded once.
void mma_m16n8k8_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const uint64_t mine[6] = {a0, a1, a2, a3, b0, b1};
  const uint64_t(*s)[6] = exchange6("mma.sync.m16n8k8.tf32", mine);
  auto A = [&](int r, int k) {  // the lane and register holding A[r][k]
    const int lane = (r % 8) * 4 + (k % 4), reg = (r >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0);
    return bits_f(static_cast<uint32_t>(s[lane][reg]) & 0xffffe000u);
  };
  auto B = [&](int k, int n) {
    const int lane = n * 4 + (k % 4), reg = 4 + (k >= 4 ? 1 : 0);
    return bits_f(static_cast<uint32_t>(s[lane][reg]) & 0xffffe000u);
  };
  accumulate_c<8>(c, A, B);
}

// m16n8k16, .bf16 (PTX ISA, "Matrix Fragments for mma.m16n8k16" with .f16/.bf16): each 32-bit register holds two
// elements, the lower index in the low half. A (16 x 16, row): a0,a1 (groupID, 2 tig + {0,1}); a2,a3 (groupID + 8,
// 2 tig + {0,1}); a4,a5 (groupID, 2 tig + 8 + {0,1}); a6,a7 (groupID + 8, 2 tig + 8 + {0,1}) — registers 0..3 hold
// (a0,a1) (a2,a3) (a4,a5) (a6,a7). B (16 x 8, col): b0,b1 (2 tig + {0,1}, groupID); b2,b3 (2 tig + 8 + {0,1},
// groupID) — registers 0, 1. C/D as for m16n8k8.
void mma_m16n8k16_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  const uint64_t mine[6] = {a0, a1, a2, a3, b0, b1};
  const uint64_t(*s)[6] = exchange6("mma.sync.m16n8k16.bf16", mine);
  auto A = [&](int r, int k) {
    const int kk = k % 8, lane = (r % 8) * 4 + kk / 2, reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    const uint32_t v = static_cast<uint32_t>(s[lane][reg]);
    return (kk & 1) ? bf16_hi(v) : bf16_lo(v);
  };
  auto B = [&](int k, int n) {
    const int kk = k % 8, lane = n * 4 + kk / 2, reg = 4 + (k >= 8 ? 1 : 0);
    const uint32_t v = static_cast<uint32_t>(s[lane][reg]);
    return (kk & 1) ? bf16_hi(v) : bf16_lo(v);
  };
  accumulate_c<16>(c, A, B);
}

// ---- cp.async (PTX ISA, "Data Movement and Conversion Instructions: cp.async", cp.async.commit_group,
// cp.async.wait_group) ----------------------------------------------------------------------------------------------
// cp.async.cg.shared.global [dst], [src], 16, src_size: copies 16 bytes, the bytes past src_size written as zeros;
// the copy is asynchronous and belongs to no group until cp.async.commit_group; cp.async.wait_group N waits until at
// most the N most recent committed groups of the executing thread are pending (all older ones complete). Uncommitted
// copies are not waited for. Emulation: the source is read at issue time (global memory does not change under a
// running GEMM), the bytes land in shared memory only when the issuing thread's wait completes their group, so a
// read of the destination before that wait sees what was there before (the 0xff poison, or an older k tile).
void cp_async(void* smem, const void* gmem, int src_bytes) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  if (reinterpret_cast<uintptr_t>(smem) % 16 != 0)
    fault_at(b, &f, "cp.async.cg 16: the shared-memory destination is not 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16) fault_at(b, &f, "cp.async.cg 16: src-size outside [0, 16]");
  if (src_bytes > 0 && reinterpret_cast<uintptr_t>(gmem) % 16 != 0)
    fault_at(b, &f, "cp.async.cg 16: the global source is not 16-byte aligned");
  AsyncCopy c;
  c.dst = static_cast<unsigned char*>(smem);
  std::memset(c.bytes, 0, sizeof c.bytes);
  if (src_bytes > 0) std::memcpy(c.bytes, gmem, static_cast<size_t>(src_bytes));
  f.async_open.push_back(c);
}
void cp_async_commit() {
  Fiber& f = *current_block().cur;
  f.async_groups.push_back(std::move(f.async_open));
  f.async_open.clear();
}
void cp_async_wait(int pending) {
  Fiber& f = *current_block().cur;
  while (static_cast<int>(f.async_groups.size()) > pending) {
    for (const AsyncCopy& c : f.async_groups.front()) std::memcpy(c.dst, c.bytes, sizeof c.bytes);
    f.async_groups.pop_front();
  }
}

// ---- ldmatrix (PTX ISA, "Warp-level matrix load instruction: ldmatrix") ---------------------------------------------
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16: a warp collective loading `num` 8 x 8 matrices of 16-bit
// elements. Lane 8 j + i supplies the address of row i of matrix j (16 bytes, 16-byte aligned; the lanes past 8 num
// supply nothing). Register j of lane l receives from matrix j: without .trans, elements (row l / 4, columns
// 2 (l % 4) and 2 (l % 4) + 1); with .trans, elements (rows 2 (l % 4) and 2 (l % 4) + 1, column l / 4) — the lower
// column (or row) in the low half. Emulation: each lane reads its row's 16 bytes when it reaches the instruction.
void ldmatrix(uint32_t* out, int num, bool trans, const void* row) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  static const char* const names[2][3] = {
      {"ldmatrix.m8n8.x1", "ldmatrix.m8n8.x2", "ldmatrix.m8n8.x4"},
      {"ldmatrix.m8n8.x1.trans", "ldmatrix.m8n8.x2.trans", "ldmatrix.m8n8.x4.trans"}};
  const int which = num == 1 ? 0 : num == 2 ? 1 : 2;
  uint64_t mine[3] = {0, 0, 0};
  if (f.lane < 8 * num) {
    if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
      fault_at(b, &f, std::string(names[trans][which]) + ": a row address is not 16-byte aligned");
    std::memcpy(&mine[1], row, 16);
  }
  const uint64_t(*s)[6] = exchange_all(names[trans][which], mine, 3);
  auto half = [&](int lane, int col) {  // element `col` (0..7) of the row supplied by `lane`
    uint16_t h;
    std::memcpy(&h, reinterpret_cast<const unsigned char*>(&s[lane][1]) + 2 * col, 2);
    return static_cast<uint32_t>(h);
  };
  const int l = f.lane, r = l / 4, w = l % 4;
  for (int j = 0; j < num; ++j) {
    if (!trans)
      out[j] = half(8 * j + r, 2 * w) | half(8 * j + r, 2 * w + 1) << 16;
    else
      out[j] = half(8 * j + 2 * w, r) | half(8 * j + 2 * w + 1, r) << 16;
  }
}

// ---- Hopper: wgmma (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions") ---------------
// Shared-memory addresses as the kernels see them (smem_addr in cuda/hopper.cuh): the byte offset in the block's
// dynamic shared memory, whose start the lane takes as shared address 0 (1024-byte aligned, as a kernel that aligns
// its tiles to the 128-byte swizzle pattern needs: it aligns relative to this address, as on the GPU).
uint32_t smem_addr(const void* p) {
  Block& b = current_block();
  const unsigned char* q = static_cast<const unsigned char*>(p);
  if (b.smem.empty() || q < b.smem.data() || q > b.smem.data() + b.smem.size())
    fault_at(b, b.cur, "a shared-memory address was taken of memory outside the block's dynamic shared memory (the "
                       "lane gives addresses to dynamic shared memory only)");
  return static_cast<uint32_t>(q - b.smem.data());
}

namespace {

// A warpgroup collective: the 128 threads of the calling thread's warpgroup (warps 4 g .. 4 g + 3) must all call
// `what` with the same key; the last to arrive runs `done` (with every thread's deposit in w.slot) before any of them
// goes on. A thread of the warpgroup that has exited, a different collective or key, or a block without complete
// warpgroups is a fault.
void warpgroup_collective(const char* what, const uint64_t (&key)[3], void* mine,
                          const std::function<void(WarpGroup&)>& done) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  const size_t gi = static_cast<size_t>(f.warp / 4);
  if (gi >= b.wgs.size())
    fault_at(b, &f, std::string(what) + ": the thread's warp is not in a complete warpgroup (blockDim not a multiple "
                                        "of 128)");
  WarpGroup& w = b.wgs[gi];
  const int me = (f.warp % 4) * 32 + f.lane;
  if (w.arrived == 0) {
    w.what = what;
    for (int i = 0; i < 3; ++i) w.key[i] = key[i];
    for (int t = 0; t < 128; ++t) {
      w.in[t] = false;
      if (b.fibers[gi * 128 + static_cast<size_t>(t)].done)
        fault_at(b, &f, std::string(what) + ": thread " + std::to_string(gi * 128 + static_cast<size_t>(t)) +
                            " of the warpgroup has exited (every thread of a warpgroup must execute it)");
    }
  } else if (w.what != what || w.key[0] != key[0] || w.key[1] != key[1] || w.key[2] != key[2]) {
    fault_at(b, &f, std::string("divergent warpgroup collectives: ") + what + " while other threads of the warpgroup "
                                                                             "wait in " + w.what +
                        " (or the same with other operands: descriptors, N, wait count)");
  }
  w.slot[me] = mine;
  w.in[me] = true;
  const uint64_t gen = w.gen;
  if (++w.arrived == 128) {
    done(w);
    w.arrived = 0;
    ++w.gen;
  } else {
    block_until(f, Wait::WarpGroup, gen);
  }
}

// A K-major operand of wgmma through its matrix descriptor (PTX ISA, "Matrix Descriptor Format": bits 0-13 start
// address >> 4, 16-29 leading dimension byte offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 matrix base
// offset, 62-63 swizzle mode: 0 none, 1 128-byte, 2 64-byte, 3 32-byte) and the "Shared Memory Matrix Layout" section:
// the operand is made of core matrices of 8 rows x 16 bytes (8 bf16 along k); the stride byte offset (SBO) is the
// distance between core matrices adjacent in M / N (8-row groups). Without swizzling a core matrix's 8 rows are
// contiguous (16 bytes apart) and the leading byte offset (LBO) is the distance between core matrices adjacent in K.
// With a T-byte swizzle (T = 32, 64, 128) the rows of an 8-row group are T bytes apart with their k values contiguous
// (16 bf16 = 32 bytes, within one row for every T: the LBO is not used for a K-major swizzled operand), and the
// 16-byte chunk of a byte address is XORed with its row within the swizzle pattern: address bits [4, 4 + log2(T/16))
// ^= bits [7, 7 + log2(T/16)) — the 128-byte mode XORs bits 4-6 with bits 7-9 (repeating every 1024 bytes). The lane
// requires the start address at row 0 of the pattern and base offset 0 (it does not emulate the base offset).
// Element (row r, k) as a byte address.
uint32_t operand_addr(const Block& b, const Fiber* f, uint64_t desc, int r, int k) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3fffu) << 4;
  const uint32_t lbo = static_cast<uint32_t>((desc >> 16) & 0x3fffu) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3fffu) << 4;
  const int base_off = static_cast<int>((desc >> 49) & 7u), mode = static_cast<int>(desc >> 62);
  if (base_off != 0) fault_at(b, f, "wgmma: a matrix descriptor with a nonzero base offset (not emulated)");
  if (mode == 0) return start + static_cast<uint32_t>(r / 8) * sbo + static_cast<uint32_t>(k / 8) * lbo +
                        static_cast<uint32_t>(r % 8) * 16 + static_cast<uint32_t>(k % 8) * 2;
  const uint32_t T = mode == 1 ? 128 : mode == 2 ? 64 : 32, mask = T / 16 - 1;
  if ((start >> 7) & mask)
    fault_at(b, f, "wgmma: a swizzled operand's start address is not at row 0 of its swizzle pattern (base offset "
                   "not emulated)");
  const uint32_t logical = start + static_cast<uint32_t>(r / 8) * sbo + static_cast<uint32_t>(r % 8) * T +
                           static_cast<uint32_t>(k) * 2;
  return logical ^ (((logical >> 7) & mask) << 4);
}

float bf16_at(const Block& b, const Fiber* f, uint32_t addr, std::vector<std::pair<uint32_t, uint16_t>>& reads) {
  if (addr % 2 != 0 || static_cast<size_t>(addr) + 2 > b.smem.size())
    fault_at(b, f, "wgmma: a descriptor addresses bytes outside the block's dynamic shared memory");
  uint16_t h;
  std::memcpy(&h, b.smem.data() + addr, 2);
  reads.emplace_back(addr, h);
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Completes the warpgroup's oldest committed group: checks that the shared memory it read is unchanged (the ISA
// forbids modifying it before the wait_group that completes the operation), then writes every thread's accumulators:
// D-fragment layout of m64nNk16 (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16", register fragment D): the
// thread of warp w (of the warpgroup), lane l (groupID g = l / 4, t = l % 4) holds, for each 8-column chunk j,
// d[4 j + 0], d[4 j + 1] = D(16 w + g, 8 j + 2 t + {0, 1}) and d[4 j + 2], d[4 j + 3] = D(16 w + g + 8, 8 j + 2 t +
// {0, 1}). Exact products summed in double and rounded once (as for mma.sync).
void complete_group(Block& b, WarpGroup& w) {
  for (WgmmaOp& op : w.groups.front()) {
    for (const auto& rd : op.reads) {
      uint16_t h;
      std::memcpy(&h, b.smem.data() + rd.first, 2);
      if (h != rd.second)
        fault_at(b, nullptr, "wgmma: shared memory read by a wgmma.mma_async was modified before the "
                             "wgmma.wait_group that completes it");
    }
    for (int t = 0; t < 128; ++t) {
      float* d = op.d[t];
      const int wq = t / 32, g = (t % 32) / 4, tq = t % 4;
      for (int j = 0; j < op.n / 8; ++j)
        for (int e = 0; e < 4; ++e) {
          const int r = 16 * wq + g + (e >= 2 ? 8 : 0), c = 8 * j + 2 * tq + (e & 1);
          double acc = op.scale_d ? static_cast<double>(d[4 * j + e]) : 0.0;
          for (int k = 0; k < 16; ++k)
            acc += static_cast<double>(op.a[static_cast<size_t>(r * 16 + k)]) *
                   static_cast<double>(op.b[static_cast<size_t>(c * 16 + k)]);
          d[4 * j + e] = static_cast<float>(acc);
        }
    }
  }
  w.groups.pop_front();
}

}  // namespace

void wgmma_fence() { current_block().cur->wgmma_fenced = true; }

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 d, desc-a, desc-b, scale-d, 1, 1, 0, 0 (both operands K-major
// in shared memory): a warpgroup collective; the operands are read when the last thread arrives (the issue), the
// accumulators written when a wgmma.wait_group completes the operation's group (so a read of d before it sees the old
// values). A thread that issues it without a wgmma.fence since its last wait_group (or its start) is a fault.
void wgmma_bf16(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool scale_d) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  if (n % 8 != 0 || n < 8 || n > 256) fault_at(b, &f, "wgmma: N must be a multiple of 8 in [8, 256]");
  if (!f.wgmma_fenced)
    fault_at(b, &f, "wgmma.mma_async without a wgmma.fence since the accumulator registers were last accessed (the "
                    "ISA requires one before the first wgmma.mma_async and after other accesses)");
  const uint64_t key[3] = {desc_a, desc_b, static_cast<uint64_t>(n) | (scale_d ? 1u << 16 : 0u)};
  warpgroup_collective("wgmma.mma_async.m64nNk16.f32.bf16.bf16", key, d, [&](WarpGroup& w) {
    WgmmaOp op;
    op.n = n;
    op.scale_d = scale_d;
    op.a.resize(64 * 16);
    op.b.resize(static_cast<size_t>(n) * 16);
    for (int r = 0; r < 64; ++r)
      for (int k = 0; k < 16; ++k)
        op.a[static_cast<size_t>(r * 16 + k)] = bf16_at(b, &f, operand_addr(b, &f, desc_a, r, k), op.reads);
    for (int c = 0; c < n; ++c)
      for (int k = 0; k < 16; ++k)
        op.b[static_cast<size_t>(c * 16 + k)] = bf16_at(b, &f, operand_addr(b, &f, desc_b, c, k), op.reads);
    for (int t = 0; t < 128; ++t) op.d[t] = static_cast<float*>(w.slot[t]);
    w.open.push_back(std::move(op));
  });
}

// wgmma.commit_group.sync.aligned: the warpgroup's uncommitted wgmma operations become one group (possibly empty).
void wgmma_commit() {
  const uint64_t key[3] = {0, 0, 0};
  warpgroup_collective("wgmma.commit_group", key, nullptr, [](WarpGroup& w) {
    w.groups.push_back(std::move(w.open));
    w.open.clear();
  });
}

// wgmma.wait_group.sync.aligned N: waits until at most N of the most recent groups are pending; the completed groups'
// accumulators are written (in issue order) when the last thread of the warpgroup arrives.
void wgmma_wait(int pending) {
  Block& b = current_block();
  const uint64_t key[3] = {static_cast<uint64_t>(pending), 0, 0};
  warpgroup_collective("wgmma.wait_group", key, nullptr, [&](WarpGroup& w) {
    while (static_cast<int>(w.groups.size()) > pending) complete_group(b, w);
  });
  b.cur->wgmma_fenced = false;
}

// ---- Hopper: mbarrier and cp.async.bulk.tensor (PTX ISA, "Parallel Synchronization and Communication Instructions:
// mbarrier" and "Data Movement and Conversion Instructions: cp.async.bulk.tensor") --------------------------------
// An mbarrier is 8 bytes of shared memory; the lane keeps its state beside the block (by shared address) and writes a
// marker into the 8 bytes at mbarrier.init, checked at every use: a barrier that was never initialised, or whose
// memory was overwritten by ordinary stores, is a fault. Per phase: `count` arrivals are expected; the phase
// completes when every arrival has happened and the tx-count is back at zero, then the next phase begins with
// `count` pending arrivals again. mbarrier.arrive.expect_tx adds to the tx-count, then arrives; a bulk tensor copy
// completes its bytes on the barrier (complete-tx) when it lands.
// Emulation of the copies: the box is read from global memory at issue (global memory does not change under a
// running GEMM) and laid out as the shared-memory image the copy writes (swizzle, out-of-bounds fill), but it lands
// only when a thread waiting on its mbarrier finds every arrival of the phase made: then every copy in flight on the
// barrier lands and completes its bytes. So a thread that reads a stage without waiting on its "full" barrier sees
// what was there before (the 0xff poison: NaN, or an older k tile), a copy issued into a stage still being read by
// wgmma is caught by wgmma's unchanged-operand check (or lands over the data of the earlier phase's readers), an
// arrival beyond the phase's count is a fault, more bytes completed than announced is a fault, and a phase that can
// never complete (too many bytes announced, arrivals missing) leaves its waiters blocked: the scheduler reports the
// deadlock. mbarrier.try_wait.parity is a scheduling point: the waiting thread always yields once.
namespace {

constexpr uint64_t kMBarMarker = 0x5346454d55424152ull;  // "SFEMUBAR", XORed with the barrier's address

uint64_t mbar_marker(uint32_t bar) { return kMBarMarker ^ bar; }

MBarrier& mbar_at(Block& b, Fiber& f, uint32_t bar, const char* what) {
  auto it = b.mbars.find(bar);
  if (it == b.mbars.end())
    fault_at(b, &f, std::string(what) + ": no mbarrier was initialised (mbarrier.init) at shared address " +
                        std::to_string(bar));
  uint64_t v;
  std::memcpy(&v, b.smem.data() + bar, 8);
  if (v != mbar_marker(bar))
    fault_at(b, &f, std::string(what) + ": the mbarrier at shared address " + std::to_string(bar) +
                        " was overwritten by ordinary stores since mbarrier.init");
  return it->second;
}

// The pending arrivals of the current phase are all made: the copies in flight land and complete their bytes; the
// phase completes when the tx-count is zero.
void mbar_settle(Block& b, Fiber& f, uint32_t bar, MBarrier& m) {
  if (m.pending != 0) return;
  for (const BulkCopy& c : m.inflight) {
    std::memcpy(b.smem.data() + c.dst, c.image.data(), c.image.size());
    m.tx -= static_cast<int64_t>(c.image.size());
  }
  m.inflight.clear();
  if (m.tx < 0)
    fault_at(b, &f, "mbarrier at shared address " + std::to_string(bar) + ": the bulk copies completed " +
                        std::to_string(-m.tx) + " bytes more than the expect-tx operations announced (tx-count below "
                        "zero: the phase could complete before all data has landed)");
  if (m.tx == 0) {
    ++m.phase;
    m.pending = m.expected;
    ++m.events;
  }
}

// The emulated tensor map (stored in CUtensorMap::opaque by cuTensorMapEncodeTiled).
struct TensorMapImpl {
  uint64_t magic;
  uint64_t addr;
  uint64_t dim[5];
  uint64_t stride[4];  // bytes, dimensions 1 .. rank - 1
  uint16_t box[5];
  uint8_t estride[5];
  uint8_t rank, elem, interleave, swizzle, oob;
};
static_assert(sizeof(TensorMapImpl) <= sizeof(CUtensorMap), "the emulated tensor map must fit CUtensorMap");
constexpr uint64_t kTensorMapMagic = 0x5346454d544d4150ull;  // "SFEMTMAP"

}  // namespace

void mbar_init(uint32_t bar, uint32_t count) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  if (bar % 8 != 0 || static_cast<size_t>(bar) + 8 > b.smem.size())
    fault_at(b, &f, "mbarrier.init: the address is not 8-byte aligned shared memory");
  if (count < 1 || count > (1u << 20) - 1) fault_at(b, &f, "mbarrier.init: count outside [1, 2^20 - 1]");
  MBarrier& m = b.mbars[bar];
  if (!m.inflight.empty()) fault_at(b, &f, "mbarrier.init on a barrier with bulk copies in flight");
  m = MBarrier{};
  m.expected = count;
  m.pending = count;
  m.events = 1;
  const uint64_t v = mbar_marker(bar);
  std::memcpy(b.smem.data() + bar, &v, 8);
}

void mbar_arrive(uint32_t bar) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  MBarrier& m = mbar_at(b, f, bar, "mbarrier.arrive");
  if (m.pending <= 0)
    fault_at(b, &f, "mbarrier.arrive on the mbarrier at shared address " + std::to_string(bar) +
                        ": every arrival of its current phase has been made (more arrivals than its count: a "
                        "producer or consumer that did not wait for the phase to complete)");
  --m.pending;
  ++m.events;
  if (m.pending == 0 && m.inflight.empty()) mbar_settle(b, f, bar, m);
}

void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  MBarrier& m = mbar_at(b, f, bar, "mbarrier.arrive.expect_tx");
  m.tx += bytes;
  if (m.tx > (int64_t{1} << 20) - 1) fault_at(b, &f, "mbarrier.arrive.expect_tx: tx-count above 2^20 - 1");
  mbar_arrive(bar);
}

void mbar_wait(uint32_t bar, uint32_t parity) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  if (parity > 1) fault_at(b, &f, "mbarrier.try_wait.parity: the parity operand is not 0 or 1");
  mbar_at(b, f, bar, "mbarrier.try_wait.parity");
  block_until(f, Wait::Yield, 0);  // a scheduling point, complete or not
  for (;;) {
    MBarrier& m = mbar_at(b, f, bar, "mbarrier.try_wait.parity");
    mbar_settle(b, f, bar, m);
    if ((m.phase & 1u) != parity) return;  // the phase of that parity (the current one's predecessor) has completed
    f.wait_bar = bar;
    f.wait_parity = parity;
    block_until(f, Wait::MBarrier, m.events);
  }
}

// cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::bytes [smem], [map, coords], [bar]: the box of
// the tensor map at element coordinates coords (innermost first; may be negative or past the end) into shared memory
// at smem (128-byte aligned), packed with the innermost box dimension contiguous, the 16-byte chunks of each address
// swizzled as the map says (address bits [4, 4 + log2(span/16)) ^= bits [7, 7 + log2(span/16)), the pattern that
// the wgmma descriptors' swizzle modes read), elements outside the tensor filled with zeros (or NaN with
// CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA); it completes the box's bytes (out-of-bounds ones included) on
// the mbarrier bar when it lands (see above).
void tma_load(void* smem, const void* tensor_map, const int32_t* coords, int rank, uint32_t bar) {
  Block& b = current_block();
  Fiber& f = *b.cur;
  TensorMapImpl t;
  std::memcpy(&t, tensor_map, sizeof t);
  if (t.magic != kTensorMapMagic)
    fault_at(b, &f, "cp.async.bulk.tensor: the tensor map was not made by cuTensorMapEncodeTiled");
  if (t.rank != rank)
    fault_at(b, &f, "cp.async.bulk.tensor." + std::to_string(rank) + "d with a tensor map of rank " +
                        std::to_string(t.rank));
  if (t.interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
    fault_at(b, &f, "cp.async.bulk.tensor: interleaved tensor maps are not emulated");
  for (int i = 1; i < rank; ++i)
    if (t.estride[i] != 1) fault_at(b, &f, "cp.async.bulk.tensor: element strides other than 1 are not emulated");
  const uint32_t dst = smem_addr(smem);
  if (dst % 128 != 0) fault_at(b, &f, "cp.async.bulk.tensor: the shared-memory destination is not 128-byte aligned");
  MBarrier& m = mbar_at(b, f, bar, "cp.async.bulk.tensor (its mbarrier)");
  size_t n = 1;
  for (int i = 0; i < rank; ++i) n *= t.box[i];
  const size_t bytes = n * t.elem;
  if (static_cast<size_t>(dst) + bytes > b.smem.size())
    fault_at(b, &f, "cp.async.bulk.tensor: the box does not fit the block's dynamic shared memory");
  const uint32_t mask = t.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 7u
                        : t.swizzle == CU_TENSOR_MAP_SWIZZLE_64B ? 3u
                        : t.swizzle == CU_TENSOR_MAP_SWIZZLE_32B ? 1u
                                                                 : 0u;
  BulkCopy c;
  c.dst = dst;
  c.image.assign(bytes, 0);
  const unsigned char* base = reinterpret_cast<const unsigned char*>(static_cast<uintptr_t>(t.addr));
  int64_t idx[5] = {0, 0, 0, 0, 0};
  for (size_t e = 0; e < n; ++e) {
    size_t r = e;
    bool in = true;
    uint64_t off = 0;
    for (int i = 0; i < rank; ++i) {
      idx[i] = static_cast<int64_t>(r % t.box[i]);
      r /= t.box[i];
      const int64_t x = static_cast<int64_t>(coords[i]) + idx[i];
      if (x < 0 || static_cast<uint64_t>(x) >= t.dim[i]) in = false;
      else off += static_cast<uint64_t>(x) * (i == 0 ? t.elem : t.stride[i - 1]);
    }
    const uint32_t a = dst + static_cast<uint32_t>(e * t.elem);
    const uint32_t s = a ^ (((a >> 7) & mask) << 4);
    if (s - dst + t.elem > bytes)
      fault_at(b, &f, "cp.async.bulk.tensor: a swizzled box that does not fill whole swizzle rows (not emulated)");
    unsigned char* out = c.image.data() + (s - dst);
    if (in)
      std::memcpy(out, base + off, t.elem);
    else
      std::memset(out, t.oob == CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ? 0 : 0xff, t.elem);
  }
  m.inflight.push_back(std::move(c));
  ++m.events;
}

// cvt.rna.tf32.f32: round to the nearest tf32 (10 mantissa bits), ties away from zero; NaN and Inf are kept.
uint32_t cvt_rna_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x7fffffffu) > 0x7f800000u ? 0x7fffffffu : (u & 0xffffe000u);
  u += 0x1000u;  // half of the dropped 13 bits: ties go away from zero (sign-magnitude)
  return u & 0xffffe000u;
}

// ---- host side -----------------------------------------------------------------------------------------------------

namespace {

struct Runtime {
  std::mutex mu;
  std::map<const void*, int> max_dynamic_smem;  // per kernel, set by cudaFuncSetAttribute
  std::map<cudaStream_t, cudaAccessPolicyWindow> windows;
  std::map<std::string, cudaError_t> fail_next;
  size_t persisting_limit = 0;
  int resets = 0;
  std::map<std::string, long> launches;  // per kernel name
  int device = 0;
};
Runtime& rt() {
  static Runtime r;  // test-only emulator state (see the top of this file)
  return r;
}
thread_local cudaError_t tl_last = cudaSuccess;

constexpr size_t kDeviceBytes = size_t{8} << 30;
constexpr int kMaxPersisting = 4 << 20, kMaxWindow = 64 << 20, kSmemOptin = 227 * 1024, kSms = 8;

cudaError_t take_injected(const char* fn) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.fail_next.find(fn);
  if (it == r.fail_next.end()) return cudaSuccess;
  cudaError_t e = it->second;
  r.fail_next.erase(it);
  return e;
}
cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) tl_last = e;
  return e;
}

struct StreamObj {
  int unused = 0;
};

}  // namespace

namespace {

// CUDA's launch checks; false (and the last error set) when CUDA would refuse the configuration.
bool launch_ok(const void* fn, dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    tl_last = cudaErrorInvalidConfiguration;
    return false;
  }
  int limit = 48 * 1024;
  {
    Runtime& r = rt();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.max_dynamic_smem.find(fn);
    if (it != r.max_dynamic_smem.end()) limit = it->second;
  }
  if (smem > static_cast<size_t>(limit)) {
    tl_last = cudaErrorInvalidValue;  // what CUDA reports for dynamic shared memory over the kernel's limit
    return false;
  }
  return true;
}

uint3 block_index(uint64_t i, dim3 grid) {
  return uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
               static_cast<unsigned>(i / (uint64_t{grid.x} * grid.y))};
}

}  // namespace

int occupancy(int threads, size_t smem) {
  if (threads <= 0 || threads > 1024) return 0;
  int n = 2048 / threads;
  if (smem > 0) n = std::min<int>(n, static_cast<int>(static_cast<size_t>(kSmemOptin + 1024) / smem));
  return std::max(0, std::min(n, 32));
}

void count_launch(const char* kernel) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ++r.launches[kernel];
}

void launch(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t,
            const std::function<void()>& body) {
  if (!launch_ok(fn, grid, block, smem)) return;
  count_launch(kernel);
  Grid g;
  Block b;
  b.kernel = kernel;
  b.body = &body;
  b.grid = &g;
  b.bdim = block;
  b.gdim = grid;
  b.smem.assign(smem, 0xff);
  Block* saved = tl_block;
  const bool reverse = reverse_order();
  const uint64_t nb = uint64_t{grid.x} * grid.y * grid.z;
  std::vector<Block*> one{&b};
  for (uint64_t k = 0; k < nb; ++k) {
    b.bid = block_index(reverse ? nb - 1 - k : k, grid);
    prepare_block(b);
    schedule(one);
  }
  tl_block = saved;
}

cudaError_t launch_cooperative(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t,
                               const std::function<void()>& body) {
  if (!launch_ok(fn, grid, block, smem)) return cudaGetLastError();
  count_launch(kernel);
  const uint64_t nb = uint64_t{grid.x} * grid.y * grid.z;
  const int per_sm = occupancy(static_cast<int>(block.x * block.y * block.z), smem);
  if (nb > static_cast<uint64_t>(per_sm) * kSms) {
    tl_last = cudaErrorCooperativeLaunchTooLarge;  // the blocks could not all be resident at once
    return cudaGetLastError();
  }
  Grid g;
  g.cooperative = true;
  std::vector<Block> blocks(static_cast<size_t>(nb));
  std::vector<Block*> all;
  for (uint64_t i = 0; i < nb; ++i) {
    Block& b = blocks[static_cast<size_t>(i)];
    b.kernel = kernel;
    b.body = &body;
    b.grid = &g;
    b.bdim = block;
    b.gdim = grid;
    b.smem.assign(smem, 0xff);
    b.bid = block_index(i, grid);
    prepare_block(b);
    g.live += b.live;
    all.push_back(&b);
  }
  Block* saved = tl_block;
  schedule(all);
  tl_block = saved;
  return cudaSuccess;
}

void grid_sync() {
  Block& b = current_block();
  Fiber& f = *b.cur;
  Grid& g = *b.grid;
  if (!g.cooperative) fault_at(b, &f, "grid.sync() in a kernel not launched with cudaLaunchCooperativeKernel");
  const uint64_t gen = g.gen;
  if (++g.arrived == g.live) {
    g.arrived = 0;
    ++g.gen;
  } else {
    block_until(f, Wait::Grid, gen);
  }
}

cudaAccessPolicyWindow stream_window(cudaStream_t s) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.windows.find(s);
  return it == r.windows.end() ? cudaAccessPolicyWindow{nullptr, 0, 0.0f, cudaAccessPropertyNormal, cudaAccessPropertyNormal}
                               : it->second;
}
size_t persisting_limit() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.persisting_limit;
}
void fail_next(const char* function, cudaError_t e) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  r.fail_next[function] = e;
}
int resets() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.resets;
}
long launches(const char* kernel) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.launches.find(kernel);
  return it == r.launches.end() ? 0 : it->second;
}

}  // namespace sfemu

using sfemu::ret;
using sfemu::take_injected;

cudaError_t cudaGetLastError() {
  cudaError_t e = sfemu::tl_last;
  sfemu::tl_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return sfemu::tl_last; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
  }
  return "unknown error";
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = sfemu::rt().device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : ret(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (dev != 0) return ret(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "%s", "sfemu (CUDA kernels emulated on the CPU)");
  p->totalGlobalMem = sfemu::kDeviceBytes;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = sfemu::kSms;
  p->l2CacheSize = 50 << 20;
  p->persistingL2CacheMaxSize = sfemu::kMaxPersisting;
  p->accessPolicyMaxWindowSize = sfemu::kMaxWindow;
  p->sharedMemPerBlockOptin = sfemu::kSmemOptin;
  p->clockRate = 1000000;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev) {
  if (dev != 0) return ret(cudaErrorInvalidDevice);
  if (cudaError_t e = take_injected("cudaDeviceGetAttribute")) return ret(e);
  switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = sfemu::kSmemOptin; break;
    case cudaDevAttrMultiProcessorCount: *v = sfemu::kSms; break;
    case cudaDevAttrL2CacheSize: *v = 50 << 20; break;
    case cudaDevAttrMaxPersistingL2CacheSize: *v = sfemu::kMaxPersisting; break;
    case cudaDevAttrMaxAccessPolicyWindowSize: *v = sfemu::kMaxWindow; break;
    case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
    case cudaDevAttrCooperativeLaunch: *v = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    default: return ret(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (cudaError_t e = take_injected("cudaMalloc")) return ret(e);
  *p = std::aligned_alloc(256, ((bytes ? bytes : 1) + 255) / 256 * 256);
  return *p ? cudaSuccess : ret(cudaErrorMemoryAllocation);
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = sfemu::kDeviceBytes;
  *total_b = sfemu::kDeviceBytes;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev) {
  if (dev != 0) return ret(cudaErrorInvalidDevice);
  *pool = reinterpret_cast<cudaMemPool_t>(&sfemu::rt());
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemset(void* dst, int v, size_t bytes) {
  if (bytes) std::memset(dst, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t) { return cudaMemset(dst, v, bytes); }
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new sfemu::StreamObj);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  {
    sfemu::Runtime& r = sfemu::rt();
    std::lock_guard<std::mutex> lock(r.mu);
    r.windows.erase(s);
  }
  delete reinterpret_cast<sfemu::StreamObj*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSetAttribute(cudaStream_t s, cudaStreamAttrID a, const cudaStreamAttrValue* v) {
  if (cudaError_t e = take_injected("cudaStreamSetAttribute")) return ret(e);
  if (a != cudaStreamAttributeAccessPolicyWindow) return ret(cudaErrorInvalidValue);
  const cudaAccessPolicyWindow& w = v->accessPolicyWindow;
  if (w.num_bytes > static_cast<size_t>(sfemu::kMaxWindow) || w.hitRatio < 0.0f || w.hitRatio > 1.0f)
    return ret(cudaErrorInvalidValue);
  sfemu::Runtime& r = sfemu::rt();
  std::lock_guard<std::mutex> lock(r.mu);
  r.windows[s] = w;
  return cudaSuccess;
}
cudaError_t cudaStreamGetAttribute(cudaStream_t s, cudaStreamAttrID a, cudaStreamAttrValue* v) {
  if (a != cudaStreamAttributeAccessPolicyWindow) return ret(cudaErrorInvalidValue);
  v->accessPolicyWindow = sfemu::stream_window(s);
  return cudaSuccess;
}
cudaError_t cudaDeviceSetLimit(cudaLimit l, size_t v) {
  if (cudaError_t e = take_injected("cudaDeviceSetLimit")) return ret(e);
  if (l != cudaLimitPersistingL2CacheSize) return ret(cudaErrorInvalidValue);
  sfemu::Runtime& r = sfemu::rt();
  std::lock_guard<std::mutex> lock(r.mu);
  r.persisting_limit = v < static_cast<size_t>(sfemu::kMaxPersisting) ? v : static_cast<size_t>(sfemu::kMaxPersisting);
  return cudaSuccess;
}
cudaError_t cudaDeviceGetLimit(size_t* v, cudaLimit l) {
  if (l != cudaLimitPersistingL2CacheSize) return ret(cudaErrorInvalidValue);
  *v = sfemu::persisting_limit();
  return cudaSuccess;
}
cudaError_t cudaCtxResetPersistingL2Cache() {
  if (cudaError_t e = take_injected("cudaCtxResetPersistingL2Cache")) return ret(e);
  sfemu::Runtime& r = sfemu::rt();
  std::lock_guard<std::mutex> lock(r.mu);
  ++r.resets;
  return cudaSuccess;
}
cudaError_t sfemu_occupancy(int* blocks, const void*, int threads, size_t smem) {
  *blocks = sfemu::occupancy(threads, smem);
  return cudaSuccess;
}
cudaError_t sfemu_func_set_attribute(const void* f, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > sfemu::kSmemOptin)
    return ret(cudaErrorInvalidValue);
  sfemu::Runtime& r = sfemu::rt();
  std::lock_guard<std::mutex> lock(r.mu);
  r.max_dynamic_smem[f] = v;
  return cudaSuccess;
}

// The driver entry points the lane offers: cuTensorMapEncodeTiled (CUDA 12.0 and later), nothing else.
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** funcPtr, unsigned int cudaVersion,
                                             unsigned long long, cudaDriverEntryPointQueryResult* driverStatus) {
  *funcPtr = nullptr;
  if (cudaError_t e = take_injected("cudaGetDriverEntryPointByVersion")) return ret(e);
  cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  if (std::string(symbol) == "cuTensorMapEncodeTiled") {
    q = cudaVersion >= 12000 ? cudaDriverEntryPointSuccess : cudaDriverEntryPointVersionNotSufficent;
    if (q == cudaDriverEntryPointSuccess) *funcPtr = reinterpret_cast<void*>(&cuTensorMapEncodeTiled);
  }
  if (driverStatus) *driverStatus = q;
  return cudaSuccess;
}

// cuTensorMapEncodeTiled with the driver's documented requirements (CUDA 13 cuda.h): CUDA_ERROR_INVALID_VALUE when
// one is not met. The lane's copy emulates the non-interleaved maps with element strides 1 (the others are refused
// by tma_load with a fault, not here). sfemu::fail_next("cuTensorMapEncodeTiled", ...) makes the next call fail.
CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
                                void* globalAddress, const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill) {
  if (take_injected("cuTensorMapEncodeTiled") != cudaSuccess) return CUDA_ERROR_INVALID_VALUE;
  static const int kElem[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
  if (!tensorMap || reinterpret_cast<uintptr_t>(tensorMap) % 64 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (static_cast<int>(tensorDataType) < 0 || static_cast<int>(tensorDataType) > CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ)
    return CUDA_ERROR_INVALID_VALUE;
  if (tensorRank < 1 || tensorRank > 5) return CUDA_ERROR_INVALID_VALUE;
  if (interleave > CU_TENSOR_MAP_INTERLEAVE_32B || (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE && tensorRank < 3))
    return CUDA_ERROR_INVALID_VALUE;
  const uint64_t elem = static_cast<uint64_t>(kElem[tensorDataType]);
  const uint64_t align = interleave == CU_TENSOR_MAP_INTERLEAVE_32B ? 32 : 16;
  if (reinterpret_cast<uintptr_t>(globalAddress) % align != 0) return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t i = 0; i < tensorRank; ++i)
    if (globalDim[i] == 0 || globalDim[i] > (uint64_t{1} << 32)) return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t i = 0; i + 1 < tensorRank; ++i)
    if (globalStrides[i] % align != 0 || globalStrides[i] >= (uint64_t{1} << 40)) return CUDA_ERROR_INVALID_VALUE;
  for (cuuint32_t i = 0; i < tensorRank; ++i) {
    if (boxDim[i] == 0 || boxDim[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    if (elementStrides[i] == 0 || elementStrides[i] > 8) return CUDA_ERROR_INVALID_VALUE;
  }
  if (interleave == CU_TENSOR_MAP_INTERLEAVE_NONE && (boxDim[0] * elem) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (swizzle > CU_TENSOR_MAP_SWIZZLE_128B) return CUDA_ERROR_INVALID_VALUE;  // the 128B atom variants: not emulated
  if (interleave == CU_TENSOR_MAP_INTERLEAVE_32B && swizzle != CU_TENSOR_MAP_SWIZZLE_32B)
    return CUDA_ERROR_INVALID_VALUE;
  if (interleave == CU_TENSOR_MAP_INTERLEAVE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_NONE &&
      boxDim[0] * elem > (16u << static_cast<int>(swizzle)))
    return CUDA_ERROR_INVALID_VALUE;  // the inner box dimension within the swizzle span (32, 64, 128 bytes)
  if (l2Promotion > CU_TENSOR_MAP_L2_PROMOTION_L2_256B || oobFill > CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA)
    return CUDA_ERROR_INVALID_VALUE;
  sfemu::TensorMapImpl t{};
  t.magic = sfemu::kTensorMapMagic;
  t.addr = reinterpret_cast<uintptr_t>(globalAddress);
  for (cuuint32_t i = 0; i < tensorRank; ++i) {
    t.dim[i] = globalDim[i];
    t.box[i] = static_cast<uint16_t>(boxDim[i]);
    t.estride[i] = static_cast<uint8_t>(elementStrides[i]);
    if (i + 1 < tensorRank) t.stride[i] = globalStrides[i];
  }
  t.rank = static_cast<uint8_t>(tensorRank);
  t.elem = static_cast<uint8_t>(elem);
  t.interleave = static_cast<uint8_t>(interleave);
  t.swizzle = static_cast<uint8_t>(swizzle);
  t.oob = static_cast<uint8_t>(oobFill);
  *tensorMap = CUtensorMap{};
  std::memcpy(tensorMap->opaque, &t, sizeof t);
  return CUDA_SUCCESS;
}
