// A CPU stand-in for csrc/common/cuda_utils.cuh and the CUDA runtime, so that a .cu file of jmipose
// (kernels, launch code and C ABI) compiles with g++ and runs on the CPU: every CUDA thread of a
// block is a std::thread, __shared__ variables are statics (blocks run one after another),
// __syncthreads() is a barrier that reports a deadlock instead of hanging, atomicAdd takes a lock.
// Used only by tests (tests/ops/test_joint_region_gather_cuda_emulation.py builds it); it checks index math,
// synchronisation and the host logic where no GPU is present.  Only float32 data is meaningful:
// __half and __nv_bfloat16 are placeholders so that the dispatch code compiles.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/macros.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

using std::fmaf;
using std::max;
using std::min;

struct EmulatedIndex {
  unsigned int x = 0;
};
inline thread_local EmulatedIndex threadIdx;
inline thread_local EmulatedIndex blockIdx;

struct __half { unsigned short bits; };
struct __nv_bfloat16 { unsigned short bits; };

typedef void* cudaStream_t;
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 3;  // a small "device", so split reductions get exercised
  return cudaSuccess;
}

namespace jmipose {

class DeviceGuard {
 public:
  explicit DeviceGuard(int) {}
  bool ok() const { return true; }
};

inline int check_launch(const char*) { return 0; }

template <typename T>
inline float to_float(T v) { return static_cast<float>(v); }
template <>
inline float to_float<__half>(__half) { std::abort(); }
template <>
inline float to_float<__nv_bfloat16>(__nv_bfloat16) { std::abort(); }
template <typename T>
inline T from_float(float v) { return static_cast<T>(v); }
template <>
inline __half from_float<__half>(float) { std::abort(); }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float) { std::abort(); }

namespace emulation {

struct Barrier {
  std::mutex lock;
  std::condition_variable changed;
  int expected = 0, waiting = 0;
  long generation = 0;
  void wait() {
    std::unique_lock<std::mutex> guard(lock);
    const long mine = generation;
    if (++waiting == expected) {
      waiting = 0;
      ++generation;
      changed.notify_all();
      return;
    }
    if (!changed.wait_for(guard, std::chrono::seconds(20), [&] { return generation != mine; })) {
      std::fprintf(stderr, "cuda emulation: __syncthreads() deadlock (a barrier not reached by every thread)\n");
      std::abort();
    }
  }
};

inline Barrier& barrier() {
  static Barrier instance;
  return instance;
}

inline std::mutex& atomic_lock() {
  static std::mutex instance;
  return instance;
}

}  // namespace emulation

// Runs the grid block after block on `threads` std::threads; a barrier after each block keeps the
// next block from touching the shared statics while the previous one still runs.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned int grid, int threads, cudaStream_t, Args... args) {
  emulation::barrier().expected = threads;
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([=]() {
      threadIdx.x = static_cast<unsigned int>(t);
      for (unsigned int block = 0; block < grid; ++block) {
        blockIdx.x = block;
        kernel(static_cast<Params>(args)...);
        emulation::barrier().wait();
      }
    });
  }
  for (auto& worker : workers) worker.join();
}

}  // namespace jmipose

inline void __syncthreads() { jmipose::emulation::barrier().wait(); }

inline float atomicAdd(float* address, float value) {
  std::lock_guard<std::mutex> guard(jmipose::emulation::atomic_lock());
  const float old = *address;
  *address = old + value;
  return old;
}
