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

// ------------------------------------------------------------------------------------------------
// host side

constexpr const char* kForwardName = "joint_motion_attention forward (cuda)";
constexpr const char* kBackwardName = "joint_motion_attention backward (cuda)";

// Launches through cudaLaunchKernel rather than <<<>>>: the same call on the caller's stream, and the file
// stays plain C++ (tests/cuda_emulation compiles it on the CPU against an emulation of the CUDA runtime).
template <typename Params>
int launch(void (*kernel)(Params), dim3 grid, int threads, size_t shared, cudaStream_t stream, Params params,
           const char* what) {
  void* args[] = {&params};
  const cudaError_t err = cudaLaunchKernel(kernel, grid, dim3(threads), args, shared, stream);
  if (err != cudaSuccess) return jmipose::fail("%s: launch failed: %s", what, cudaGetErrorString(err));
  return jmipose::check_launch(what);
}

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
  *blocks_per_head = (rows + rows_per_block - 1) / rows_per_block;
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
  const size_t shared = C::kTileBytes(C::kRows) + 2 * C::kTileBytes(C::kCols) + C::kCols * sizeof(bool);
  if (int rc = reserve_shared_memory(forward_kernel<T, D>, shared, device, kForwardName)) return rc;
  return launch(forward_kernel<T, D>, dim3(grid_x, 2), C::kThreads, shared, stream, params, kForwardName);
}

