// joint_region_gather on the CPU: the per-tile micro-kernels that cpu.cpp's OpenMP drivers call, as
// static members of `Kernels` (with the GEMM of common/cpu_gemm.h).
//
// A tile is a run of consecutive output pixels of one image.  Its column tile col[p][gr][k][c] holds
// the modulated bilinear samples of every tap k and input channel c (grouped by conv group gr so
// each group's reduction dimension K*Cin/groups is contiguous); the image is read channels-last
// ([H*W][Cin]) so one sampling point feeds a contiguous run of channels.  Every function here is
// free of OpenMP.  Compiled once per instruction set by common/cpu_isa_kernels.h, inside
// jmipose::jrg (no include guard, includes nothing: cpu.cpp includes math.h and defines Geometry,
// ChannelRun and TapSample before it).

// Calls visit(offset_group, k, sample) for every offset group and tap k of output pixel `pixel`, in
// that order.  One division per pixel; the taps are walked, not divided out.
template <typename T, typename Visit>
JMIPOSE_CPU_INLINE void for_each_tap(const Geometry& g, const T* offset, const T* mask, int64_t pixel, Visit&& visit) {
  const int64_t oy = pixel / g.out_w, ox = pixel - oy * g.out_w;
  const T* offset_p = offset + pixel;
  const T* mask_p = mask != nullptr ? mask + pixel : nullptr;
  int64_t channel = 0;  // offset_group * taps + k
  for (int64_t og = 0; og < g.offset_groups; ++og) {
    int64_t k = 0;
    for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
      for (int64_t kx = 0; kx < g.kernel_w; ++kx, ++k, ++channel) {
        TapSample<T> s;
        s.y = sampling_coordinate<T>(oy, ky, g.stride_h, g.pad_h, g.dil_h, offset_p[(2 * channel) * g.out_pixels]);
        s.x = sampling_coordinate<T>(ox, kx, g.stride_w, g.pad_w, g.dil_w, offset_p[(2 * channel + 1) * g.out_pixels]);
        s.modulation = mask_p != nullptr ? mask_p[channel * g.out_pixels] : T(1);
        visit(og, k, s);
      }
    }
  }
}

// The forward's work on the channels of one sample whose four corners are all inside the image:
// step<V>(c) handles channels [c, c + width of V) with V a full vector, a half vector or T.
template <typename T>
struct InteriorGather {
  const T* __restrict value[4];  // image[corner k] (channels-last)
  T weight[4];                   // modulation * bilinear weight
  T* __restrict col;

  template <typename V>
  JMIPOSE_CPU_INLINE void step(int64_t c) const {
    store_as<V>(col + c, weight[0] * load_as<V>(value[0] + c) + weight[1] * load_as<V>(value[1] + c) +
                             weight[2] * load_as<V>(value[2] + c) + weight[3] * load_as<V>(value[3] + c));
  }
};

// col[c] = sum over valid corners of modulation*weight * image[corner][c], c < count.
template <typename T>
JMIPOSE_CPU_INLINE void gather_run(const BilinearCorners<T>& corners, T modulation, const T* image, int64_t in_channels,
                           int64_t count, T* __restrict col) {
  constexpr int L = kLanes<T>;
  if (corners.valid[0] && corners.valid[1] && corners.valid[2] && corners.valid[3]) {
    const T* __restrict v0 = image + corners.index[0] * in_channels;
    const T* __restrict v1 = image + corners.index[1] * in_channels;
    const T* __restrict v2 = image + corners.index[2] * in_channels;
    const T* __restrict v3 = image + corners.index[3] * in_channels;
    const T w0 = modulation * corners.weight[0], w1 = modulation * corners.weight[1];
    const T w2 = modulation * corners.weight[2], w3 = modulation * corners.weight[3];
    InteriorGather<T> pass{{v0, v1, v2, v3}, {w0, w1, w2, w3}, col};
    // Full vectors, then one half vector (a run of 12 channels = 8 + 4), then scalars.
    int64_t c = 0;
    for (; c + L <= count; c += L) pass.template step<Vec<T>>(c);
    if (c + L / 2 <= count) {
      pass.template step<HalfVec<T>>(c);
      c += L / 2;
    }
    for (; c < count; ++c) pass.template step<T>(c);
    return;
  }
  for (int64_t c = 0; c < count; ++c) col[c] = T(0);
  for (int corner = 0; corner < 4; ++corner) {
    if (!corners.valid[corner]) continue;  // never read outside the image, even with weight 0
    const T* __restrict v = image + corners.index[corner] * in_channels;
    const T w = modulation * corners.weight[corner];
    for (int64_t c = 0; c < count; ++c) col[c] += w * v[c];
  }
}

