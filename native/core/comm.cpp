// comm.cpp — MPI and NCCL loaded with dlopen, and the collectives of comm.h.
//
// The ABI assumed of Open MPI (libmpi.so.40) and of NCCL (libnccl.so.2) is in mpi_abi.h, checked against the real
// mpi.h by test/native/comm_test.cpp when Open MPI's headers are installed.
#include "comm.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "error.h"
#include "mpi_abi.h"

namespace sf {

namespace {

using Handle = void*;
constexpr int kMpiSuccess = mpi_abi::kSuccess;
constexpr int kThreadSerialized = mpi_abi::kThreadSerialized;
constexpr int kCommTypeShared = mpi_abi::kCommTypeShared;
constexpr int kMaxErrorString = mpi_abi::kMaxErrorString;
void* const kInPlace = reinterpret_cast<void*>(mpi_abi::kInPlace);

// dlopen that reports dlerror() on failure. `global` for use (Open MPI's plugins resolve libmpi's symbols); a probe
// loads locally and closes the library again, so that backends() does not leave MPI mapped into every process.
void* open_library(const char* name, std::string* why, bool global = true) {
  void* h = dlopen(name, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
  if (!h) {
    const char* e = dlerror();
    *why = e ? e : cat("dlopen(", name, ") failed");
  }
  return h;
}

std::string env_or(const char* var, const char* def) {
  const char* v = std::getenv(var);
  return v && *v ? v : def;
}

// Resolves `name` in lib into fn (a function pointer or a Handle); the first missing symbol sets *why, naming the file,
// and *ok false.
template <typename Fn>
void bind_symbol(void* lib, const std::string& file, const char* name, Fn& fn, bool* ok, std::string* why,
                 const char* hint) {
  void* p = dlsym(lib, name);
  if (!p && *ok) {
    *why = cat(file, " has no symbol ", name, hint);
    *ok = false;
  }
  fn = reinterpret_cast<Fn>(p);
}

}  // namespace

// ---- MPI ----------------------------------------------------------------------------------------------------------
struct MpiApi {
  void* lib = nullptr;
  int (*Initialized)(int*);
  int (*Finalized)(int*);
  int (*Init_thread)(int*, char***, int, int*);
  int (*Comm_rank)(Handle, int*);
  int (*Comm_size)(Handle, int*);
  int (*Comm_split_type)(Handle, int, int, Handle, Handle*);
  int (*Comm_free)(Handle*);
  int (*Comm_set_errhandler)(Handle, Handle);
  int (*Allgather)(const void*, int, Handle, void*, int, Handle, Handle);
  int (*Allgatherv)(const void*, int, Handle, void*, const int*, const int*, Handle, Handle);
  int (*Alltoallv)(const void*, const int*, const int*, Handle, void*, const int*, const int*, Handle, Handle);
  int (*Bcast)(void*, int, Handle, int, Handle);
  int (*Barrier)(Handle);
  int (*Finalize)();
  int (*Abort)(Handle, int);
  int (*Error_string)(int, char*, int*);
  int (*Get_library_version)(char*, int*);
  Handle comm_world, t_float, t_double, t_int64, t_byte, info_null, errors_return;

  ~MpiApi() {
    // The library stays loaded: Open MPI cannot be unloaded and loaded again in one process (its own documentation
    // says MPI_Init can be called once), and its threads may outlive us until exit.
  }

  // Loads every symbol; false (and *why) if the library or a symbol is missing.
  bool load(std::string* file, std::string* why, bool global = true) {
    *file = env_or("SHAREDFORMER_MPI_LIB", mpi_abi::kLibrary);
    lib = open_library(file->c_str(), why, global);
    if (!lib) {
      if (void* mpich = dlopen("libmpi.so.12", RTLD_NOW | RTLD_LOCAL)) {
        dlclose(mpich);
        *why += "; MPICH's libmpi.so.12 is installed, but this build speaks Open MPI's ABI (libmpi.so.40) only";
      }
      return false;
    }
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) { bind_symbol(lib, *file, name, fn, &ok, why, " (not Open MPI's ABI?)"); };
    sym(Initialized, "MPI_Initialized");
    sym(Finalized, "MPI_Finalized");
    sym(Init_thread, "MPI_Init_thread");
    sym(Comm_rank, "MPI_Comm_rank");
    sym(Comm_size, "MPI_Comm_size");
    sym(Comm_split_type, "MPI_Comm_split_type");
    sym(Comm_free, "MPI_Comm_free");
    sym(Comm_set_errhandler, "MPI_Comm_set_errhandler");
    sym(Allgather, "MPI_Allgather");
    sym(Allgatherv, "MPI_Allgatherv");
    sym(Alltoallv, "MPI_Alltoallv");
    sym(Bcast, "MPI_Bcast");
    sym(Barrier, "MPI_Barrier");
    sym(Finalize, "MPI_Finalize");
    sym(Abort, "MPI_Abort");
    sym(Error_string, "MPI_Error_string");
    sym(Get_library_version, "MPI_Get_library_version");
    Handle* handles[] = {&comm_world, &t_float, &t_double, &t_int64, &t_byte, &info_null, &errors_return};
    static_assert(std::size(mpi_abi::kHandles) == 7, "one slot per predefined handle");
    for (size_t i = 0; i < std::size(handles); ++i) sym(*handles[i], mpi_abi::kHandles[i].symbol);
    return ok;
  }

