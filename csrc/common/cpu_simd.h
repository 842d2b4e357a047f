// The SIMD wrapper of the CPU kernels: GCC vector extensions of 32 bytes (8 floats or 4 doubles), one
// ymm register in the AVX2 build and two xmm registers in the portable one, and the few operations the
// kernels need that plain vector arithmetic does not give.  Compiled once per instruction set by
// common/cpu_isa_kernels.h (no include guard, includes nothing; needs <cstring> and common/cpu_isa.h).

template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(::jmipose::cpu::kVectorBytes)));
};
template <typename T>
struct HalfVecOf {
  typedef T type __attribute__((vector_size(::jmipose::cpu::kVectorBytes / 2)));
};
template <typename T>
using Vec = typename VecOf<T>::type;      // kLanes<T> lanes
template <typename T>
using HalfVec = typename HalfVecOf<T>::type;  // kLanes<T> / 2 lanes
using ::jmipose::cpu::kLanes;

// Unaligned loads and stores of a vector of any width V (a full vector, a half vector or T itself).
template <typename V, typename T>
JMIPOSE_CPU_INLINE V load_as(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename V, typename T>
JMIPOSE_CPU_INLINE void store_as(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
JMIPOSE_CPU_INLINE Vec<T> load(const T* p) {
  return load_as<Vec<T>>(p);
}
template <typename T>
JMIPOSE_CPU_INLINE void store(T* p, const Vec<T>& v) {
  store_as<Vec<T>>(p, v);
}

// Broadcast.  (Not `Vec{} + x`: adding +0.0 is no identity for -0.0, so that add would stay; x - 0.0 is.)
template <typename T>
JMIPOSE_CPU_INLINE Vec<T> splat(T x) {
  return x - Vec<T>{};
}

// The sum of the lanes of V (a full vector, a half vector or T itself), in lane order.
template <typename T, typename V>
JMIPOSE_CPU_INLINE T sum_lanes(const V& v) {
  if constexpr (sizeof(V) == sizeof(T)) {
    return v;
  } else {
    T sum = T(0);
    for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(T)); ++i) sum += v[i];
    return sum;
  }
}
