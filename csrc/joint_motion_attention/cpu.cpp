// joint_motion_attention, C++ CPU backend: both directions of the cross-attention with an online
// softmax, never materialising an N x N matrix.
//
// Forward: one task per (direction, batch, head, block of kForwardQueries queries), OpenMP-dynamic
// over the tasks of both directions.  A task keeps its queries transposed and scaled (Q^T, packed
// once) and walks the keys in blocks of kForwardKeys: scores^T = K Q^T (key rows read in place),
// per-query running max and sum (math.h), weights exp(s - max), acc += weights^T V; at the end
// out = res + acc / sum and lse = max + log(sum).  The exponentials are taken in base 2 (scores
// pre-multiplied by log2 e, cpu_blocks.h); the saved lse is in natural-log units, as the C ABI says.
//
// Backward (flash-attention-2 style): delta_i = dO_i . (out_i - res_i) first; then for each pair of a
// key block and a query block: S = Q (scale K)^T, P = exp(S - lse) from the saved lse, dP = dO V^T,
// dS = scale P (dP - delta); dV += P^T dO, dK += dS^T Q, dQ += dS K.  Deterministic without atomics:
// each gradient row is accumulated by one thread, over the other side's blocks in index order.  With
// enough (direction, batch, head) tasks for the threads, one task does a whole direction of one head
// (5 GEMMs per pair); otherwise two passes make more tasks: dK, dV per key block, then dQ per query
// block, recomputing P and dS (7 GEMMs per pair).  Both schedules run the same per-pair code and
// accumulate in the same order, so the result is bitwise the same for any thread count (on one
// machine: the AVX2 and the baseline micro-kernels round differently).
//
// Per-thread buffers are bounded by the block sizes.  When d is not a multiple of the GEMM tile width
// (16 floats, 8 doubles) the tensors are first copied into zero-padded rows (memory O(B h N d)).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/abi_check.h"
#include "common/cpu_isa.h"
#include "common/error.h"
#include "common/macros.h"
#include "joint_motion_attention/abi.h"
#include "joint_motion_attention/math.h"

namespace jmipose {
namespace attention {
namespace {
constexpr double kLog2e = 1.44269504088896340736;  // scores are scaled by it for base-2 exponentials
}  // namespace
}  // namespace attention
}  // namespace jmipose

// The block kernels, compiled for AVX2+FMA and for the portable baseline (common/cpu_isa.h).
#define JMIPOSE_CPU_KERNELS_NAMESPACE jmipose::attention
#define JMIPOSE_CPU_KERNELS_HEADER "joint_motion_attention/cpu_blocks.h"
#include "common/cpu_isa_kernels.h"