  std::string version() {
    char buf[4096] = {0};  // MPI_MAX_LIBRARY_VERSION_STRING is 256 in Open MPI; room to spare
    int len = 0;
    if (Get_library_version(buf, &len) != kMpiSuccess) return "";
    std::string s(buf, static_cast<size_t>(std::clamp(len, 0, static_cast<int>(sizeof buf))));
    const size_t nl = s.find_first_of("\n,");
    return nl == std::string::npos ? s : s.substr(0, nl);
  }
};

// ---- NCCL ---------------------------------------------------------------------------------------------------------
struct NcclUniqueId {
  char internal[nccl_abi::kUniqueIdBytes];
};
struct NcclApi {
  void* lib = nullptr;
  int (*GetVersion)(int*);
  int (*GetUniqueId)(NcclUniqueId*);
  int (*CommInitRank)(Handle*, int, NcclUniqueId, int);
  int (*CommDestroy)(Handle);
  const char* (*GetErrorString)(int);
  int (*AllReduce)(const void*, void*, size_t, int, int, Handle, void*);
  int (*Reduce)(const void*, void*, size_t, int, int, int, Handle, void*);
  int (*Broadcast)(const void*, void*, size_t, int, int, Handle, void*);
  int (*GroupStart)();
  int (*GroupEnd)();
  int version = 0;

  bool load(std::string* file, std::string* why, bool global = true) {
    *file = env_or("SHAREDFORMER_NCCL_LIB", nccl_abi::kLibrary);
    lib = open_library(file->c_str(), why, global);
    if (!lib) return false;
    bool ok = true;
    auto sym = [&](auto& fn, const char* name) { bind_symbol(lib, *file, name, fn, &ok, why, ""); };
    sym(GetVersion, "ncclGetVersion");
    sym(GetUniqueId, "ncclGetUniqueId");
    sym(CommInitRank, "ncclCommInitRank");
    sym(CommDestroy, "ncclCommDestroy");
    sym(GetErrorString, "ncclGetErrorString");
    sym(AllReduce, "ncclAllReduce");
    sym(Reduce, "ncclReduce");
    sym(Broadcast, "ncclBroadcast");
    sym(GroupStart, "ncclGroupStart");
    sym(GroupEnd, "ncclGroupEnd");
    if (ok && GetVersion(&version) != 0) {
      *why = cat(*file, ": ncclGetVersion failed");
      ok = false;
    }
    return ok;
  }
};
constexpr int kNcclFloat32 = nccl_abi::kFloat32, kNcclSum = nccl_abi::kSum, kNcclAvg = nccl_abi::kAvg,
              kNcclAvgSince = nccl_abi::kAvgSince;

CommProbe comm_probe() {
  CommProbe p;
  {
    MpiApi api;
    p.mpi_found = api.load(&p.mpi_library, &p.mpi_reason, /*global=*/false);
    if (p.mpi_found) p.mpi_version = api.version();
    if (api.lib) dlclose(api.lib);  // (a no-op for the mapping when distributed.init() has loaded it for use)
  }
  {
    NcclApi api;
    p.nccl_found = api.load(&p.nccl_library, &p.nccl_reason, /*global=*/false);
    if (p.nccl_found) p.nccl_version = api.version;
    if (api.lib) dlclose(api.lib);
  }
  return p;
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::AllReduce: return "allReduce";
    case Collective::ReduceScatter: return "reduceScatter";
    case Collective::AllGather: return "allGather";
    case Collective::Broadcast: return "broadcast";
    case Collective::Barrier: return "barrier";
    case Collective::SumSquares: return "sumSquares";
    case Collective::Gather: return "gather";
  }
  return "?";
}