template <typename T, int D>
int launch_backward(BackwardParams<T> params, int device, cudaStream_t stream) {
  using C = Tile<T, D>;
  // Queries of one direction are the keys of the other, so one count bounds every grid.
  const int64_t rows = params.direction[0].n_q > params.direction[1].n_q ? params.direction[0].n_q
                                                                        : params.direction[1].n_q;
  const int64_t delta_rows = params.batch_heads * rows;
  if (delta_rows == 0) return 0;
  const int64_t delta_blocks_needed = (delta_rows + kDeltaWarps - 1) / kDeltaWarps;
  const unsigned delta_blocks = static_cast<unsigned>(delta_blocks_needed < 65535 ? delta_blocks_needed : 65535);
  if (int rc = launch(delta_kernel<T>, dim3(delta_blocks, 2), 32 * kDeltaWarps, 0, stream, params, kBackwardName)) {
    return rc;
  }

  unsigned grid_x = 0;
  if (int rc = flat_grid(params.batch_heads, rows, C::kRows, &params.blocks_per_head, &grid_x, kBackwardName)) {
    return rc;
  }
  const size_t dkdv_shared = 2 * C::kTileBytes(C::kRows) + 2 * C::kTileBytes(C::kCols) + 2 * C::kCols * sizeof(float);
  if (int rc = reserve_shared_memory(dkdv_kernel<T, D>, dkdv_shared, device, kBackwardName)) return rc;
  if (int rc = launch(dkdv_kernel<T, D>, dim3(grid_x, 2), C::kThreads, dkdv_shared, stream, params, kBackwardName)) {
    return rc;
  }

  const size_t dq_shared = 2 * C::kTileBytes(C::kRows) + 2 * C::kTileBytes(C::kCols) + C::kRows * sizeof(float) +
                           C::kCols * sizeof(bool);
  if (int rc = reserve_shared_memory(dq_kernel<T, D>, dq_shared, device, kBackwardName)) return rc;
  return launch(dq_kernel<T, D>, dim3(grid_x, 2), C::kThreads, dq_shared, stream, params, kBackwardName);
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

template <typename T>
int forward_typed(const void* q_m, const void* k_m, const void* v_m, const void* q_j, const void* k_j, const void* v_j,
                  const void* res_m, const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j, void* out_m,
                  void* out_j, void* lse_m, void* lse_j, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j,
                  int64_t head_dim, double scale, int device, cudaStream_t stream) {
  auto in = [](const void* pointer) { return static_cast<const T*>(pointer); };
  ForwardParams<T> params{};
  params.direction[0] = {in(q_m), in(k_j), in(v_j), in(res_m), mask_j, static_cast<T*>(out_m),
                         static_cast<float*>(lse_m), n_m, n_j};
  params.direction[1] = {in(q_j), in(k_m), in(v_m), in(res_j), mask_m, static_cast<T*>(out_j),
                         static_cast<float*>(lse_j), n_j, n_m};
  params.heads = heads;
  params.head_dim = static_cast<int>(head_dim);
  params.scale = static_cast<float>(scale);
  params.vectorized = rows_vectorizable<T>(head_dim, {q_m, k_m, v_m, q_j, k_j, v_j});
  const int64_t batch_heads = batch * heads;
  if (head_dim <= 16) return launch_forward<T, 16>(params, batch_heads, device, stream);
  if (head_dim <= 32) return launch_forward<T, 32>(params, batch_heads, device, stream);
  if (head_dim <= 64) return launch_forward<T, 64>(params, batch_heads, device, stream);
  return launch_forward<T, 128>(params, batch_heads, device, stream);
}

template <typename T>
int backward_typed(const void* grad_out_m, const void* grad_out_j, const void* q_m, const void* k_m, const void* v_m,
                   const void* q_j, const void* k_j, const void* v_j, const void* out_m, const void* out_j,
                   const void* res_m, const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j,
                   const void* lse_m, const void* lse_j, void* grad_q_m, void* grad_k_m, void* grad_v_m,
                   void* grad_q_j, void* grad_k_j, void* grad_v_j, int64_t batch, int64_t heads, int64_t n_m,
                   int64_t n_j, int64_t head_dim, double scale, int device, cudaStream_t stream) {
  auto in = [](const void* pointer) { return static_cast<const T*>(pointer); };
  auto grad = [](void* pointer) { return static_cast<float*>(pointer); };
  BackwardParams<T> params{};
  params.direction[0] = {in(grad_out_m), in(q_m), in(k_j), in(v_j), in(out_m), in(res_m), mask_j,
                         static_cast<const float*>(lse_m), grad(grad_q_m), grad(grad_k_j), grad(grad_v_j),
                         grad(grad_q_m), n_m, n_j};
  params.direction[1] = {in(grad_out_j), in(q_j), in(k_m), in(v_m), in(out_j), in(res_j), mask_m,
                         static_cast<const float*>(lse_j), grad(grad_q_j), grad(grad_k_m), grad(grad_v_m),
                         grad(grad_q_j), n_j, n_m};
  params.batch_heads = batch * heads;
  params.heads = heads;
  params.head_dim = static_cast<int>(head_dim);
  params.scale = static_cast<float>(scale);
  params.vectorized = rows_vectorizable<T>(head_dim, {grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j});
  if (head_dim <= 16) return launch_backward<T, 16>(params, device, stream);
  if (head_dim <= 32) return launch_backward<T, 32>(params, device, stream);
  if (head_dim <= 64) return launch_backward<T, 64>(params, device, stream);
  return launch_backward<T, 128>(params, device, stream);
}

int check_sizes(const char* what, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim) {
  if (batch < 0 || heads < 0 || n_m < 0 || n_j < 0) {
    return jmipose::fail("%s: negative size (batch %lld, heads %lld, n_m %lld, n_j %lld)", what,
                         static_cast<long long>(batch), static_cast<long long>(heads), static_cast<long long>(n_m),
                         static_cast<long long>(n_j));
  }
  if (head_dim < 1 || head_dim > 128) {
    return jmipose::fail("%s: head_dim must be in 1..128, got %lld", what, static_cast<long long>(head_dim));
  }
  return 0;
}

bool any_null(std::initializer_list<const void*> pointers) {
  for (const void* pointer : pointers) {
    if (pointer == nullptr) return true;
  }
  return false;
}

}  // namespace

