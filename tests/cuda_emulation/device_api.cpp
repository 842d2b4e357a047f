// The C entry points through which tests configure the emulated device and read its launch history
// (the library's own entry points, jmipose_cuda_last_error among them, come from csrc/common/cuda_api.cu).
#include "cuda_runtime.h"

#define EMU_API extern "C" __attribute__((visibility("default")))

// Restores the device defaults with the given opt-in shared-memory limit (bytes) and clears the history.
EMU_API void emu_reset(int shared_optin_limit) {
  emu_device() = EmuDevice{};
  emu_device().shared_optin_limit = shared_optin_limit;
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