namespace jmipose {
namespace attention {
namespace {

using cpu::kGemmCols;
constexpr double kLn2 = 0.69314718055994530942;

// Block sizes (the per-thread buffers of a d = 48 head stay within L2).  Blocks that become GEMM
// columns (forward queries, backward keys) are multiples of the tile width, 16.
constexpr int64_t kForwardQueries = 64;
constexpr int64_t kForwardKeys = 96;
constexpr int64_t kBackwardQueries = 64;
constexpr int64_t kBackwardKeys = 64;
constexpr int64_t kMaxHeadDim = int64_t(1) << 20;  // a sanity bound: any head dim is padded to the GEMM tile

int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// memset of `count` elements; torch gives empty tensors no storage, so p may be NULL when count is 0.
template <typename T>
void zero(T* p, int64_t count) {
  if (count > 0) std::memset(p, 0, sizeof(T) * count);
}

// Starting a parallel region costs microseconds, and far more when the machine is oversubscribed
// (a region waits for every thread to be scheduled), so small problems use fewer threads: about one
// per kWorkPerThread multiply-adds, never more than there are tasks.
constexpr double kWorkPerThread = 4.0e6;
constexpr int64_t kParallelCopyElements = int64_t(1) << 18;

int threads_for(int64_t tasks, double multiply_adds) {
  const double by_work = std::max(1.0, multiply_adds / kWorkPerThread);
  const int64_t limit = std::min<int64_t>(omp_get_max_threads(), tasks);
  return static_cast<int>(std::max<int64_t>(1, std::min<double>(limit, by_work)));
}

// 64-byte aligned scratch memory, freed on scope exit (also when an error unwinds the stack).
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t count) {
    if (count <= 0) return;
    data_ = static_cast<T*>(std::aligned_alloc(64, static_cast<size_t>(round_up(count * sizeof(T), 64))));
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
};

// Rows of d values seen with row length d_pad: the tensor itself when d == d_pad, else a zero-padded
// copy.  An output (writable) copy is written back to the tensor by finish().
template <typename T>
class PaddedRows {
 public:
  PaddedRows(const void* data, int64_t rows, int64_t d, int64_t d_pad, bool copy_in)
      : source_(static_cast<T*>(const_cast<void*>(data))), rows_(rows), d_(d), d_pad_(d_pad),
        copy_(data != nullptr && d != d_pad ? rows * d_pad : 0) {
    if (copy_.get() == nullptr) return;
    T* padded = copy_.get();
#pragma omp parallel for schedule(static) if (rows * d_pad > kParallelCopyElements)
    for (int64_t row = 0; row < rows; ++row) {
      T* dst = padded + row * d_pad;
      if (copy_in) std::memcpy(dst, source_ + row * d, sizeof(T) * d);
      std::memset(dst + (copy_in ? d : 0), 0, sizeof(T) * (copy_in ? d_pad - d : d_pad));
    }
  }
  T* get() const { return copy_.get() != nullptr ? copy_.get() : source_; }
  void finish() const {
    if (copy_.get() == nullptr) return;
#pragma omp parallel for schedule(static) if (rows_ * d_pad_ > kParallelCopyElements)
    for (int64_t row = 0; row < rows_; ++row)
      std::memcpy(source_ + row * d_, copy_.get() + row * d_pad_, sizeof(T) * d_);
  }

