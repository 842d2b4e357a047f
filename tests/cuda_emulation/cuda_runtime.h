// A CPU emulation of the part of the CUDA runtime and device intrinsics that jmipose's kernels use, so
// their unchanged sources (csrc/<op>/cuda.cu) compile with g++ and run on machines without a GPU (CI
// compiles the real library with nvcc but has no GPU to run it).  build.py in this folder builds and
// loads an op; README.md says what the emulation models and what it does not.
//
// Blocks run one after another; the threads of a block are std::threads; __syncthreads and __syncwarp
// are barriers that abort with a message instead of hanging when not every thread reaches them;
// shuffles go through a per-warp exchange buffer; atomics take a lock.  A launch is checked like the
// driver would (empty grid, block size, grid limits, dynamic shared memory beyond the reserved or
// available amount) and recorded for the tests.  Dynamic shared memory is poisoned with NaN bytes
// before each block, so reads of unwritten shared memory show up in the results.
#pragma once

#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// A block-scope `__shared__ T x;` must be one object for every thread of the block: `static` does that
// (blocks run one after another).  `extern __shared__ T x[];` (dynamic shared memory) cannot also be
// static, so a source that uses it defines JMIPOSE_EMULATION_EXTERN_SHARED before including this file
// and defines the array itself (see joint_motion_attention.cpp); one source cannot mix the two forms.
#if defined(JMIPOSE_EMULATION_EXTERN_SHARED)
#define __shared__
#else
#define __shared__ static
#endif

// Device-side overloads that CUDA provides for integer and float arguments.
using std::fmaf;
using std::max;
using std::min;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

struct CUstream_st;  // opaque, as in the real runtime: a stream is a pointer, never dereferenced
using cudaStream_t = CUstream_st*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
constexpr cudaError_t cudaErrorInvalidDevice = 101;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16, cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct EmuLaunch {
  dim3 grid, block;
  size_t shared;
};

// Process-wide settings and history of the one emulated device (emu_reset in device_api.cpp restores
// the defaults).
struct EmuDevice {
  cudaError_t last_error = cudaSuccess;
  int multiprocessor_count = 3;         // a small device, so split reductions get several splits
  int shared_optin_limit = 227 * 1024;  // an H100's; tests lower it
  size_t reserved_shared = 48 * 1024;   // raised by cudaFuncSetAttribute
  std::vector<EmuLaunch> launches;
};
inline EmuDevice& emu_device() {
  static EmuDevice device;
  return device;
}

// The buffer behind `extern __shared__` arrays: defined by the source that declares them and registered
// here (blocks run one at a time, so one buffer serves every block).  Empty when no source has one.
struct EmuDynamicShared {
  unsigned char* base = nullptr;
  size_t capacity = 0;
};
inline EmuDynamicShared& emu_dynamic_shared() {
  static EmuDynamicShared buffer;
  return buffer;
}
inline bool emu_register_dynamic_shared(unsigned char* base, size_t capacity) {
  emu_dynamic_shared() = {base, capacity};
  return true;
}

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;  // no real runtime behind the emulation
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t cudaGetLastError() {
  const cudaError_t err = emu_device().last_error;
  emu_device().last_error = cudaSuccess;
  return err;
}
inline const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "invalid configuration argument";
  }
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attribute) {
    case cudaDevAttrMultiProcessorCount: *value = emu_device().multiprocessor_count; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu_device().shared_optin_limit; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel*, cudaFuncAttribute, int value) {
  if (value < 0 || value > emu_device().shared_optin_limit) return cudaErrorInvalidValue;
  emu_device().reserved_shared = static_cast<size_t>(value);
  return cudaSuccess;
}
// Streams are not modelled: everything runs synchronously on the calling thread's launch.
inline cudaError_t cudaMemsetAsync(void* pointer, int value, size_t bytes, cudaStream_t) {
  std::memset(pointer, value, bytes);
  return cudaSuccess;
}

[[noreturn]] inline void emu_abort(const char* what) {
  std::fprintf(stderr, "cuda emulation: %s\n", what);
  std::abort();
}
[[noreturn]] inline void __trap() { emu_abort("__trap() reached"); }

// ---- the block being run

// A barrier for `expected` threads that aborts instead of hanging when some never arrive, and when the
// threads of one phase arrive at different places (a __syncthreads that only some threads reach while
// the others finish the block).
class EmuBarrier {
 public:
  explicit EmuBarrier(int expected) : expected_(expected) {}
  void arrive_and_wait(int place) {
    std::unique_lock<std::mutex> guard(lock_);
    if (waiting_ == 0) place_ = place;
    if (place != place_) emu_abort("__syncthreads()/__syncwarp() not reached by every thread of the block or warp");
    const long phase = phase_;
    if (++waiting_ == expected_) {
      waiting_ = 0;
      ++phase_;
      changed_.notify_all();
      return;
    }
    if (!changed_.wait_for(guard, std::chrono::seconds(20), [&] { return phase_ != phase; })) {
      emu_abort("barrier deadlock: a __syncthreads()/__syncwarp() not reached by every thread in 20 s");
    }
  }

