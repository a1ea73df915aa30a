// comm.h — the distributed runtime: MPI (and NCCL) loaded at run time, and the collectives the ranks run on float32
// buffers.
//
// Why run-time loading (docs/distributed.md): the addon must load and work on a machine without MPI (the default
// install needs no MPI and no compiler), and a collective must be an op on the tensor's stream like any kernel, so
// that it is ordered with the kernels that wrote its input and a failure poisons its outputs (design invariant 7). A
// second addon built against mpi.h could not see this addon's tensors or streams. So the library is dlopen()ed when
// distributed training is asked for (or backends() reports on it), and the few functions and handles we use are
// declared here for Open MPI's ABI (libmpi.so.40: handles are the addresses of predefined globals) — checked against
// the real mpi.h by test/native/comm_test.cpp (its values: mpi_abi.h) when Open MPI's headers are installed.
//
// MPI's process-wide state: MPI_Init may be called once per process. The Comm object is owned by one addon
// instance's Context (no static mutable state); a second instance (a worker thread) that asks for it is refused with
// an error that says so. Every MPI call goes through one mutex, so MPI_THREAD_SERIALIZED suffices (collectives run on
// the stream threads of the devices, init and finalize on the JavaScript thread).
//
// Agreement: before each collective the ranks exchange what they are about to do (kind, element count, operation,
// root): a rank that passes a different size, or calls a different collective, makes every rank throw an error that
// names the ranks and their sizes, instead of the undefined behaviour (a hang, truncation or a crash) of mismatched
// MPI calls. It costs one small all-gather per collective.
#pragma once
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace sf {

// What backends() says about the distributed libraries (found or not, and why).
struct CommProbe {
  bool mpi_found = false;
  std::string mpi_library;  // the file loaded
  std::string mpi_version;  // MPI_Get_library_version's first line
  std::string mpi_reason;   // why not found
  bool nccl_found = false;
  std::string nccl_library;
  int nccl_version = 0;  // ncclGetVersion: 22304 for 2.23.4
  std::string nccl_reason;
};
// Loads (dlopen) without initialising anything. $SHAREDFORMER_MPI_LIB / $SHAREDFORMER_NCCL_LIB name the files to
// load instead of libmpi.so.40 / libnccl.so.2.
CommProbe comm_probe();

// The collectives a rank can ask for; the agreement step compares these across ranks.
enum class Collective : int64_t { AllReduce = 1, ReduceScatter, AllGather, Broadcast, Barrier, SumSquares, Gather };
const char* collective_name(Collective c);

// Contiguous shard r of n elements over `world` ranks: [begin, end), the first n % world ranks one element longer.
std::pair<int64_t, int64_t> shard_range(int64_t n, int world, int r);

struct MpiApi;   // the function tables (comm.cpp)
struct NcclApi;

class Comm {
 public:
  // Loads MPI and initialises it (MPI_Init_thread). Throws sf::Error naming what to install when MPI is missing.
  Comm();
  ~Comm();  // MPI_Finalize, unless finalize() or abort() ran
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& library() const { return library_; }
  bool finalized() const { return finalized_; }

  // Every rank states (kind, count, op, root) and whether its input had failed (an earlier op on its stream failed:
  // the rank still takes part, so that no rank waits forever); throws (on every rank) when they differ or any input
  // had failed. `op` names the caller; `input_failure` is the failure of this rank's input, or null.
  void agree(const char* op, Collective kind, int64_t count, int64_t reduce_op, int64_t root,
             const std::string* input_failure = nullptr);

  // The collectives (after agree()); counts are elements. Each throws sf::Error "<op>: rank R: MPI_X failed: ...".
  // Sums are added in rank order by us (comm.cpp), not by MPI: the same bits on every rank, for every MPI algorithm.
  void allreduce_sum(const char* op, float* buf, int64_t n);
  // in: n elements; out: this rank's shard_range(n) (sum over ranks).
  void reduce_scatter_sum(const char* op, const float* in, float* out, int64_t n);
  // in: this rank's shard_range(n) of out (n elements); out receives every rank's shard in order. in may alias out's
  // own shard (in place).
  void allgather(const char* op, const float* in, float* out, int64_t n);
  void bcast(const char* op, void* buf, int64_t bytes, int root);
  void barrier(const char* op);
  // Every rank's `mine`, in rank order.
  std::vector<double> allgather_double(const char* op, double mine);

  // Time spent inside collective calls and the payload bytes they moved (this rank's buffer sizes), since start.
  // Atomics: read from the JavaScript thread while a stream thread is inside a collective.
  double comm_seconds() const { return static_cast<double>(comm_ns_.load(std::memory_order_relaxed)) * 1e-9; }
  double comm_bytes() const { return static_cast<double>(comm_bytes_.load(std::memory_order_relaxed)); }
  int64_t comm_calls() const { return comm_calls_.load(std::memory_order_relaxed); }

  // NCCL (CUDA tensors): a communicator per CUDA device, made on first use inside that device's stream task (rank 0's
  // ncclUniqueId reaches the others through MPI_Bcast, as llm.c does). `stream` is the device's cudaStream_t. The
  // calls enqueue on the stream and return; errors name the rank and NCCL's message. `mean` divides by the world
  // size (ncclAvg). Unequal shards (reduce-scatter, all-gather) are grouped ncclReduce / ncclBroadcast calls.
  bool nccl_found();
  void nccl_allreduce(const char* op, int device, float* buf, int64_t n, bool mean, void* stream);
  void nccl_reduce_scatter(const char* op, int device, const float* in, float* out, int64_t n, bool mean, void* stream);
  void nccl_allgather(const char* op, int device, const float* in, float* out, int64_t n, void* stream);
  void nccl_bcast(const char* op, int device, float* buf, int64_t n, int root, void* stream);

  // Overlap: jobs (a collective each) run on this Comm's own thread in submission order, while the device stream goes on
  // with later kernels. wait_async() blocks until every job submitted so far has run, then throws the first error of
  // those jobs (each error once). The thread starts with the first job and ends with the Comm.
  void submit_async(std::function<void()> job);
  void wait_async();

  void finalize();           // collective; after it no call is possible
  void abort(int code);      // MPI_Abort(MPI_COMM_WORLD, code): ends every rank

 private:
  void check(const char* op, const char* fn, int rc);
  void reduce_scatter_locked(const char* op, const float* in, float* out, int64_t n);  // mu_ held
  void allgather_locked(const char* op, const float* in, float* out, int64_t n);
  void account(double seconds, double bytes);
  int icount(const char* op, int64_t n) const;  // MPI counts are int
  void* nccl_comm(const char* op, int device);   // the device's communicator (made on first use)
  void nccl_check(const char* op, const char* fn, int rc);

  std::unique_ptr<MpiApi> api_;
  std::unique_ptr<NcclApi> nccl_;
  std::vector<std::pair<int, void*>> nccl_comms_;  // (device, ncclComm_t)
  std::mutex mu_;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::string library_;
  bool finalized_ = false;
  std::atomic<int64_t> comm_ns_{0}, comm_bytes_{0}, comm_calls_{0};

  // the overlap thread (submit_async / wait_async)
  std::mutex async_mu_;
  std::condition_variable async_cv_;
  std::deque<std::function<void()>> async_jobs_;
  size_t async_running_ = 0;
  bool async_stop_ = false;
  std::string async_error_;
  std::thread async_thread_;
};

}  // namespace sf
