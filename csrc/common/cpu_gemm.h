// The GEMM of the CPU kernels: a register-blocked micro-kernel (kGemmRows rows x two vectors) and the
// loop over tiles around it.  Compiled once per instruction set by common/cpu_isa_kernels.h (no include
// guard, includes nothing; needs common/cpu_simd.h before it).

using ::jmipose::cpu::kGemmCols;
using ::jmipose::cpu::kGemmRows;

// C[R x n] (+)= A[R x depth] B[depth x n] for n <= kGemmCols<T> (two vectors); see GemmKernels::gemm
// for the layouts.  B is read a whole tile wide (up to kGemmCols<T> - n elements past column n).
template <typename T, int R, bool kAColMajor>
JMIPOSE_CPU_INLINE void gemm_tile(int64_t depth, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                                  int64_t n, bool accumulate) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = Vec<T>{};
  for (int64_t q = 0; q < depth; ++q) {
    const Vec<T> b0 = load(b + q * ldb);
    const Vec<T> b1 = load(b + q * ldb + L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec<T> a_rq = splat(kAColMajor ? a[q * lda + r] : a[r * lda + q]);
      acc[r][0] += a_rq * b0;
      acc[r][1] += a_rq * b1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    T* c_r = c + r * ldc;
    if (n == 2 * L) {
      if (accumulate) {
        acc[r][0] += load(c_r);
        acc[r][1] += load(c_r + L);
      }
      store(c_r, acc[r][0]);
      store(c_r + L, acc[r][1]);
    } else {
      T lanes[2 * L];
      store(lanes, acc[r][0]);
      store(lanes + L, acc[r][1]);
      for (int64_t j = 0; j < n; ++j) c_r[j] = accumulate ? c_r[j] + lanes[j] : lanes[j];
    }
  }
}

struct GemmKernels {
  // C[m x n] (+)= A[m x depth] B[depth x n].
  //   A  row-major, A(i, q) = a[i*lda + q]; with kAColMajor column-major, A(i, q) = a[q*lda + i] (a
  //      transposed operand is read in place instead of being copied).
  //   B  row-major in panels of kGemmCols<T> columns: panel p starts at b + p*b_panel and holds
  //      B(q, p*kGemmCols + j) at [q*ldb + j] (a plain row-major matrix: b_panel = kGemmCols<T>; packed
  //      weights: b_panel = depth*kGemmCols<T>).  Each row is read up to kGemmCols<T> - 1 elements past
  //      column n (callers own that memory).
  //   C  row-major, C(i, j) = c[i*ldc + j]; accumulate: C += A B, else C = A B.
  // Every element of C is C plus one chain of multiply-adds over q = 0..depth-1 in order, whatever m and
  // n are, so a result never depends on how the caller blocked its rows and columns.
  template <typename T, bool kAColMajor>
  static void gemm(int64_t m, int64_t n, int64_t depth, const T* a, int64_t lda, const T* b, int64_t ldb,
                   int64_t b_panel, T* c, int64_t ldc, bool accumulate) {
    static_assert(kGemmRows == 6, "the row tail below covers 1 to 5 rows");
    constexpr int64_t NR = kGemmCols<T>;
    const int64_t a_row_step = kAColMajor ? 1 : lda;
    for (int64_t j0 = 0, panel = 0; j0 < n; j0 += NR, ++panel) {
      const int64_t nj = n - j0 < NR ? n - j0 : NR;
      const T* b_j = b + panel * b_panel;
      int64_t i0 = 0;
      for (; i0 + kGemmRows <= m; i0 += kGemmRows) {
        gemm_tile<T, kGemmRows, kAColMajor>(depth, a + i0 * a_row_step, lda, b_j, ldb, c + i0 * ldc + j0, ldc, nj,
                                            accumulate);
      }
      const T* a_i = a + i0 * a_row_step;
      T* c_i = c + i0 * ldc + j0;
      switch (m - i0) {
        case 5: gemm_tile<T, 5, kAColMajor>(depth, a_i, lda, b_j, ldb, c_i, ldc, nj, accumulate); break;
        case 4: gemm_tile<T, 4, kAColMajor>(depth, a_i, lda, b_j, ldb, c_i, ldc, nj, accumulate); break;
        case 3: gemm_tile<T, 3, kAColMajor>(depth, a_i, lda, b_j, ldb, c_i, ldc, nj, accumulate); break;
        case 2: gemm_tile<T, 2, kAColMajor>(depth, a_i, lda, b_j, ldb, c_i, ldc, nj, accumulate); break;
        case 1: gemm_tile<T, 1, kAColMajor>(depth, a_i, lda, b_j, ldb, c_i, ldc, nj, accumulate); break;
        default: break;
      }
    }
  }
};