 private:
  T* source_;
  int64_t rows_, d_, d_pad_;
  Scratch<T> copy_;
};

// One direction of the op: the queries of one token set against the keys/values of the other.
// Pointers are at batch 0, head 0; [B, h, n, d] tensors have row length d (padded).
template <typename T>
struct Direction {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* res = nullptr;
  const uint8_t* key_mask = nullptr;  // [B, n_k] or null
  T* out = nullptr;
  T* lse = nullptr;
  const T* grad_out = nullptr;
  const T* delta = nullptr;  // [B, h, n_q]
  T* grad_q = nullptr;
  T* grad_k = nullptr;
  T* grad_v = nullptr;
  int64_t n_q = 0, n_k = 0;
};

struct Shape {
  int64_t batch, heads, d;
};

// ------------------------------------------------------------------------------------------------
// Forward

template <typename T>
int64_t forward_scratch_size(int64_t d) {
  return round_up(d * kForwardQueries + kForwardKeys * kForwardQueries + kForwardQueries * d + 3 * kForwardQueries, 16);
}

// Queries [q0, q0 + nq) of head bh; ws holds forward_scratch_size elements.
template <typename T, typename Kernels>
void forward_query_block(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t q0, T scale, T* ws) {
  constexpr int64_t kWidth = kForwardQueries;
  const int64_t d = shape.d, n_k = dir.n_k, nq = std::min(kWidth, dir.n_q - q0);
  const T* q = dir.q + (bh * dir.n_q + q0) * d;
  const T* k = dir.k + bh * n_k * d;
  const T* v = dir.v + bh * n_k * d;
  const uint8_t* mask = dir.key_mask != nullptr ? dir.key_mask + (bh / shape.heads) * n_k : nullptr;
  T* queries_t = ws;
  T* weights = queries_t + d * kWidth;  // [key][query]: scores, then softmax weights
  T* acc = weights + kForwardKeys * kWidth;
  T* row_max = acc + kWidth * d;
  T* row_sum = row_max + kWidth;
  T* alpha = row_sum + kWidth;

  const T scale_log2e = scale * static_cast<T>(kLog2e);  // scores in base-2 units (cpu_blocks.h)
  std::memset(queries_t, 0, sizeof(T) * d * kWidth);
  for (int64_t c = 0; c < nq; ++c)
    for (int64_t t = 0; t < d; ++t) queries_t[t * kWidth + c] = scale_log2e * q[c * d + t];
  zero(acc, nq * d);
  std::fill(row_max, row_max + kWidth, attention::negative_infinity<T>());
  std::fill(row_sum, row_sum + kWidth, T(0));

  for (int64_t k0 = 0; k0 < n_k; k0 += kForwardKeys) {
    const int64_t nk = std::min(kForwardKeys, n_k - k0);
    const uint8_t* block_mask = mask != nullptr ? mask + k0 : nullptr;
    Kernels::template gemm<T, false>(nk, kWidth, d, k + k0 * d, d, queries_t, kWidth, kGemmCols<T>, weights, kWidth,
                                     false);
    Kernels::online_softmax_columns(weights, nk, kWidth, block_mask, row_max, row_sum, alpha);
    for (int64_t c = 0; c < nq; ++c)
      if (alpha[c] != T(1))
        for (int64_t t = 0; t < d; ++t) acc[c * d + t] *= alpha[c];
    Kernels::template gemm<T, true>(nq, d, nk, weights, kWidth, v + k0 * d, d, kGemmCols<T>, acc, d, true);
  }

  T* out = dir.out + (bh * dir.n_q + q0) * d;
  const T* res = dir.res != nullptr ? dir.res + (bh * dir.n_q + q0) * d : nullptr;
  T* lse = dir.lse + bh * dir.n_q + q0;
  for (int64_t c = 0; c < nq; ++c) {
    const T inverse_sum = attention::online_softmax_inverse_sum(row_sum[c]);
    for (int64_t t = 0; t < d; ++t)
      out[c * d + t] = (res != nullptr ? res[c * d + t] : T(0)) + acc[c * d + t] * inverse_sum;
    lse[c] = attention::online_softmax_lse(row_max[c] * static_cast<T>(kLn2), row_sum[c]);
  }
}

template <typename T, typename Kernels>
void forward(const Direction<T> (&dirs)[2], const Shape& shape, T scale) {
  const int64_t heads_total = shape.batch * shape.heads;
  const int64_t blocks0 = ceil_div(dirs[0].n_q, kForwardQueries), blocks1 = ceil_div(dirs[1].n_q, kForwardQueries);
  const int64_t tasks0 = heads_total * blocks0, tasks = tasks0 + heads_total * blocks1;
  const int threads = threads_for(tasks, 2.0 * shape.d * heads_total * dirs[0].n_q * dirs[0].n_k * 2);
  const int64_t per_thread = forward_scratch_size<T>(shape.d);
  Scratch<T> scratch(per_thread * threads);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    T* ws = scratch.get() + per_thread * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int side = task < tasks0 ? 0 : 1;
      const int64_t local = side == 0 ? task : task - tasks0, blocks = side == 0 ? blocks0 : blocks1;
      forward_query_block<T, Kernels>(dirs[side], shape, local / blocks, (local % blocks) * kForwardQueries, scale, ws);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Backward

#include "joint_motion_attention/cpu_backward.h"

// ------------------------------------------------------------------------------------------------
// C ABI entry points

// The CPU's checks before any pointer is read: dtype, sizes (head dims up to 2^20), a finite scale.
int check_cpu_arguments(const char* where, const Sizes& s, double scale, int32_t dtype) {
  if (int status = abi::check_cpu_dtype(dtype, where)) return status;
  if (int status = check_sizes(where, s, kMaxHeadDim)) return status;
  if (!std::isfinite(scale)) return fail("%s: scale must be finite, got %g", where, scale);
  return 0;
}

// compute(): the forward for ForwardTensors, the backward for BackwardTensors, in T with Kernels.
template <typename T, typename Kernels>
int compute(const ForwardTensors& t, const Sizes& s, double scale) {
  const int64_t d = s.head_dim, d_pad = round_up(d, kGemmCols<T>);
  const int64_t rows_m = s.batch * s.heads * s.n_m, rows_j = s.batch * s.heads * s.n_j;
  const PaddedRows<T> q_m_rows(t.q_m, rows_m, d, d_pad, true), k_m_rows(t.k_m, rows_m, d, d_pad, true),
      v_m_rows(t.v_m, rows_m, d, d_pad, true), q_j_rows(t.q_j, rows_j, d, d_pad, true),
      k_j_rows(t.k_j, rows_j, d, d_pad, true), v_j_rows(t.v_j, rows_j, d, d_pad, true),
      res_m_rows(t.res_m, rows_m, d, d_pad, true), res_j_rows(t.res_j, rows_j, d, d_pad, true),
      out_m_rows(t.out_m, rows_m, d, d_pad, false), out_j_rows(t.out_j, rows_j, d, d_pad, false);
  Direction<T> dirs[2];
  dirs[0].q = q_m_rows.get(), dirs[0].k = k_j_rows.get(), dirs[0].v = v_j_rows.get(), dirs[0].res = res_m_rows.get();
  dirs[0].key_mask = t.mask_j, dirs[0].out = out_m_rows.get(), dirs[0].lse = static_cast<T*>(t.lse_m);
  dirs[0].n_q = s.n_m, dirs[0].n_k = s.n_j;
  dirs[1].q = q_j_rows.get(), dirs[1].k = k_m_rows.get(), dirs[1].v = v_m_rows.get(), dirs[1].res = res_j_rows.get();
  dirs[1].key_mask = t.mask_m, dirs[1].out = out_j_rows.get(), dirs[1].lse = static_cast<T*>(t.lse_j);
  dirs[1].n_q = s.n_j, dirs[1].n_k = s.n_m;
  const Shape shape{s.batch, s.heads, d_pad};
  forward<T, Kernels>(dirs, shape, static_cast<T>(scale));
  out_m_rows.finish();
  out_j_rows.finish();
  return 0;
}

template <typename T, typename Kernels>
int compute(const BackwardTensors& t, const Sizes& s, double scale) {
  const int64_t d = s.head_dim, d_pad = round_up(d, kGemmCols<T>);
  const int64_t rows_m = s.batch * s.heads * s.n_m, rows_j = s.batch * s.heads * s.n_j;
  const PaddedRows<T> g_m_rows(t.grad_out_m, rows_m, d, d_pad, true),
      g_j_rows(t.grad_out_j, rows_j, d, d_pad, true), q_m_rows(t.q_m, rows_m, d, d_pad, true),
      k_m_rows(t.k_m, rows_m, d, d_pad, true), v_m_rows(t.v_m, rows_m, d, d_pad, true),
      q_j_rows(t.q_j, rows_j, d, d_pad, true), k_j_rows(t.k_j, rows_j, d, d_pad, true),
      v_j_rows(t.v_j, rows_j, d, d_pad, true), out_m_rows(t.out_m, rows_m, d, d_pad, true),
      out_j_rows(t.out_j, rows_j, d, d_pad, true), res_m_rows(t.res_m, rows_m, d, d_pad, true),
      res_j_rows(t.res_j, rows_j, d, d_pad, true), dq_m_rows(t.grad_q_m, rows_m, d, d_pad, false),
      dk_m_rows(t.grad_k_m, rows_m, d, d_pad, false), dv_m_rows(t.grad_v_m, rows_m, d, d_pad, false),
      dq_j_rows(t.grad_q_j, rows_j, d, d_pad, false), dk_j_rows(t.grad_k_j, rows_j, d, d_pad, false),
      dv_j_rows(t.grad_v_j, rows_j, d, d_pad, false);
  Direction<T> dirs[2];
  // Side 0: motion queries against joint keys; its dK/dV are the joint tokens' gradients.
  dirs[0].q = q_m_rows.get(), dirs[0].k = k_j_rows.get(), dirs[0].v = v_j_rows.get(), dirs[0].res = res_m_rows.get();
  dirs[0].key_mask = t.mask_j, dirs[0].out = out_m_rows.get(), dirs[0].grad_out = g_m_rows.get();
  dirs[0].lse = static_cast<T*>(const_cast<void*>(t.lse_m));
  dirs[0].grad_q = dq_m_rows.get(), dirs[0].grad_k = dk_j_rows.get(), dirs[0].grad_v = dv_j_rows.get();
  dirs[0].n_q = s.n_m, dirs[0].n_k = s.n_j;
  dirs[1].q = q_j_rows.get(), dirs[1].k = k_m_rows.get(), dirs[1].v = v_m_rows.get(), dirs[1].res = res_j_rows.get();
  dirs[1].key_mask = t.mask_m, dirs[1].out = out_j_rows.get(), dirs[1].grad_out = g_j_rows.get();
  dirs[1].lse = static_cast<T*>(const_cast<void*>(t.lse_j));
  dirs[1].grad_q = dq_j_rows.get(), dirs[1].grad_k = dk_m_rows.get(), dirs[1].grad_v = dv_m_rows.get();
  dirs[1].n_q = s.n_j, dirs[1].n_k = s.n_m;
  const Shape shape{s.batch, s.heads, d_pad};
  backward<T, Kernels>(dirs, shape, static_cast<T>(scale));
  for (const PaddedRows<T>* grad : {&dq_m_rows, &dk_m_rows, &dv_m_rows, &dq_j_rows, &dk_j_rows, &dv_j_rows})
    grad->finish();
  return 0;
}

// Every CPU entry point: the checks, then compute() in the dtype's type with this CPU's kernels.
template <typename Tensors>
int cpu_entry(const char* where, const Sizes& sizes, const Tensors& tensors, double scale, int32_t dtype) {
  return guarded(where, [&]() -> int {
    if (int status = check_cpu_arguments(where, sizes, scale, dtype)) return status;
    if (int status = check_pointers(where, sizes, tensors)) return status;
    return dispatch_cpu(dtype, where, [&](auto zero, auto kernels) {
      return compute<decltype(zero), decltype(kernels)>(tensors, sizes, scale);
    });
  });
}

}  // namespace
}  // namespace attention
}  // namespace jmipose

