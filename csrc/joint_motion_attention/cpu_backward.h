// joint_motion_attention (C++ CPU): the backward pass (flash-attention-2 style, see cpu.cpp's header
// comment for the schedule and why it is deterministic).  Included by cpu.cpp inside its anonymous
// namespace, after Direction, Shape, Scratch, zero(), threads_for() and the block sizes.
#pragma once

template <typename T>
int64_t backward_scratch_size(int64_t d) {
  return round_up(2 * d * kBackwardKeys + kBackwardKeys + 2 * kBackwardQueries * kBackwardKeys, 16);
}

template <typename T>
struct BackwardBuffers {
  T* keys_t;       // [d][kBackwardKeys]: scale log2(e) K^T of the key block, zero-padded
  T* values_t;     // [d][kBackwardKeys]: V^T
  T* key_bias;     // [kBackwardKeys]: 0, or -inf for masked and padding keys
  T* probs;        // [query][key]
  T* score_grads;  // [query][key]
  explicit BackwardBuffers(T* ws, int64_t d)
      : keys_t(ws), values_t(ws + d * kBackwardKeys), key_bias(ws + 2 * d * kBackwardKeys),
        probs(key_bias + kBackwardKeys), score_grads(probs + kBackwardQueries * kBackwardKeys) {}
};

template <typename T>
void pack_key_block(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t k0, int64_t nk, T scale,
                    const BackwardBuffers<T>& buf) {
  constexpr int64_t kWidth = kBackwardKeys;
  const int64_t d = shape.d;
  const T* k = dir.k + (bh * dir.n_k + k0) * d;
  const T* v = dir.v + (bh * dir.n_k + k0) * d;
  const uint8_t* mask = dir.key_mask != nullptr ? dir.key_mask + (bh / shape.heads) * dir.n_k + k0 : nullptr;
  const T scale_log2e = scale * static_cast<T>(kLog2e);  // scores in base-2 units (cpu_blocks.h)
  std::memset(buf.keys_t, 0, sizeof(T) * d * kWidth);
  std::memset(buf.values_t, 0, sizeof(T) * d * kWidth);
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t t = 0; t < d; ++t) {
      buf.keys_t[t * kWidth + j] = scale_log2e * k[j * d + t];
      buf.values_t[t * kWidth + j] = v[j * d + t];
    }
  for (int64_t j = 0; j < kWidth; ++j)
    buf.key_bias[j] = j < nk && (mask == nullptr || !mask[j]) ? T(0) : attention::negative_infinity<T>();
}

// One pair of the key block [k0, k0 + nk) (packed in buf) and the queries [q0, q0 + nq): P and dS
// (buf.probs, buf.score_grads), then with key_grads dV += P^T dO and dK += dS^T Q for the key block,
// with query_grads dQ += dS K for the queries.
template <typename T, typename Kernels>
void backward_pair(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t k0, int64_t nk, int64_t q0,
                   int64_t nq, T scale, const BackwardBuffers<T>& buf, bool key_grads, bool query_grads) {
  constexpr int64_t kWidth = kBackwardKeys;
  const int64_t d = shape.d, q_row = bh * dir.n_q + q0, k_row = bh * dir.n_k + k0;
  Kernels::template gemm<T, false>(nq, kWidth, d, dir.q + q_row * d, d, buf.keys_t, kWidth, kGemmCols<T>, buf.probs,
                                   kWidth, false);
  Kernels::template gemm<T, false>(nq, kWidth, d, dir.grad_out + q_row * d, d, buf.values_t, kWidth, kGemmCols<T>,
                                   buf.score_grads, kWidth, false);
  Kernels::probabilities_and_score_grads(buf.probs, buf.score_grads, nq, kWidth, buf.key_bias, dir.lse + q_row,
                                        dir.delta + q_row, scale);
  if (key_grads) {  // P^T and dS^T are read in place (column-major A)
    Kernels::template gemm<T, true>(nk, d, nq, buf.probs, kWidth, dir.grad_out + q_row * d, d, kGemmCols<T>,
                                   dir.grad_v + k_row * d, d, true);
    Kernels::template gemm<T, true>(nk, d, nq, buf.score_grads, kWidth, dir.q + q_row * d, d, kGemmCols<T>,
                                   dir.grad_k + k_row * d, d, true);
  }
  if (query_grads) {
    Kernels::template gemm<T, false>(nq, d, nk, buf.score_grads, kWidth, dir.k + k_row * d, d, kGemmCols<T>,
                                    dir.grad_q + q_row * d, d, true);
  }
}

// The pairs of the key blocks starting in [k_begin, k_end) and the query blocks starting in
// [q_begin, q_end) of head bh, key blocks outer (each packed once), in index order (see backward_pair).
template <typename T, typename Kernels>
void backward_blocks(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t k_begin, int64_t k_end,
                     int64_t q_begin, int64_t q_end, T scale, const BackwardBuffers<T>& buf, bool key_grads,
                     bool query_grads) {
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBackwardKeys) {
    const int64_t nk = std::min(kBackwardKeys, dir.n_k - k0);
    pack_key_block(dir, shape, bh, k0, nk, scale, buf);
    for (int64_t q0 = q_begin; q0 < q_end; q0 += kBackwardQueries) {
      const int64_t nq = std::min(kBackwardQueries, dir.n_q - q0);
      backward_pair<T, Kernels>(dir, shape, bh, k0, nk, q0, nq, scale, buf, key_grads, query_grads);
    }
  }
}