JMIPOSE_API int jmipose_joint_motion_attention_forward_cuda(
    const void* q_m, const void* k_m, const void* v_m, const void* q_j, const void* k_j, const void* v_j,
    const void* res_m, const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j, void* out_m, void* out_j,
    void* lse_m, void* lse_j, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim, double scale,
    int32_t dtype, int32_t device, void* stream) {
  jmipose::DeviceGuard guard(device);
  if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", kForwardName, device);
  if (int rc = check_sizes(kForwardName, batch, heads, n_m, n_j, head_dim)) return rc;
  if (batch == 0 || heads == 0 || (n_m == 0 && n_j == 0)) return 0;
  if ((n_m > 0 && any_null({q_m, k_m, v_m, out_m, lse_m})) || (n_j > 0 && any_null({q_j, k_j, v_j, out_j, lse_j}))) {
    return jmipose::fail("%s: q, k, v, out and lse pointers must not be NULL", kForwardName);
  }
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case jmipose::kFloat32:
      return forward_typed<float>(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, out_m, out_j, lse_m,
                                  lse_j, batch, heads, n_m, n_j, head_dim, scale, device, cuda_stream);
    case jmipose::kFloat16:
      return forward_typed<__half>(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, out_m, out_j, lse_m,
                                   lse_j, batch, heads, n_m, n_j, head_dim, scale, device, cuda_stream);
    case jmipose::kBFloat16:
      return forward_typed<__nv_bfloat16>(q_m, k_m, v_m, q_j, k_j, v_j, res_m, res_j, mask_m, mask_j, out_m, out_j,
                                          lse_m, lse_j, batch, heads, n_m, n_j, head_dim, scale, device, cuda_stream);
    default:
      return jmipose::fail("%s: unsupported dtype code %d (float32, float16 and bfloat16 are supported)", kForwardName,
                           static_cast<int>(dtype));
  }
}

JMIPOSE_API int jmipose_joint_motion_attention_backward_cuda(
    const void* grad_out_m, const void* grad_out_j, const void* q_m, const void* k_m, const void* v_m, const void* q_j,
    const void* k_j, const void* v_j, const void* out_m, const void* out_j, const void* res_m, const void* res_j,
    const uint8_t* mask_m, const uint8_t* mask_j, const void* lse_m, const void* lse_j, void* grad_q_m, void* grad_k_m,
    void* grad_v_m, void* grad_q_j, void* grad_k_j, void* grad_v_j, int64_t batch, int64_t heads, int64_t n_m,
    int64_t n_j, int64_t head_dim, double scale, int32_t dtype, int32_t device, void* stream) {
  jmipose::DeviceGuard guard(device);
  if (!guard.ok()) return jmipose::fail("%s: cannot select device %d", kBackwardName, device);
  if (int rc = check_sizes(kBackwardName, batch, heads, n_m, n_j, head_dim)) return rc;
  if (batch == 0 || heads == 0 || (n_m == 0 && n_j == 0)) return 0;
  // Pointers of a side with no tokens may be NULL (torch gives empty tensors no storage).
  if ((n_m > 0 && any_null({grad_out_m, q_m, k_m, v_m, out_m, lse_m, grad_q_m, grad_k_m, grad_v_m})) ||
      (n_j > 0 && any_null({grad_out_j, q_j, k_j, v_j, out_j, lse_j, grad_q_j, grad_k_j, grad_v_j}))) {
    return jmipose::fail("%s: only res_m, res_j, mask_m and mask_j may be NULL", kBackwardName);
  }
  auto cuda_stream = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case jmipose::kFloat32:
      return backward_typed<float>(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
                                   mask_m, mask_j, lse_m, lse_j, grad_q_m, grad_k_m, grad_v_m, grad_q_j, grad_k_j,
                                   grad_v_j, batch, heads, n_m, n_j, head_dim, scale, device, cuda_stream);
    case jmipose::kFloat16:
      return backward_typed<__half>(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m, res_j,
                                    mask_m, mask_j, lse_m, lse_j, grad_q_m, grad_k_m, grad_v_m, grad_q_j, grad_k_j,
                                    grad_v_j, batch, heads, n_m, n_j, head_dim, scale, device, cuda_stream);
    case jmipose::kBFloat16:
      return backward_typed<__nv_bfloat16>(grad_out_m, grad_out_j, q_m, k_m, v_m, q_j, k_j, v_j, out_m, out_j, res_m,
                                           res_j, mask_m, mask_j, lse_m, lse_j, grad_q_m, grad_k_m, grad_v_m, grad_q_j,
                                           grad_k_j, grad_v_j, batch, heads, n_m, n_j, head_dim, scale, device,
                                           cuda_stream);
    default:
      return jmipose::fail("%s: unsupported dtype code %d (float32, float16 and bfloat16 are supported)", kBackwardName,
                           static_cast<int>(dtype));
  }
}
