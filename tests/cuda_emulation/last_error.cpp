// The error-message entry point of the CUDA library, for the CPU emulation build (the real one lives
// in csrc/common/cuda_api.cu, which needs the CUDA runtime).
#include "common/error.h"
#include "common/macros.h"

JMIPOSE_API const char* jmipose_cuda_last_error() { return jmipose::last_error_storage().c_str(); }
