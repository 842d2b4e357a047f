// joint_region_gather (modulated deformable convolution): the per-sample math shared by cpu.cpp and
// cuda.cu, so the CPU tests exercise exactly what the GPU runs.  Semantics are torchvision's
// deform_conv2d, border included; the one difference is that a NaN/inf coordinate reads zero and
// has zero gradient (torchvision converts it to int, which is undefined behaviour).
//
// Functions (T is the accumulation type: float or double; Scalar the stored type):
//   sampling_coordinate(out, tap, stride, pad, dil, offset)  y (or x) where a tap of an output pixel
//                                       reads: (out*stride - pad + tap*dil) in integers, then + offset.
//   sample_inside(y, x, H, W)           true when the bilinear sample can be non-zero: -1 < y < H and
//                                       -1 < x < W (false for NaN/inf).  The forward reads only then.
//   gradient_inside(y, x, H, W)         true when the coordinate gradient can be non-zero: -1 <= y < H
//                                       and -1 <= x < W (torchvision's gradient is the one-sided
//                                       derivative at y = -1 / x = -1).  Backward uses this domain.
//   bilinear_corners(y, x, H, W, &c)    the four corners (y0,x0) (y0,x1) (y1,x0) (y1,x1): flat indices
//                                       into one H*W plane (an invalid corner gets index 0, weight 0,
//                                       valid = false, so any load is in bounds), the bilinear weights
//                                       and the fractions ly, lx.  Precondition: gradient_inside(...)
//                                       (so floor() is finite and fits an int64 before conversion).
//   bilinear_sample(plane, c)           sum over valid corners of weight * plane[index] (invalid
//                                       corners are never read, so inf/NaN there cannot leak in).
//   bilinear_sample_at(plane, y, x, H, W)  the whole torchvision bilinear_interpolate: 0 unless
//                                       sample_inside, else bilinear_sample.
//   coordinate_gradient(c, v, &gy, &gx)   d sample / d y and d sample / d x given the corner values v
//                                       (v[k] must be 0 for an invalid corner; torchvision's
//                                       get_coordinate_weight for both directions).
//   coordinate_gradient_coefficients(c, dy, dx)  the same as linear coefficients on the corner
//                                       values: gy = sum_k dy[k] v[k], gx = sum_k dx[k] v[k]; zero for
//                                       invalid corners.  Lets a kernel reduce over channels first.
// The input gradient of a sample is weight[k] at corner k (scatter), valid corners only.
#pragma once

#include <cstdint>
#if !defined(__CUDACC__)
#include <cmath>
#endif

#include "common/macros.h"