std::pair<int64_t, int64_t> shard_range(int64_t n, int world, int r) {
  const int64_t base = n / world, rem = n % world;
  const int64_t begin = r * base + std::min<int64_t>(r, rem);
  return {begin, begin + base + (r < rem ? 1 : 0)};
}

// ---- Comm ---------------------------------------------------------------------------------------------------------
Comm::Comm() : api_(std::make_unique<MpiApi>()) {
  std::string why;
  if (!api_->load(&library_, &why))
    error("distributed.init: MPI is not available (", why,
          "). Install Open MPI: `apt-get install openmpi-bin libopenmpi-dev` (Debian/Ubuntu), then start the ranks with "
          "`mpirun -np N node your-script.js`; see docs/distributed.md");
  int inited = 0, finalized = 0;
  api_->Initialized(&inited);
  api_->Finalized(&finalized);
  if (finalized) error("distributed.init: MPI was finalized in this process; it cannot be initialised again");
  if (inited)
    error("distributed.init: MPI is already initialised in this process (by another addon instance, a worker "
          "thread, or another library); distributed training runs from one thread of the process");
  // Open MPI's default signal handlers (SIGSEGV, SIGBUS, ... for its backtraces) would replace V8's; keep Node's.
  setenv("OMPI_MCA_opal_signal", "", 0);
  int provided = 0;
  check("distributed.init", "MPI_Init_thread", api_->Init_thread(nullptr, nullptr, kThreadSerialized, &provided));
  if (provided < kThreadSerialized) {
    api_->Finalize();
    finalized_ = true;
    error("distributed.init: this MPI library gives thread level ", provided,
          " (MPI_THREAD_SERIALIZED = 2 is needed: collectives run on the device streams' threads)");
  }
  // Errors come back as codes (named in our messages) instead of aborting the job inside MPI.
  api_->Comm_set_errhandler(api_->comm_world, api_->errors_return);
  check("distributed.init", "MPI_Comm_rank", api_->Comm_rank(api_->comm_world, &rank_));
  check("distributed.init", "MPI_Comm_size", api_->Comm_size(api_->comm_world, &size_));
  Handle local = nullptr;
  check("distributed.init", "MPI_Comm_split_type",
        api_->Comm_split_type(api_->comm_world, kCommTypeShared, rank_, api_->info_null, &local));
  api_->Comm_rank(local, &local_rank_);
  api_->Comm_size(local, &local_size_);
  api_->Comm_free(&local);
  library_ = api_->version();
}

Comm::~Comm() {
  {
    std::lock_guard<std::mutex> lk(async_mu_);
    async_stop_ = true;
  }
  async_cv_.notify_all();
  if (async_thread_.joinable()) async_thread_.join();
  for (auto& [dev, c] : nccl_comms_) nccl_->CommDestroy(c);
  // No MPI_Finalize here: a clean exit has finalised already (distributed/index.ts, exit code 0), and a rank that
  // exits with an error must not finalise — MPI_Finalize waits for the other ranks, which may be stuck in a
  // collective waiting for this one, so neither would ever end. Exiting unfinalised, it lets mpirun end the job.
}

void Comm::check(const char* op, const char* fn, int rc) {
  if (rc == kMpiSuccess) return;
  char msg[kMaxErrorString + 1] = {0};
  int len = 0;
  if (api_->Error_string(rc, msg, &len) != kMpiSuccess) std::snprintf(msg, sizeof msg, "error code %d", rc);
  error(op, ": rank ", rank_, " of ", size_, ": ", fn, " failed: ", msg);
}

void Comm::account(double seconds, double bytes) {
  comm_ns_.fetch_add(static_cast<int64_t>(seconds * 1e9), std::memory_order_relaxed);
  comm_bytes_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  comm_calls_.fetch_add(1, std::memory_order_relaxed);
}

int Comm::icount(const char* op, int64_t n) const {
  if (n < 0 || n > INT_MAX) range_error(op, ": ", n, " elements: an MPI count is an int (at most ", INT_MAX, ")");
  return static_cast<int>(n);
}