// The backward's work on the channels of one sample whose four corners are all inside the image:
// step<V>(c, dots) handles channels [c, c + width of V) with V a full vector, a half vector or T.
template <typename T, bool kDots, bool kColumns, bool kInputGrad>
struct InteriorCorners {
  const T* __restrict value[4];  // image[corner k] (channels-last)
  T* __restrict grad[4];         // grad_image[corner k]
  const T* __restrict cg;        // column gradient
  T* __restrict col;             // forward column
  T weight[4];                   // modulation * bilinear weight

  template <typename V>
  JMIPOSE_CPU_INLINE void step(int64_t c, V dots[4]) const {
    V a[4];
    for (int k = 0; k < 4; ++k) a[k] = load_as<V>(value[k] + c);
    if (kColumns) store_as<V>(col + c, weight[0] * a[0] + weight[1] * a[1] + weight[2] * a[2] + weight[3] * a[3]);
    if (kDots || kInputGrad) {
      const V gc = load_as<V>(cg + c);
      for (int k = 0; k < 4; ++k) {
        if (kDots) dots[k] += gc * a[k];
        if (kInputGrad) store_as<V>(grad[k] + c, load_as<V>(grad[k] + c) + weight[k] * gc);
      }
    }
  }
};

// Per tap and channel run of the backward: given the column gradient cg[c] (= W^T grad_out), add
// dots[k] += sum_c cg[c]*image[corner k][c] (for the offset and mask gradients), write the forward
// column col[c] (for the weight gradient) and scatter modulation*weight[k]*cg[c] into the input
// gradient (channels-last, like image).  Each part is compiled in or out by a template flag.
template <typename T, bool kDots, bool kColumns, bool kInputGrad>
JMIPOSE_CPU_INLINE void backward_run(const BilinearCorners<T>& corners, bool inside, T modulation, const T* image,
                             int64_t in_channels, int64_t count, const T* __restrict cg, T* __restrict col,
                             T* __restrict grad_image, T dots[4]) {
  constexpr int L = kLanes<T>;
  // All four corners valid implies inside (the -1 border line has an invalid row or column).
  if (corners.valid[0] && corners.valid[1] && corners.valid[2] && corners.valid[3]) {
    InteriorCorners<T, kDots, kColumns, kInputGrad> pass;
    for (int k = 0; k < 4; ++k) {
      pass.value[k] = image + corners.index[k] * in_channels;
      pass.grad[k] = kInputGrad ? grad_image + corners.index[k] * in_channels : nullptr;
      pass.weight[k] = modulation * corners.weight[k];
    }
    pass.cg = cg;
    pass.col = col;
    // Full vectors, then one half vector (a run of 12 channels = 8 + 4), then scalars.
    Vec<T> full[4] = {};
    HalfVec<T> half[4] = {};
    T single[4] = {};
    int64_t c = 0;
    for (; c + L <= count; c += L) pass.step(c, full);
    if (c + L / 2 <= count) {
      pass.step(c, half);
      c += L / 2;
    }
    for (; c < count; ++c) pass.step(c, single);
    if (kDots) {
      for (int k = 0; k < 4; ++k) dots[k] += sum_lanes<T>(full[k]) + sum_lanes<T>(half[k]) + single[k];
    }
    return;
  }
  if (kColumns) {
    for (int64_t c = 0; c < count; ++c) col[c] = T(0);
  }
  for (int corner = 0; corner < 4; ++corner) {
    if (!corners.valid[corner]) continue;
    const T* __restrict v = image + corners.index[corner] * in_channels;
    const T w = modulation * corners.weight[corner];
    if (kDots) {
      Vec<T> d{};
      int64_t c = 0;
      for (; c + L <= count; c += L) d += load(cg + c) * load(v + c);
      T s = sum_lanes<T>(d);
      for (; c < count; ++c) s += cg[c] * v[c];
      dots[corner] += s;
    }
    if (kColumns && inside) {
      for (int64_t c = 0; c < count; ++c) col[c] += w * v[c];
    }
    if (kInputGrad) {
      T* __restrict gi = grad_image + corners.index[corner] * in_channels;
      for (int64_t c = 0; c < count; ++c) gi[c] += w * cg[c];
    }
  }
}

