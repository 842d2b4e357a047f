// joint_motion_attention (CUDA): both attention directions, forward and backward, flash-style.
//
//   out_m = res_m + softmax(scale q_m k_j^T, keys masked by mask_j) v_j    (direction 0, blockIdx.y = 0)
//   out_j = res_j + softmax(scale q_j k_m^T, keys masked by mask_m) v_m    (direction 1, blockIdx.y = 1)
//
// FlashAttention-2 (Dao, 2023) on the tiles of cuda_tiles.cuh.  Forward: a block owns kRows queries
// (16 per warp), streams kCols keys at a time through shared memory, keeps the running max, running
// sum and output accumulator in registers (float32, online softmax of math.h), and writes the output
// with the residual added and the log-sum-exp.  Backward recomputes the probabilities from the lse in
// three launches on the caller's stream, none with atomics, so results are deterministic:
//   1. delta_kernel   D_i = dO_i . (out_i - res_i), written into the grad_q buffer as scratch
//   2. dkdv_kernel    per block of keys: dV = P^T dO, dK = scale dS^T Q with dS = P (dO V^T - D)
//   3. dq_kernel      per block of queries (recomputes D for its rows, then overwrites grad_q):
//                     dQ = scale dS K
// Gradients are float32 (the ABI's buffers for every supported dtype).  Any N >= 0; head dims 1..128 are
// padded with zeros to 16/32/64/128; (batch, head, block) is flattened onto grid.x (2^31 - 1 blocks),
// the direction is grid.y.  float64 is not supported on CUDA.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <initializer_list>

#include "common/cuda_utils.cuh"
#include "joint_motion_attention/abi.h"
#include "joint_motion_attention/cuda_kernels.cuh"

namespace {

using jmipose::attention_cuda::BackwardParams;
using jmipose::attention_cuda::delta_kernel;
using jmipose::attention_cuda::dkdv_kernel;
using jmipose::attention_cuda::dq_kernel;
using jmipose::attention_cuda::forward_kernel;
using jmipose::attention_cuda::ForwardParams;
using jmipose::attention_cuda::kDeltaWarps;
using jmipose::attention_cuda::Tile;
using jmipose::launch_kernel;
using jmipose::attention::BackwardTensors;
using jmipose::attention::check_pointers;
using jmipose::attention::check_sizes;
using jmipose::attention::ForwardTensors;
using jmipose::attention::Sizes;

// ------------------------------------------------------------------------------------------------
// host side

constexpr const char* kForwardName = "joint_motion_attention forward (cuda)";
constexpr const char* kBackwardName = "joint_motion_attention backward (cuda)";
constexpr int64_t kMaxHeadDim = 128;  // padded to 16, 32, 64 or 128 (cuda_tiles.cuh)

// Dynamic shared memory above the 48 KB default needs an explicit opt-in per kernel.
template <typename Kernel>
int reserve_shared_memory(Kernel kernel, size_t bytes, int device, const char* what) {
  if (bytes <= 48 * 1024) return 0;
  int limit = 0;
  cudaError_t err = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) {
    return jmipose::fail("%s: cannot read the shared-memory limit: %s", what, cudaGetErrorString(err));
  }
  if (bytes > static_cast<size_t>(limit)) {
    return jmipose::fail("%s: needs %zu bytes of shared memory per block, device %d allows %d", what, bytes, device,
                         limit);
  }
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err != cudaSuccess) return jmipose::fail("%s: cannot reserve shared memory: %s", what, cudaGetErrorString(err));
  return 0;
}

// Blocks per (batch, head) and the flattened grid.x; fails past the 2^31 - 1 limit of grid.x.
int flat_grid(int64_t batch_heads, int64_t rows, int rows_per_block, int64_t* blocks_per_head, unsigned* grid_x,
              const char* what) {
  *blocks_per_head = jmipose::ceil_div(rows, rows_per_block);
  if (*blocks_per_head > 0 && batch_heads > INT_MAX / *blocks_per_head) {
    return jmipose::fail("%s: %lld (batch, head) pairs x %lld blocks exceed the CUDA grid limit", what,
                         static_cast<long long>(batch_heads), static_cast<long long>(*blocks_per_head));
  }
  *grid_x = static_cast<unsigned>(batch_heads * *blocks_per_head);
  return 0;
}