// The three kinds of task: everything of one (direction, head); dK, dV of one key block; dQ of one
// query block.  Each owns the gradient rows it writes.
template <typename T, typename Kernels>
void backward_head(const Direction<T>& dir, const Shape& shape, int64_t bh, T scale, const BackwardBuffers<T>& buf) {
  const int64_t d = shape.d;
  zero(dir.grad_q + bh * dir.n_q * d, dir.n_q * d);
  zero(dir.grad_k + bh * dir.n_k * d, dir.n_k * d);
  zero(dir.grad_v + bh * dir.n_k * d, dir.n_k * d);
  backward_blocks<T, Kernels>(dir, shape, bh, 0, dir.n_k, 0, dir.n_q, scale, buf, true, true);
}

template <typename T, typename Kernels>
void backward_key_block(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t k0, T scale,
                        const BackwardBuffers<T>& buf) {
  const int64_t d = shape.d, nk = std::min(kBackwardKeys, dir.n_k - k0), k_row = bh * dir.n_k + k0;
  zero(dir.grad_k + k_row * d, nk * d);
  zero(dir.grad_v + k_row * d, nk * d);
  backward_blocks<T, Kernels>(dir, shape, bh, k0, k0 + 1, 0, dir.n_q, scale, buf, true, false);
}

template <typename T, typename Kernels>
void backward_query_block(const Direction<T>& dir, const Shape& shape, int64_t bh, int64_t q0, T scale,
                          const BackwardBuffers<T>& buf) {
  const int64_t d = shape.d, nq = std::min(kBackwardQueries, dir.n_q - q0);
  zero(dir.grad_q + (bh * dir.n_q + q0) * d, nq * d);
  backward_blocks<T, Kernels>(dir, shape, bh, 0, dir.n_k, q0, q0 + 1, scale, buf, false, true);
}

// delta_i = dO_i . (out_i - res_i) for every query row of both directions.
template <typename T>
void compute_delta(const Direction<T> (&dirs)[2], const Shape& shape, T* delta0, T* delta1) {
  const int64_t d = shape.d, rows0 = shape.batch * shape.heads * dirs[0].n_q;
  const int64_t rows = rows0 + shape.batch * shape.heads * dirs[1].n_q;
#pragma omp parallel for schedule(static) if (rows * d > kParallelCopyElements)
  for (int64_t r = 0; r < rows; ++r) {
    const int side = r < rows0 ? 0 : 1;
    const int64_t row = side == 0 ? r : r - rows0;
    const Direction<T>& dir = dirs[side];
    const T* g = dir.grad_out + row * d;
    const T* o = dir.out + row * d;
    const T* res = dir.res != nullptr ? dir.res + row * d : nullptr;
    T sum = 0;
    for (int64_t t = 0; t < d; ++t) sum += g[t] * (o[t] - (res != nullptr ? res[t] : T(0)));
    (side == 0 ? delta0 : delta1)[row] = sum;
  }
}

// Schedule: (side, head) tasks when they keep >= 3/4 of the threads busy, else the two-pass split.
template <typename T, typename Kernels>
void backward(Direction<T> (&dirs)[2], const Shape& shape, T scale) {
  const int64_t heads_total = shape.batch * shape.heads;
  Scratch<T> delta(heads_total * (dirs[0].n_q + dirs[1].n_q));
  dirs[0].delta = delta.get();
  dirs[1].delta = delta.get() + heads_total * dirs[0].n_q;
  compute_delta(dirs, shape, delta.get(), delta.get() + heads_total * dirs[0].n_q);

  const int64_t head_tasks = 2 * heads_total;
  const int64_t block_tasks =
      heads_total * (ceil_div(dirs[0].n_q, kBackwardQueries) + ceil_div(dirs[1].n_q, kBackwardQueries));
  const int64_t threads = threads_for(block_tasks, 5.0 * shape.d * heads_total * dirs[0].n_q * dirs[0].n_k * 2);
  const bool by_head = 4 * head_tasks >= 3 * threads * ceil_div(head_tasks, threads);
  const int64_t per_thread = backward_scratch_size<T>(shape.d);
  Scratch<T> scratch(per_thread * threads);
  int64_t blocks[2][2];  // [side][0: key blocks, 1: query blocks]
  for (int side = 0; side < 2; ++side) {
    blocks[side][0] = ceil_div(dirs[side].n_k, kBackwardKeys);
    blocks[side][1] = ceil_div(dirs[side].n_q, kBackwardQueries);
  }
  // by_head: one phase of head tasks; else phase 0 over key blocks, phase 1 over query blocks.
  for (int phase = 0; phase < (by_head ? 1 : 2); ++phase) {
    const int64_t per_head0 = by_head ? 1 : blocks[0][phase], per_head1 = by_head ? 1 : blocks[1][phase];
    const int64_t tasks0 = heads_total * per_head0, tasks = tasks0 + heads_total * per_head1;
#pragma omp parallel num_threads(static_cast<int>(threads)) if (threads > 1)
    {
      const BackwardBuffers<T> buf(scratch.get() + per_thread * omp_get_thread_num(), shape.d);
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) {
        const int side = task < tasks0 ? 0 : 1;
        const int64_t local = side == 0 ? task : task - tasks0, per_head = side == 0 ? per_head0 : per_head1;
        const int64_t bh = local / per_head, block = local % per_head;
        if (by_head)
          backward_head<T, Kernels>(dirs[side], shape, bh, scale, buf);
        else if (phase == 0)
          backward_key_block<T, Kernels>(dirs[side], shape, bh, block * kBackwardKeys, scale, buf);
        else
          backward_query_block<T, Kernels>(dirs[side], shape, bh, block * kBackwardQueries, scale, buf);
      }
    }
  }
}