namespace jmipose {
namespace jrg {

template <typename T>
struct BilinearCorners {
  int64_t index[4];  // flat offsets y*W + x of (y0,x0), (y0,x1), (y1,x0), (y1,x1) in one plane
  T weight[4];       // (1-ly)(1-lx), (1-ly)lx, ly(1-lx), ly*lx; 0 for an invalid corner
  bool valid[4];     // corner lies inside the image
  T ly, lx;          // fractional parts y - y0, x - x0
};

template <typename T>
JMIPOSE_HOST_DEVICE T floor_value(T v) {
#if defined(__CUDA_ARCH__)
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

template <typename T>
JMIPOSE_HOST_DEVICE T sampling_coordinate(int64_t out, int64_t tap, int64_t stride, int64_t pad, int64_t dil,
                                          T offset) {
  // The integer part is exact; one rounding, as in torchvision.
  return static_cast<T>(out * stride - pad + tap * dil) + offset;
}

template <typename T>
JMIPOSE_HOST_DEVICE bool sample_inside(T y, T x, int64_t height, int64_t width) {
  // Written as a conjunction of ordered comparisons so NaN gives false.
  return y > T(-1) && y < static_cast<T>(height) && x > T(-1) && x < static_cast<T>(width);
}

template <typename T>
JMIPOSE_HOST_DEVICE bool gradient_inside(T y, T x, int64_t height, int64_t width) {
  return y >= T(-1) && y < static_cast<T>(height) && x >= T(-1) && x < static_cast<T>(width);
}

template <typename T>
JMIPOSE_HOST_DEVICE void bilinear_corners(T y, T x, int64_t height, int64_t width, BilinearCorners<T>* c) {
  const T fy = floor_value(y);
  const T fx = floor_value(x);
  const int64_t y0 = static_cast<int64_t>(fy);  // in [-1, height - 1] by the precondition
  const int64_t x0 = static_cast<int64_t>(fx);
  const int64_t y1 = y0 + 1;
  const int64_t x1 = x0 + 1;
  const T ly = y - fy;
  const T lx = x - fx;
  const T hy = T(1) - ly;
  const T hx = T(1) - lx;
  c->ly = ly;
  c->lx = lx;
  const bool vy0 = y0 >= 0 && y0 < height, vy1 = y1 >= 0 && y1 < height;
  const bool vx0 = x0 >= 0 && x0 < width, vx1 = x1 >= 0 && x1 < width;
  c->valid[0] = vy0 && vx0;
  c->valid[1] = vy0 && vx1;
  c->valid[2] = vy1 && vx0;
  c->valid[3] = vy1 && vx1;
  c->index[0] = c->valid[0] ? y0 * width + x0 : 0;
  c->index[1] = c->valid[1] ? y0 * width + x1 : 0;
  c->index[2] = c->valid[2] ? y1 * width + x0 : 0;
  c->index[3] = c->valid[3] ? y1 * width + x1 : 0;
  c->weight[0] = c->valid[0] ? hy * hx : T(0);
  c->weight[1] = c->valid[1] ? hy * lx : T(0);
  c->weight[2] = c->valid[2] ? ly * hx : T(0);
  c->weight[3] = c->valid[3] ? ly * lx : T(0);
}

template <typename T, typename Scalar>
JMIPOSE_HOST_DEVICE T bilinear_sample(const Scalar* plane, const BilinearCorners<T>& c) {
  T value = T(0);
  for (int k = 0; k < 4; ++k) {
    if (c.valid[k]) value += c.weight[k] * static_cast<T>(plane[c.index[k]]);
  }
  return value;
}

template <typename T, typename Scalar>
JMIPOSE_HOST_DEVICE T bilinear_sample_at(const Scalar* plane, T y, T x, int64_t height, int64_t width) {
  if (!sample_inside(y, x, height, width)) return T(0);
  BilinearCorners<T> c;
  bilinear_corners(y, x, height, width, &c);
  return bilinear_sample<T>(plane, c);
}

template <typename T>
JMIPOSE_HOST_DEVICE void coordinate_gradient_coefficients(const BilinearCorners<T>& c, T dy[4], T dx[4]) {
  const T hy = T(1) - c.ly;
  const T hx = T(1) - c.lx;
  // d/dy of hy*hx*v0 + hy*lx*v1 + ly*hx*v2 + ly*lx*v3, and d/dx likewise.
  dy[0] = c.valid[0] ? -hx : T(0);
  dy[1] = c.valid[1] ? -c.lx : T(0);
  dy[2] = c.valid[2] ? hx : T(0);
  dy[3] = c.valid[3] ? c.lx : T(0);
  dx[0] = c.valid[0] ? -hy : T(0);
  dx[1] = c.valid[1] ? hy : T(0);
  dx[2] = c.valid[2] ? -c.ly : T(0);
  dx[3] = c.valid[3] ? c.ly : T(0);
}

template <typename T>
JMIPOSE_HOST_DEVICE void coordinate_gradient(const BilinearCorners<T>& c, const T v[4], T* grad_y, T* grad_x) {
  const T hy = T(1) - c.ly;
  const T hx = T(1) - c.lx;
  // torchvision's get_coordinate_weight: lx*(v3 - v1) + (1-lx)*(v2 - v0) for y, and
  // ly*(v3 - v2) + (1-ly)*(v1 - v0) for x.
  *grad_y = c.lx * (v[3] - v[1]) + hx * (v[2] - v[0]);
  *grad_x = c.ly * (v[3] - v[2]) + hy * (v[1] - v[0]);
}

}  // namespace jrg
}  // namespace jmipose

// The size arguments of every exported joint_region_gather entry point (cpu.cpp and cuda.cu), in the
// order the Python binding passes them.
#define JRG_SIZE_PARAMS                                                                                          \
  int64_t batch, int64_t in_channels, int64_t height, int64_t width, int64_t out_channels, int64_t kernel_h,     \
      int64_t kernel_w, int64_t out_h, int64_t out_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,         \
      int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups, int64_t offset_groups