template <typename T, int D>
int launch_forward(ForwardParams<T> params, int64_t batch_heads, int device, cudaStream_t stream) {
  using C = Tile<T, D>;
  const int64_t rows = params.direction[0].n_q > params.direction[1].n_q ? params.direction[0].n_q
                                                                        : params.direction[1].n_q;
  unsigned grid_x = 0;
  if (int rc = flat_grid(batch_heads, rows, C::kRows, &params.blocks_per_head, &grid_x, kForwardName)) return rc;
  if (grid_x == 0) return 0;
  const size_t shared = C::kTilesBytes(1, 2) + C::kCols * sizeof(bool);
  if (int rc = reserve_shared_memory(forward_kernel<T, D>, shared, device, kForwardName)) return rc;
  return launch_kernel(forward_kernel<T, D>, dim3(grid_x, 2), C::kThreads, shared, stream, kForwardName, params);
}

template <typename T, int D>
int launch_backward(BackwardParams<T> params, int device, cudaStream_t stream) {
  using C = Tile<T, D>;
  // Queries of one direction are the keys of the other, so one count bounds every grid.
  const int64_t rows = params.direction[0].n_q > params.direction[1].n_q ? params.direction[0].n_q
                                                                        : params.direction[1].n_q;
  const int64_t delta_rows = params.batch_heads * rows;
  if (delta_rows == 0) return 0;
  const int64_t delta_blocks_needed = jmipose::ceil_div(delta_rows, kDeltaWarps);
  const unsigned delta_blocks = static_cast<unsigned>(delta_blocks_needed < 65535 ? delta_blocks_needed : 65535);
  if (int rc = launch_kernel(delta_kernel<T>, dim3(delta_blocks, 2), 32 * kDeltaWarps, 0, stream, kBackwardName,
                             params)) {
    return rc;
  }

  unsigned grid_x = 0;
  if (int rc = flat_grid(params.batch_heads, rows, C::kRows, &params.blocks_per_head, &grid_x, kBackwardName)) {
    return rc;
  }
  const size_t dkdv_shared = C::kTilesBytes(2, 2) + 2 * C::kCols * sizeof(float);
  if (int rc = reserve_shared_memory(dkdv_kernel<T, D>, dkdv_shared, device, kBackwardName)) return rc;
  if (int rc = launch_kernel(dkdv_kernel<T, D>, dim3(grid_x, 2), C::kThreads, dkdv_shared, stream, kBackwardName,
                             params)) {
    return rc;
  }

  const size_t dq_shared = C::kTilesBytes(2, 2) + C::kRows * sizeof(float) + C::kCols * sizeof(bool);
  if (int rc = reserve_shared_memory(dq_kernel<T, D>, dq_shared, device, kBackwardName)) return rc;
  return launch_kernel(dq_kernel<T, D>, dim3(grid_x, 2), C::kThreads, dq_shared, stream, kBackwardName, params);
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

template <typename T>
bool rows_vectorizable(int64_t head_dim, std::initializer_list<const void*> pointers) {
  if ((head_dim * static_cast<int64_t>(sizeof(T))) % 16 != 0) return false;
  for (const void* pointer : pointers) {
    if (!aligned16(pointer)) return false;
  }
  return true;
}

// compute(): the forward for ForwardTensors, the backward for BackwardTensors, in storage type T.
template <typename T>
int compute(const ForwardTensors& t, const Sizes& s, double scale, int device, cudaStream_t stream) {
  auto in = [](const void* pointer) { return static_cast<const T*>(pointer); };
  ForwardParams<T> params{};
  params.direction[0] = {in(t.q_m), in(t.k_j), in(t.v_j), in(t.res_m), t.mask_j, static_cast<T*>(t.out_m),
                         static_cast<float*>(t.lse_m), s.n_m, s.n_j};
  params.direction[1] = {in(t.q_j), in(t.k_m), in(t.v_m), in(t.res_j), t.mask_m, static_cast<T*>(t.out_j),
                         static_cast<float*>(t.lse_j), s.n_j, s.n_m};
  params.heads = s.heads;
  params.head_dim = static_cast<int>(s.head_dim);
  params.scale = static_cast<float>(scale);
  params.vectorized = rows_vectorizable<T>(s.head_dim, {t.q_m, t.k_m, t.v_m, t.q_j, t.k_j, t.v_j});
  const int64_t batch_heads = s.batch * s.heads;
  if (s.head_dim <= 16) return launch_forward<T, 16>(params, batch_heads, device, stream);
  if (s.head_dim <= 32) return launch_forward<T, 32>(params, batch_heads, device, stream);
  if (s.head_dim <= 64) return launch_forward<T, 64>(params, batch_heads, device, stream);
  return launch_forward<T, 128>(params, batch_heads, device, stream);
}

template <typename T>
int compute(const BackwardTensors& t, const Sizes& s, double scale, int device, cudaStream_t stream) {
  auto in = [](const void* pointer) { return static_cast<const T*>(pointer); };
  auto grad = [](void* pointer) { return static_cast<float*>(pointer); };
  BackwardParams<T> params{};
  params.direction[0] = {in(t.grad_out_m), in(t.q_m), in(t.k_j), in(t.v_j), in(t.out_m), in(t.res_m), t.mask_j,
                         static_cast<const float*>(t.lse_m), grad(t.grad_q_m), grad(t.grad_k_j), grad(t.grad_v_j),
                         grad(t.grad_q_m), s.n_m, s.n_j};
  params.direction[1] = {in(t.grad_out_j), in(t.q_j), in(t.k_m), in(t.v_m), in(t.out_j), in(t.res_j), t.mask_m,
                         static_cast<const float*>(t.lse_j), grad(t.grad_q_j), grad(t.grad_k_m), grad(t.grad_v_m),
                         grad(t.grad_q_j), s.n_j, s.n_m};
  params.batch_heads = s.batch * s.heads;
  params.heads = s.heads;
  params.head_dim = static_cast<int>(s.head_dim);
  params.scale = static_cast<float>(scale);
  params.vectorized = rows_vectorizable<T>(
      s.head_dim, {t.grad_out_m, t.grad_out_j, t.q_m, t.k_m, t.v_m, t.q_j, t.k_j, t.v_j});
  if (s.head_dim <= 16) return launch_backward<T, 16>(params, device, stream);
  if (s.head_dim <= 32) return launch_backward<T, 32>(params, device, stream);
  if (s.head_dim <= 64) return launch_backward<T, 64>(params, device, stream);
  return launch_backward<T, 128>(params, device, stream);
}

// Every CUDA entry point: the device, the checks (nothing to do without tokens), then compute() in the
// dtype's storage type on the caller's stream.
template <typename Tensors>
int cuda_entry(const char* where, const Sizes& sizes, const Tensors& tensors, double scale, int32_t dtype,
               int device, void* stream) {
  return jmipose::guarded(where, [&]() -> int {
    jmipose::DeviceGuard guard(device);
    if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", where, device);
    if (int rc = check_sizes(where, sizes, kMaxHeadDim)) return rc;
    if (sizes.batch == 0 || sizes.heads == 0 || (sizes.n_m == 0 && sizes.n_j == 0)) return 0;
    if (int rc = check_pointers(where, sizes, tensors)) return rc;
    return jmipose::dispatch_cuda_dtype(dtype, where, [&](auto zero) {
      return compute<decltype(zero)>(tensors, sizes, scale, device, static_cast<cudaStream_t>(stream));
    });
  });
}

}  // namespace

