// scale_add: out = a * scale + b.  The toy op that proves the build -> C ABI -> custom_op path before
// the real ops; the per-element math is shared by the CPU and CUDA code, so CPU tests exercise it.
#pragma once

#include "common/macros.h"

namespace jmipose {

template <typename T>
JMIPOSE_HOST_DEVICE T scale_add_value(T a, T b, T scale) {
  return a * scale + b;
}

}  // namespace jmipose
