// A CPU emulation of the part of the CUDA runtime and device intrinsics that jmipose's
// joint_motion_attention kernels use, so their source (csrc/joint_motion_attention/cuda.cu, unchanged)
// can be compiled by a C++ compiler and run on machines without a GPU (CI compiles the CUDA library
// with nvcc but has no GPU to run it).
//
// Blocks run one after another; the threads of a block are std::threads; __syncthreads and __syncwarp
// are barriers; shuffles go through a per-warp exchange buffer.  A launch is checked like the driver
// would (empty grid, block size, shared memory beyond the reserved or available amount, grid.y/z
// limits) and the configuration of every launch is recorded for the tests.  Shared memory is poisoned
// with NaN bytes before each block, so reads of unwritten shared memory show up in the results.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
constexpr cudaError_t cudaErrorInvalidDevice = 101;
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct EmuLaunch {
  dim3 grid, block;
  size_t shared;
};

// Process-wide state of the emulated device.
struct EmuDevice {
  cudaError_t last_error = cudaSuccess;
  int shared_optin_limit = 227 * 1024;  // an H100's; tests lower it
  size_t reserved_shared = 48 * 1024;   // raised by cudaFuncSetAttribute
  unsigned char* shared_memory = nullptr;
  size_t shared_capacity = 0;
  std::vector<EmuLaunch> launches;
};
inline EmuDevice& emu_device() {
  static EmuDevice device;
  return device;
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
  return err == cudaSuccess ? "no error" : err == cudaErrorInvalidDevice ? "invalid device" : "invalid configuration";
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = emu_device().shared_optin_limit;
  return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel*, cudaFuncAttribute, int value) {
  if (value > emu_device().shared_optin_limit) return cudaErrorInvalidConfiguration;
  emu_device().reserved_shared = static_cast<size_t>(value);
  return cudaSuccess;
}

inline void __trap() {
  std::fprintf(stderr, "__trap() reached in the CUDA emulation\n");
  std::abort();
}

// ---- the block being run
struct EmuBlock {
  std::unique_ptr<std::barrier<>> block_barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<float> exchange;         // per warp: 32 lanes
  std::vector<uint32_t> mma_a, mma_b;  // per warp: 32 lanes x 4 / x 2 registers
  std::vector<float> mma_c;            // per warp: 32 lanes x 4
};
inline thread_local EmuBlock* emu_block = nullptr;

inline void __syncthreads() { emu_block->block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_block->warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
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

template <typename Params>
cudaError_t cudaLaunchKernel(void (*kernel)(Params), dim3 grid, dim3 block, void** args, size_t shared,
                             cudaStream_t) {
  EmuDevice& device = emu_device();
  device.launches.push_back({grid, block, shared});
  const bool bad = grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || block.x == 0 ||
                   block.x > 1024 || block.x % 32 != 0 || block.y != 1 || block.z != 1 ||
                   shared > device.shared_capacity || (shared > 48 * 1024 && shared > device.reserved_shared);
  if (bad) {
    device.last_error = cudaErrorInvalidConfiguration;
    return cudaErrorInvalidConfiguration;
  }
  const Params params = *static_cast<Params*>(args[0]);
  EmuBlock state;
  state.block_barrier = std::make_unique<std::barrier<>>(block.x);
  for (unsigned w = 0; w < block.x / 32; ++w) state.warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  state.exchange.assign(block.x, 0.0f);
  state.mma_a.assign(block.x * 4, 0u);
  state.mma_b.assign(block.x * 2, 0u);
  state.mma_c.assign(block.x * 4, 0.0f);
  // One thread per CUDA thread for the whole launch; every thread walks the blocks in the same order.
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < block.x; ++t) {
    threads.emplace_back([&, t] {
      emu_block = &state;
      threadIdx = dim3(t);
      blockDim = block;
      gridDim = grid;
      for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
          for (unsigned bx = 0; bx < grid.x; ++bx) {
            if (t == 0) std::memset(device.shared_memory, 0xff, shared);  // NaN/garbage until written
            state.block_barrier->arrive_and_wait();
            blockIdx = dim3(bx, by, bz);
            kernel(params);
            state.block_barrier->arrive_and_wait();
          }
    });
  }
  for (auto& thread : threads) thread.join();
  return cudaSuccess;
}