 private:
  std::mutex lock_;
  std::condition_variable changed_;
  const int expected_;
  int waiting_ = 0, place_ = 0;
  long phase_ = 0;
};

enum EmuBarrierPlace { kEmuSyncPoint = 0, kEmuBlockEnd = 1 };

struct EmuBlock {
  std::unique_ptr<EmuBarrier> block_barrier;
  std::vector<std::unique_ptr<EmuBarrier>> warp_barriers;
  std::vector<float> exchange;         // per warp: 32 lanes
  std::vector<uint32_t> mma_a, mma_b;  // per warp: 32 lanes x 4 / x 2 registers
  std::vector<float> mma_c;            // per warp: 32 lanes x 4
};
inline thread_local EmuBlock* emu_block = nullptr;

inline void __syncthreads() { emu_block->block_barrier->arrive_and_wait(kEmuSyncPoint); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  emu_block->warp_barriers[threadIdx.x / 32]->arrive_and_wait(kEmuSyncPoint);
}
inline float __shfl_sync(unsigned, float value, int source_lane) {
  float* slots = emu_block->exchange.data() + (threadIdx.x / 32) * 32;
  slots[threadIdx.x % 32] = value;
  __syncwarp();
  const float result = slots[source_lane & 31];
  __syncwarp();
  return result;
}
inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask) {
  return __shfl_sync(mask, value, static_cast<int>(threadIdx.x % 32) ^ lane_mask);
}

inline std::mutex& emu_atomic_lock() {
  static std::mutex instance;
  return instance;
}
inline float atomicAdd(float* address, float value) {
  std::lock_guard<std::mutex> guard(emu_atomic_lock());
  const float old = *address;
  *address = old + value;
  return old;
}

// ---- launches

// The driver's checks of a launch configuration (1-D blocks only: the kernels here use threadIdx.x).
inline bool emu_valid_launch(dim3 grid, dim3 block, size_t shared) {
  const EmuDevice& device = emu_device();
  return grid.x > 0 && grid.y > 0 && grid.z > 0 && grid.x <= static_cast<unsigned>(INT_MAX) && grid.y <= 65535 &&
         grid.z <= 65535 && block.x > 0 && block.x <= 1024 && block.y == 1 && block.z == 1 &&
         shared <= emu_dynamic_shared().capacity && (shared <= 48 * 1024 || shared <= device.reserved_shared);
}

// Runs `body` (one CUDA thread's kernel call) for every thread of every block.  One std::thread per
// CUDA thread for the whole launch; every thread walks the blocks in the same order, with a barrier
// before each block (the dynamic shared memory is poisoned) and after it (the next block does not touch
// shared memory while this one runs).
inline void emu_run_blocks(dim3 grid, dim3 block, size_t shared, const std::function<void()>& body) {
  EmuBlock state;
  state.block_barrier = std::make_unique<EmuBarrier>(block.x);
  for (unsigned first = 0; first < block.x; first += 32) {
    state.warp_barriers.push_back(std::make_unique<EmuBarrier>(std::min(32u, block.x - first)));
  }
  state.exchange.assign(state.warp_barriers.size() * 32, 0.0f);
  state.mma_a.assign(state.warp_barriers.size() * 32 * 4, 0u);
  state.mma_b.assign(state.warp_barriers.size() * 32 * 2, 0u);
  state.mma_c.assign(state.warp_barriers.size() * 32 * 4, 0.0f);
  unsigned char* shared_memory = emu_dynamic_shared().base;
  std::vector<std::thread> threads;
  threads.reserve(block.x);
  for (unsigned t = 0; t < block.x; ++t) {
    threads.emplace_back([&, t] {
      emu_block = &state;
      threadIdx = dim3(t);
      blockDim = block;
      gridDim = grid;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            if (t == 0 && shared > 0) std::memset(shared_memory, 0xff, shared);  // NaN until written
            state.block_barrier->arrive_and_wait(kEmuBlockEnd);
            blockIdx = dim3(bx, by, bz);
            body();
            state.block_barrier->arrive_and_wait(kEmuBlockEnd);
          }
      emu_block = nullptr;
    });
  }
  for (auto& thread : threads) thread.join();
}

template <typename... Params, size_t... I>
std::tuple<Params...> emu_unpack_arguments(void** args, std::index_sequence<I...>) {
  return std::tuple<Params...>(*static_cast<Params*>(args[I])...);
}

// Synchronous; an invalid configuration is returned and kept for cudaGetLastError, as the runtime does.
template <typename... Params>
cudaError_t cudaLaunchKernel(void (*kernel)(Params...), dim3 grid, dim3 block, void** args, size_t shared,
                             cudaStream_t) {
  emu_device().launches.push_back({grid, block, shared});
  if (!emu_valid_launch(grid, block, shared)) {
    emu_device().last_error = cudaErrorInvalidConfiguration;
    return cudaErrorInvalidConfiguration;
  }
  const std::tuple<Params...> params = emu_unpack_arguments<Params...>(args, std::index_sequence_for<Params...>{});
  emu_run_blocks(grid, block, shared, [&] { std::apply(kernel, params); });
  return cudaSuccess;
}