namespace {
// Seconds of the call f().
template <typename F>
double timed(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

void Comm::agree(const char* op, Collective kind, int64_t count, int64_t reduce_op, int64_t root,
                 const std::string* input_failure) {
  std::lock_guard<std::mutex> lk(mu_);
  if (finalized_) error(op, ": distributed.finalize() has run; no collective is possible after it");
  constexpr int F = 5;
  const int64_t mine[F] = {static_cast<int64_t>(kind), count, reduce_op, root, input_failure ? 1 : 0};
  std::vector<int64_t> all(static_cast<size_t>(size_) * F);
  check(op, "MPI_Allgather", api_->Allgather(mine, F, api_->t_int64, all.data(), F, api_->t_int64, api_->comm_world));
  auto at = [&](int r, int k) { return all[static_cast<size_t>(r) * F + static_cast<size_t>(k)]; };
  if (input_failure) error(op, ": rank ", rank_, " of ", size_, ": its input had failed: ", *input_failure);
  std::string failed;
  for (int r = 0; r < size_; ++r)
    if (at(r, 4)) failed += cat(failed.empty() ? "" : ", ", r);
  if (!failed.empty())
    error(op, ": rank ", rank_, " of ", size_, ": the input of rank ", failed,
          " had failed (its error is reported on that rank); no rank ran the collective");
  bool same = true;
  for (int r = 1; r < size_; ++r)
    for (int k = 0; k < 4; ++k) same = same && at(r, k) == at(0, k);
  if (same) return;
  std::string who;
  for (int r = 0; r < size_; ++r) {
    const auto c = static_cast<Collective>(at(r, 0));
    who += cat(r ? ", " : "", "rank ", r, " calls ", collective_name(c));
    if (c != Collective::Barrier && c != Collective::SumSquares) who += cat(" with ", at(r, 1), " elements");
    if (c == Collective::AllReduce || c == Collective::ReduceScatter) who += at(r, 2) == 1 ? " (mean)" : " (sum)";
    if (c == Collective::Broadcast) who += cat(" from root ", at(r, 3));
  }
  range_error(op, ": rank ", rank_, " of ", size_, ": the ranks disagree on this collective (", who,
              "); every rank must call the same collectives, in the same order, on tensors of the same size");
}

// The sums are ours, in rank order: each rank receives every rank's part of its shard (MPI_Alltoallv) and adds them
// rank 0 first, ((x0 + x1) + x2) + ..., so the result does not depend on MPI's choice of algorithm, is the same bits on
// every rank, and W ranks give exactly what one process that accumulates the same W gradients in order gives. The
// traffic is a ring all-reduce's: (W - 1) / W of the buffer sent and received in each of the two phases.
void Comm::reduce_scatter_locked(const char* op, const float* in, float* out, int64_t n) {
  icount(op, n);
  const auto W = static_cast<size_t>(size_);
  std::vector<int> scounts(W), sdispls(W), rcounts(W), rdispls(W);
  const auto mr_ = shard_range(n, size_, rank_);
  const int64_t mb = mr_.first, me = mr_.second;  // not a structured binding: lambdas capture it (C++17)
  const int mine = static_cast<int>(me - mb);
  for (int r = 0; r < size_; ++r) {
    auto [b, e] = shard_range(n, size_, r);
    scounts[static_cast<size_t>(r)] = static_cast<int>(e - b);
    sdispls[static_cast<size_t>(r)] = static_cast<int>(b);
    rcounts[static_cast<size_t>(r)] = mine;
    rdispls[static_cast<size_t>(r)] = r * mine;  // W * mine <= n + W: fits (n <= INT_MAX - W checked by icount below)
  }
  icount(op, static_cast<int64_t>(W) * mine);
  std::vector<float> parts(W * static_cast<size_t>(mine));
  check(op, "MPI_Alltoallv",
        api_->Alltoallv(in, scounts.data(), sdispls.data(), api_->t_float, parts.data(), rcounts.data(), rdispls.data(),
                        api_->t_float, api_->comm_world));
  for (int i = 0; i < mine; ++i) {
    float s = parts[static_cast<size_t>(i)];
    for (size_t r = 1; r < W; ++r) s += parts[r * static_cast<size_t>(mine) + static_cast<size_t>(i)];
    out[i] = s;
  }
}

void Comm::allgather_locked(const char* op, const float* in, float* out, int64_t n) {
  icount(op, n);
  std::vector<int> counts(static_cast<size_t>(size_)), displs(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    auto [b, e] = shard_range(n, size_, r);
    counts[static_cast<size_t>(r)] = static_cast<int>(e - b);
    displs[static_cast<size_t>(r)] = static_cast<int>(b);
  }
  const float* mine = out + displs[static_cast<size_t>(rank_)];
  const void* send = in == mine ? kInPlace : static_cast<const void*>(in);
  check(op, "MPI_Allgatherv",
        api_->Allgatherv(send, counts[static_cast<size_t>(rank_)], api_->t_float, out, counts.data(), displs.data(),
                         api_->t_float, api_->comm_world));
}

void Comm::allreduce_sum(const char* op, float* buf, int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  const auto r_ = shard_range(n, size_, rank_);
  const int64_t b = r_.first, e = r_.second;  // not a structured binding: lambdas capture it (C++17)
  std::vector<float> shard(static_cast<size_t>(e - b));
  account(timed([&] {
            reduce_scatter_locked(op, buf, shard.data(), n);
            std::copy(shard.begin(), shard.end(), buf + b);
            allgather_locked(op, buf + b, buf, n);
          }),
          4.0 * static_cast<double>(n));
}

void Comm::reduce_scatter_sum(const char* op, const float* in, float* out, int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  account(timed([&] { reduce_scatter_locked(op, in, out, n); }), 4.0 * static_cast<double>(n));
}

void Comm::allgather(const char* op, const float* in, float* out, int64_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  account(timed([&] { allgather_locked(op, in, out, n); }), 4.0 * static_cast<double>(n));
}

void Comm::bcast(const char* op, void* buf, int64_t bytes, int root) {
  std::lock_guard<std::mutex> lk(mu_);
  const int c = icount(op, bytes);
  account(timed([&] { check(op, "MPI_Bcast", api_->Bcast(buf, c, api_->t_byte, root, api_->comm_world)); }),
          static_cast<double>(bytes));
}

void Comm::barrier(const char* op) {
  std::lock_guard<std::mutex> lk(mu_);
  if (finalized_) error(op, ": distributed.finalize() has run; no collective is possible after it");
  account(timed([&] { check(op, "MPI_Barrier", api_->Barrier(api_->comm_world)); }), 0.0);
}

std::vector<double> Comm::allgather_double(const char* op, double mine) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<double> all(static_cast<size_t>(size_));
  account(timed([&] {
            check(op, "MPI_Allgather",
                  api_->Allgather(&mine, 1, api_->t_double, all.data(), 1, api_->t_double, api_->comm_world));
          }),
          8.0);
  return all;
}

void Comm::submit_async(std::function<void()> job) {
  std::lock_guard<std::mutex> lk(async_mu_);
  if (!async_thread_.joinable())
    async_thread_ = std::thread([this] {
      std::unique_lock<std::mutex> l(async_mu_);
      for (;;) {
        async_cv_.wait(l, [this] { return async_stop_ || !async_jobs_.empty(); });
        if (async_jobs_.empty()) return;  // stopping, nothing left
        std::function<void()> f = std::move(async_jobs_.front());
        async_jobs_.pop_front();
        ++async_running_;
        l.unlock();
        std::string err;
        try {
          f();
        } catch (const std::exception& e) {
          err = e.what();
        }
        l.lock();
        --async_running_;
        if (!err.empty() && async_error_.empty()) async_error_ = err;
        async_cv_.notify_all();
      }
    });
  async_jobs_.push_back(std::move(job));
  async_cv_.notify_all();
}

void Comm::wait_async() {
  std::unique_lock<std::mutex> l(async_mu_);
  async_cv_.wait(l, [this] { return async_jobs_.empty() && async_running_ == 0; });
  if (!async_error_.empty()) {
    std::string e;
    e.swap(async_error_);
    error(e);
  }
}

void Comm::finalize() {
  std::lock_guard<std::mutex> lk(mu_);
  if (finalized_) return;
  for (auto& [dev, c] : nccl_comms_) nccl_->CommDestroy(c);
  nccl_comms_.clear();
  finalized_ = true;
  check("distributed.finalize", "MPI_Finalize", api_->Finalize());
}

void Comm::abort(int code) {
  // no lock: a collective may hold it, blocked on the rank that failed; MPI_Abort is allowed from any thread
  api_->Abort(api_->comm_world, code);
}

// ---- NCCL collectives ---------------------------------------------------------------------------------------------
bool Comm::nccl_found() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!nccl_) {
    auto api = std::make_unique<NcclApi>();
    std::string file, why;
    if (!api->load(&file, &why)) return false;
    nccl_ = std::move(api);
  }
  return true;
}

