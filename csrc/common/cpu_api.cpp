// Library-wide entry points of libjmipose_cpu.so.
#include <omp.h>

#include "common/error.h"
#include "common/macros.h"

JMIPOSE_API int jmipose_cpu_abi_version() { return JMIPOSE_ABI_VERSION; }

JMIPOSE_API const char* jmipose_cpu_last_error() { return jmipose::last_error_storage().c_str(); }

JMIPOSE_API int jmipose_cpu_max_threads() { return omp_get_max_threads(); }