JMIPOSE_API int jmipose_joint_motion_attention_forward_cpu(
    const void* q_m, const void* k_m, const void* v_m, const void* q_j, const void* k_j, const void* v_j,
    const void* res_m, const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j, void* out_m, void* out_j,
    void* lse_m, void* lse_j, int64_t batch, int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim,
    double scale, int32_t dtype) {
  return jmipose::attention::cpu_entry("joint_motion_attention forward (cpp)", JMA_SIZES, JMA_FORWARD_TENSORS, scale,
                                       dtype);
}

JMIPOSE_API int jmipose_joint_motion_attention_backward_cpu(
    const void* grad_out_m, const void* grad_out_j, const void* q_m, const void* k_m, const void* v_m,
    const void* q_j, const void* k_j, const void* v_j, const void* out_m, const void* out_j, const void* res_m,
    const void* res_j, const uint8_t* mask_m, const uint8_t* mask_j, const void* lse_m, const void* lse_j,
    void* grad_q_m, void* grad_k_m, void* grad_v_m, void* grad_q_j, void* grad_k_j, void* grad_v_j, int64_t batch,
    int64_t heads, int64_t n_m, int64_t n_j, int64_t head_dim, double scale, int32_t dtype) {
  return jmipose::attention::cpu_entry("joint_motion_attention backward (cpp)", JMA_SIZES, JMA_BACKWARD_TENSORS,
                                       scale, dtype);
}
