// comm_test — the distributed runtime's pieces that need no second process: shard_range, the probe of MPI and NCCL,
// and (when Open MPI's mpi.h is installed; CMake finds it with find_package(MPI)) every value of Open MPI's ABI that
// native/core/mpi_abi.h assumes, checked against the real header: constants, handle sizes, the globals behind the
// predefined handles, and the signatures of the functions comm.cpp calls.
#include <cstring>
#include <string>

#include "check.h"
#include "core/comm.h"
#include "core/mpi_abi.h"

#if SF_HAVE_MPI_H
#include <mpi.h>

#include <type_traits>
#endif

using sf::shard_range;

TEST(shard_range_covers_n_in_rank_order_the_first_n_mod_w_one_longer) {
  for (int64_t n : {0, 1, 2, 3, 7, 10, 64, 1000, 35201}) {
    for (int w : {1, 2, 3, 4, 7, 64}) {
      int64_t expect_begin = 0;
      for (int r = 0; r < w; ++r) {
        auto [b, e] = shard_range(n, w, r);
        CHECK_EQ(b, expect_begin);
        CHECK_EQ(e - b, n / w + (r < n % w ? 1 : 0));
        expect_begin = e;
      }
      CHECK_EQ(expect_begin, n);
    }
  }
  auto [b, e] = shard_range(10, 3, 0);
  CHECK_EQ(b, 0);
  CHECK_EQ(e, 4);
}

TEST(the_probe_reports_each_library_found_or_why_not) {
  const sf::CommProbe p = sf::comm_probe();
  CHECK(!p.mpi_library.empty());
  CHECK(p.mpi_found || !p.mpi_reason.empty());
  if (p.mpi_found) CHECK(p.mpi_version.find("Open MPI") != std::string::npos);
  CHECK(p.nccl_found || !p.nccl_reason.empty());
  std::printf("  mpi: %s (%s)  nccl: %s (%s)\n", p.mpi_found ? "found" : "not found",
              p.mpi_found ? p.mpi_version.c_str() : p.mpi_reason.c_str(), p.nccl_found ? "found" : "not found",
              p.nccl_found ? std::to_string(p.nccl_version).c_str() : p.nccl_reason.c_str());
}

TEST(a_missing_library_is_reported_with_the_file_named) {
  setenv("SHAREDFORMER_MPI_LIB", "/nonexistent/libmpi.so.40", 1);
  const sf::CommProbe p = sf::comm_probe();
  unsetenv("SHAREDFORMER_MPI_LIB");
  CHECK(!p.mpi_found);
  CHECK(p.mpi_reason.find("/nonexistent/libmpi.so.40") != std::string::npos);
}

#if SF_HAVE_MPI_H
#define SF_STR2(x) #x
#define SF_STR(x) SF_STR2(x)

TEST(open_mpi_abi_constants_match_mpi_h) {
  namespace abi = sf::mpi_abi;
  CHECK_EQ(abi::kSuccess, MPI_SUCCESS);
  CHECK_EQ(abi::kThreadSerialized, static_cast<int>(MPI_THREAD_SERIALIZED));
  CHECK_EQ(abi::kCommTypeShared, static_cast<int>(MPI_COMM_TYPE_SHARED));
  CHECK_EQ(abi::kMaxErrorString, MPI_MAX_ERROR_STRING);
  CHECK(reinterpret_cast<void*>(abi::kInPlace) == MPI_IN_PLACE);
  static_assert(sizeof(MPI_Comm) == sizeof(void*) && sizeof(MPI_Datatype) == sizeof(void*) &&
                    sizeof(MPI_Op) == sizeof(void*) && sizeof(MPI_Info) == sizeof(void*) &&
                    sizeof(MPI_Errhandler) == sizeof(void*),
                "Open MPI's handles are pointers");
  static_assert(std::is_pointer_v<MPI_Comm> && std::is_pointer_v<MPI_Datatype>, "handles are pointers");
}

TEST(each_predefined_handle_is_the_address_of_the_global_comm_cpp_looks_up) {
  // The macros' expansions, e.g. MPI_COMM_WORLD -> ((MPI_Comm) ((void *) &(ompi_mpi_comm_world)))
  const std::string expansions[] = {SF_STR(MPI_COMM_WORLD), SF_STR(MPI_FLOAT),         SF_STR(MPI_DOUBLE),
                                    SF_STR(MPI_INT64_T),    SF_STR(MPI_BYTE),          SF_STR(MPI_INFO_NULL),
                                    SF_STR(MPI_ERRORS_RETURN)};
  size_t i = 0;
  for (const auto& h : sf::mpi_abi::kHandles) {
    const std::string& x = expansions[i++];
    const std::string want = std::string("&(") + h.symbol + ")";
    if (x.find(want) == std::string::npos)
      sfcheck::fail(__FILE__, __LINE__, std::string(h.macro) + " expands to " + x + ", not the address of " + h.symbol);
  }
  CHECK_EQ(i, std::size(expansions));
}

// comm.cpp's function table takes every handle as void*: the same registers as Open MPI's typed pointers.
#define SF_SIG(fn, ...) static_assert(std::is_same_v<decltype(&fn), __VA_ARGS__>, #fn " has the signature comm.cpp assumes")
SF_SIG(MPI_Init_thread, int (*)(int*, char***, int, int*));
SF_SIG(MPI_Comm_rank, int (*)(MPI_Comm, int*));
SF_SIG(MPI_Comm_size, int (*)(MPI_Comm, int*));
SF_SIG(MPI_Comm_split_type, int (*)(MPI_Comm, int, int, MPI_Info, MPI_Comm*));
SF_SIG(MPI_Comm_free, int (*)(MPI_Comm*));
SF_SIG(MPI_Comm_set_errhandler, int (*)(MPI_Comm, MPI_Errhandler));
SF_SIG(MPI_Allgather, int (*)(const void*, int, MPI_Datatype, void*, int, MPI_Datatype, MPI_Comm));
SF_SIG(MPI_Allgatherv, int (*)(const void*, int, MPI_Datatype, void*, const int[], const int[], MPI_Datatype, MPI_Comm));
SF_SIG(MPI_Alltoallv, int (*)(const void*, const int[], const int[], MPI_Datatype, void*, const int[], const int[],
                              MPI_Datatype, MPI_Comm));
SF_SIG(MPI_Bcast, int (*)(void*, int, MPI_Datatype, int, MPI_Comm));
SF_SIG(MPI_Barrier, int (*)(MPI_Comm));
SF_SIG(MPI_Finalize, int (*)());
SF_SIG(MPI_Abort, int (*)(MPI_Comm, int));
SF_SIG(MPI_Error_string, int (*)(int, char*, int*));
SF_SIG(MPI_Get_library_version, int (*)(char*, int*));
SF_SIG(MPI_Initialized, int (*)(int*));
SF_SIG(MPI_Finalized, int (*)(int*));
#else
TEST(open_mpi_abi_not_checked_without_mpi_h) {
  std::printf("  skipped: Open MPI's mpi.h was not found when this test was built (install libopenmpi-dev)\n");
}
#endif

TEST_MAIN()