template <typename T, bool kDots, bool kColumns, bool kInputGrad>
JMIPOSE_CPU_INLINE void backward_tile(const Geometry& g, const ChannelRun* runs, int64_t run_count, const T* image,
                              const T* offset, const T* mask, int64_t first, int64_t count, const T* cg_tile,
                              T* col_tile, T* grad_image, T* grad_offset, T* grad_mask) {
  for (int64_t p = 0; p < count; ++p) {
    const int64_t pixel = first + p;
    for_each_tap(g, offset, mask, pixel, [&](int64_t og, int64_t k, const TapSample<T>& s) JMIPOSE_CPU_LAMBDA_INLINE {
        const bool inside = sample_inside(s.y, s.x, g.height, g.width);
        const bool has_gradient = gradient_inside(s.y, s.x, g.height, g.width);
        BilinearCorners<T> corners;
        if (has_gradient) bilinear_corners(s.y, s.x, g.height, g.width, &corners);
        T dots[4] = {T(0), T(0), T(0), T(0)};
        for (int64_t r = 0; r < run_count; ++r) {
          const ChannelRun& run = runs[r];
          if (run.offset_group != og) continue;
          const int64_t width = run.end - run.begin;
          const int64_t column = (run.conv_group * g.taps + k) * g.in_per_group + (run.begin - run.conv_group * g.in_per_group);
          T* col = kColumns ? col_tile + p * g.col_stride + column : nullptr;
          if (!has_gradient) {
            if (kColumns) {
              for (int64_t c = 0; c < width; ++c) col[c] = T(0);
            }
            continue;
          }
          const T* cg = (kDots || kInputGrad) ? cg_tile + p * g.col_stride + column : nullptr;
          T* grad_run = kInputGrad ? grad_image + run.begin : nullptr;
          backward_run<T, kDots, kColumns, kInputGrad>(corners, inside, s.modulation, image + run.begin, g.in_channels,
                                                       width, cg, col, grad_run, dots);
        }
        if (!kDots) return;
        const int64_t channel = og * g.taps + k;
        T grad_y = T(0), grad_x = T(0), grad_m = T(0);
        if (has_gradient) {
          coordinate_gradient(corners, dots, &grad_y, &grad_x);
          grad_y *= s.modulation;
          grad_x *= s.modulation;
          if (inside) grad_m = corners.weight[0] * dots[0] + corners.weight[1] * dots[1] +
                               corners.weight[2] * dots[2] + corners.weight[3] * dots[3];
        }
        if (grad_offset != nullptr) {
          grad_offset[(2 * channel) * g.out_pixels + pixel] = grad_y;
          grad_offset[(2 * channel + 1) * g.out_pixels + pixel] = grad_x;
        }
        if (grad_mask != nullptr) grad_mask[channel * g.out_pixels + pixel] = grad_m;
    });
  }
}

struct Kernels : GemmKernels {
  // Forward sampling of one tile: col rows [0, count) for output pixels [first, first + count).
  // image: one image channels-last [H*W][Cin]; offset/mask: that image's planes.
  template <typename T>
  static void sample_columns(const Geometry& g, const ChannelRun* runs, int64_t run_count, const T* image,
                             const T* offset, const T* mask, int64_t first, int64_t count, T* col) {
    for (int64_t p = 0; p < count; ++p) {
      T* col_row = col + p * g.col_stride;
      for_each_tap(g, offset, mask, first + p,
                   [&](int64_t og, int64_t k, const TapSample<T>& s) JMIPOSE_CPU_LAMBDA_INLINE {
        const bool inside = sample_inside(s.y, s.x, g.height, g.width);
        BilinearCorners<T> corners;
        if (inside) bilinear_corners(s.y, s.x, g.height, g.width, &corners);
        for (int64_t r = 0; r < run_count; ++r) {
          const ChannelRun& run = runs[r];
          if (run.offset_group != og) continue;
          const int64_t width = run.end - run.begin;
          T* dst = col_row + (run.conv_group * g.taps + k) * g.in_per_group +
                   (run.begin - run.conv_group * g.in_per_group);
          if (inside) {
            gather_run(corners, s.modulation, image + run.begin, g.in_channels, width, dst);
          } else {
            for (int64_t c = 0; c < width; ++c) dst[c] = T(0);
          }
        }
      });
    }
  }

  // Backward sampling of one tile (see backward_run); grad_offset/grad_mask/grad_image may be null.
  template <typename T>
  static void backward_columns(const Geometry& g, const ChannelRun* runs, int64_t run_count, const T* image,
                               const T* offset, const T* mask, int64_t first, int64_t count, const T* cg_tile,
                               T* col_tile, T* grad_image, T* grad_offset, T* grad_mask) {
    const bool dots = grad_offset != nullptr || grad_mask != nullptr;
    const bool columns = col_tile != nullptr;
    const bool input_grad = grad_image != nullptr;
#define JRG_BACKWARD_TILE(D, C, I)                                                                           \
  backward_tile<T, D, C, I>(g, runs, run_count, image, offset, mask, first, count, cg_tile, col_tile, grad_image, \
                            grad_offset, grad_mask)
    if (dots && columns && input_grad) JRG_BACKWARD_TILE(true, true, true);
    else if (dots && columns) JRG_BACKWARD_TILE(true, true, false);
    else if (dots && input_grad) JRG_BACKWARD_TILE(true, false, true);
    else if (dots) JRG_BACKWARD_TILE(true, false, false);
    else if (columns && input_grad) JRG_BACKWARD_TILE(false, true, true);
    else if (columns) JRG_BACKWARD_TILE(false, true, false);
    else if (input_grad) JRG_BACKWARD_TILE(false, false, true);
#undef JRG_BACKWARD_TILE
  }
};
