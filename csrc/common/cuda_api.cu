// Library-wide entry points of libjmipose_cuda.so.  cudart is linked statically, so this library
// works beside any torch build; it shares the device's primary context with torch.
#include <cuda_runtime.h>

#include "common/cuda_utils.cuh"
#include "common/error.h"
#include "common/macros.h"

JMIPOSE_API int jmipose_cuda_abi_version() { return JMIPOSE_ABI_VERSION; }

JMIPOSE_API const char* jmipose_cuda_last_error() { return jmipose::last_error_storage().c_str(); }

// Writes the number of visible devices; returns the CUDA error code (0 = success) so a machine
// without a driver or GPU reports "no device" instead of failing to load the library.
JMIPOSE_API int jmipose_cuda_device_count(int* count) {
  *count = 0;
  cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    *count = 0;
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    jmipose::fail("cudaGetDeviceCount: %s", cudaGetErrorString(err));
    return static_cast<int>(err);
  }
  return 0;
}

JMIPOSE_API int jmipose_cuda_runtime_version(int* version) {
  *version = 0;
  return static_cast<int>(cudaRuntimeGetVersion(version));
}