JMIPOSE_API int jmipose_joint_motion_attention_forward_cuda(
    const void* q_m, const void* k_m, const void* v_m, const void* q_j, const void* k_j, const void* v_j,
    const void* res_m, const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j, void* out_m, void* out_j,
    void* lse_m, void* lse_j, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim, double scale,
    int32_t dtype, int32_t device, void* stream) {
  return cuda_entry(kForwardName, JMA_SIZES, JMA_FORWARD_TENSORS, scale, dtype, device, stream);
}

JMIPOSE_API int jmipose_joint_motion_attention_backward_cuda(
    const void* grad_out_m, const void* grad_out_j, const void* q_m, const void* k_m, const void* v_m, const void* q_j,
    const void* k_j, const void* v_j, const void* out_m, const void* out_j, const void* res_m, const void* res_j,
    const uint8_t* mask_m, const uint8_t* mask_j, const void* lse_m, const void* lse_j, void* grad_q_m, void* grad_k_m,
    void* grad_v_m, void* grad_q_j, void* grad_k_j, void* grad_v_j, int64_t batch, int64_t heads, int64_t n_m,
    int64_t n_j, int64_t head_dim, double scale, int32_t dtype, int32_t device, void* stream) {
  return cuda_entry(kBackwardName, JMA_SIZES, JMA_BACKWARD_TENSORS, scale, dtype, device, stream);
}
