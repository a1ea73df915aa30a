// mpi_abi.h — what comm.cpp assumes of Open MPI's ABI (libmpi.so.40) and NCCL's C API, in one place, so that
// test/native/comm_test.cpp can check every value against the real mpi.h when Open MPI's headers are installed.
//
// Open MPI: the handles (MPI_Comm, MPI_Datatype, MPI_Op, MPI_Info, MPI_Errhandler) are pointers; the predefined ones
// are the addresses of exported globals (MPI_COMM_WORLD is &ompi_mpi_comm_world), which dlsym() returns. NCCL (nccl.h,
// 2.x): ncclResult_t, ncclDataType_t and ncclRedOp_t are C enums (ints); ncclUniqueId is 128 bytes.
#pragma once

namespace sf::mpi_abi {

constexpr const char* kLibrary = "libmpi.so.40";  // Open MPI 3.x-5.x
constexpr int kSuccess = 0;                       // MPI_SUCCESS
constexpr int kThreadSerialized = 2;              // MPI_THREAD_SERIALIZED
constexpr int kCommTypeShared = 0;                // MPI_COMM_TYPE_SHARED
constexpr int kMaxErrorString = 256;              // MPI_MAX_ERROR_STRING
constexpr long kInPlace = 1;                      // MPI_IN_PLACE == (void*)1

// The predefined handles: the macro and the global it is the address of.
struct Predefined {
  const char* macro;
  const char* symbol;
};
constexpr Predefined kHandles[] = {
    {"MPI_COMM_WORLD", "ompi_mpi_comm_world"}, {"MPI_FLOAT", "ompi_mpi_float"},
    {"MPI_DOUBLE", "ompi_mpi_double"},         {"MPI_INT64_T", "ompi_mpi_int64_t"},
    {"MPI_BYTE", "ompi_mpi_byte"},             {"MPI_INFO_NULL", "ompi_mpi_info_null"},
    {"MPI_ERRORS_RETURN", "ompi_mpi_errors_return"},
};

}  // namespace sf::mpi_abi

namespace sf::nccl_abi {
constexpr const char* kLibrary = "libnccl.so.2";
constexpr int kFloat32 = 7;       // ncclFloat32 (= ncclFloat)
constexpr int kSum = 0;           // ncclSum
constexpr int kAvg = 4;           // ncclAvg, since NCCL 2.10
constexpr int kAvgSince = 21000;  // ncclGetVersion of 2.10.0
constexpr int kUniqueIdBytes = 128;
}  // namespace sf::nccl_abi