void Comm::nccl_check(const char* op, const char* fn, int rc) {
  if (rc == 0) return;
  error(op, ": rank ", rank_, " of ", size_, ": ", fn, " failed: ", nccl_->GetErrorString(rc));
}

void* Comm::nccl_comm(const char* op, int device) {
  if (!nccl_found()) {
    std::string file, why;
    NcclApi probe;
    probe.load(&file, &why);
    error(op, ": rank ", rank_, ": a CUDA tensor needs NCCL, which is not available (", why,
          "); install NCCL (libnccl.so.2, e.g. NVIDIA's libnccl2 package) or train on the CPU");
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& [d, c] : nccl_comms_)
    if (d == device) return c;
  NcclUniqueId id{};
  if (rank_ == 0) nccl_check(op, "ncclGetUniqueId", nccl_->GetUniqueId(&id));
  check(op, "MPI_Bcast", api_->Bcast(&id, sizeof id, api_->t_byte, 0, api_->comm_world));
  Handle c = nullptr;
  nccl_check(op, "ncclCommInitRank", nccl_->CommInitRank(&c, size_, id, rank_));
  nccl_comms_.emplace_back(device, c);
  return c;
}

void Comm::nccl_allreduce(const char* op, int device, float* buf, int64_t n, bool mean, void* stream) {
  Handle c = nccl_comm(op, device);
  std::lock_guard<std::mutex> lk(mu_);
  if (mean && nccl_->version < kNcclAvgSince)
    error(op, ": a mean needs NCCL 2.10 or later (ncclAvg); this is ", nccl_->version);
  account(timed([&] {
            nccl_check(op, "ncclAllReduce",
                       nccl_->AllReduce(buf, buf, static_cast<size_t>(n), kNcclFloat32, mean ? kNcclAvg : kNcclSum, c,
                                        stream));
          }),
          4.0 * static_cast<double>(n));
}

