// csrc/joint_motion_attention/cuda.cu compiled for the CPU emulation in this folder (see cuda_runtime.h):
// the exported C ABI is the real one; the extra emu_* functions configure the emulated device and
// report the launches.
#include "joint_motion_attention/cuda.cu"
#include "mma_emulation.h"

namespace jmipose {
namespace attention_cuda {
// The kernels' `extern __shared__` array: blocks run one at a time, so one buffer serves them all.
alignas(16) unsigned char shared_raw[256 * 1024];
}  // namespace attention_cuda
}  // namespace jmipose

#define EMU_API extern "C" __attribute__((visibility("default")))

EMU_API const char* emu_last_error_message() { return jmipose::last_error_storage().c_str(); }

EMU_API void emu_reset(int shared_optin_limit) {
  EmuDevice& device = emu_device();
  device = EmuDevice{};
  device.shared_optin_limit = shared_optin_limit;
  device.shared_memory = jmipose::attention_cuda::shared_raw;
  device.shared_capacity = sizeof(jmipose::attention_cuda::shared_raw);
}

EMU_API int emu_launch_count() { return static_cast<int>(emu_device().launches.size()); }

// grid.x, grid.y, threads, shared bytes of launch i
EMU_API void emu_launch_info(int i, long long* out) {
  const EmuLaunch& launch = emu_device().launches.at(static_cast<size_t>(i));
  out[0] = launch.grid.x;
  out[1] = launch.grid.y;
  out[2] = launch.block.x;
  out[3] = static_cast<long long>(launch.shared);
}