void Comm::nccl_reduce_scatter(const char* op, int device, const float* in, float* out, int64_t n, bool mean,
                               void* stream) {
  Handle c = nccl_comm(op, device);
  std::lock_guard<std::mutex> lk(mu_);
  if (mean && nccl_->version < kNcclAvgSince)
    error(op, ": a mean needs NCCL 2.10 or later (ncclAvg); this is ", nccl_->version);
  account(timed([&] {
            nccl_check(op, "ncclGroupStart", nccl_->GroupStart());
            for (int r = 0; r < size_; ++r) {
              auto [b, e] = shard_range(n, size_, r);
              if (e == b) continue;
              nccl_check(op, "ncclReduce",
                         nccl_->Reduce(in + b, r == rank_ ? out : nullptr, static_cast<size_t>(e - b), kNcclFloat32,
                                       mean ? kNcclAvg : kNcclSum, r, c, stream));
            }
            nccl_check(op, "ncclGroupEnd", nccl_->GroupEnd());
          }),
          4.0 * static_cast<double>(n));
}

void Comm::nccl_allgather(const char* op, int device, const float* in, float* out, int64_t n, void* stream) {
  Handle c = nccl_comm(op, device);
  std::lock_guard<std::mutex> lk(mu_);
  account(timed([&] {
            nccl_check(op, "ncclGroupStart", nccl_->GroupStart());
            for (int r = 0; r < size_; ++r) {
              auto [b, e] = shard_range(n, size_, r);
              if (e == b) continue;
              nccl_check(op, "ncclBroadcast",
                         nccl_->Broadcast(r == rank_ ? in : out + b, out + b, static_cast<size_t>(e - b), kNcclFloat32,
                                          r, c, stream));
            }
            nccl_check(op, "ncclGroupEnd", nccl_->GroupEnd());
          }),
          4.0 * static_cast<double>(n));
}

void Comm::nccl_bcast(const char* op, int device, float* buf, int64_t n, int root, void* stream) {
  Handle c = nccl_comm(op, device);
  std::lock_guard<std::mutex> lk(mu_);
  account(timed([&] {
            nccl_check(op, "ncclBroadcast",
                       nccl_->Broadcast(buf, buf, static_cast<size_t>(n), kNcclFloat32, root, c, stream));
          }),
          4.0 * static_cast<double>(n));
}

}  // namespace sf
