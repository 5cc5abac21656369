// Depthwise convolution kernels for MindSpore CPU custom (AOT) operators.
//
// Why: MindSpore 2.7.2 hands every depthwise convolution to oneDNN in plain
// NCHW layout, where oneDNN falls back to im2col + GEMM per channel
// ("gemm:jit"): 3-10x slower than these loops. GhostNetV2 spends most of its
// convolution time in depthwise convolutions.
//
// Layout NCHW, float32, weights (C, 1, KH, KW), odd KH/KW, padding KH/2 and
// KW/2 on both sides (PyTorch's padding=k//2), stride 1 or 2, no dilation.
// Every kernel parallelises over (image, channel) planes, or over channels
// where it reduces over the batch, on the library's thread pool
// (thread_pool.h).
//
// Entry points follow MindSpore's AOT signature
//   int f(int nparam, void** params, int* ndims, int64_t** shapes,
//         const char** dtypes, void* stream, void* extra)
// with params = inputs then outputs:
//   DwConvS{1,2}[Bias[Relu]]: (x, w[, b]) -> y
//   DwConvBackInputS{1,2}:    (dy, w, x) -> dx     (x only gives dx's shape)
//   DwConvBackWeightS{1,2}:   (dy, x, w) -> dw     (w only gives dw's shape)
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "thread_pool.h"

namespace {

using ghost::pool;

// Scratch planes, one set per thread, kept between calls.
thread_local std::vector<float> t_buffer;

struct Geometry {
  int H, W;    // input plane
  int OH, OW;  // output plane
  int KH, KW;
  int ph() const { return KH / 2; }
  int pw() const { return KW / 2; }
  int Hp() const { return H + 2 * ph(); }  // padded input plane
  int Wp() const { return W + 2 * pw(); }
};

// x copied into the middle of a zeroed (Hp x Wp) plane; `tail` extra zeros
// after it let shifted reads run past the last row.
void pad_plane(const float* x, const Geometry& g, int tail, float* P) {
  const int Wp = g.Wp();
  std::memset(P, 0, sizeof(float) * ((size_t)g.Hp() * Wp + tail));
  for (int i = 0; i < g.H; ++i)
    std::memcpy(P + (size_t)(i + g.ph()) * Wp + g.pw(), x + (size_t)i * g.W, sizeof(float) * g.W);
}

// Even / odd columns of the padded plane, each (Hp x Wq): with them the taps
// of a stride-2 output row read contiguous memory.
int phase_pitch(const Geometry& g) { return (g.Wp() + 1) / 2 + g.KW; }

void split_phases(const float* P, const Geometry& g, float* even, float* odd) {
  const int Wp = g.Wp(), Wq = phase_pitch(g);
  for (int r = 0; r < g.Hp(); ++r) {
    const float* row = P + (size_t)r * Wp;
    float* e = even + (size_t)r * Wq;
    float* o = odd + (size_t)r * Wq;
    for (int m = 0; m < Wq; ++m) {
      e[m] = 2 * m < Wp ? row[2 * m] : 0.f;
      o[m] = 2 * m + 1 < Wp ? row[2 * m + 1] : 0.f;
    }
  }
}

inline float tap(const float* w, const Geometry& g, int ki, int kj, bool flip) {
  return flip ? w[(g.KH - 1 - ki) * g.KW + (g.KW - 1 - kj)] : w[ki * g.KW + kj];
}

// Stride-1 correlation of a padded plane P (pitch Wp) with w (optionally
// flipped): flattened with pitch Wp, every tap is a constant shift, so each
// tap is one long vectorisable loop. Writes H x W values to y.
template <bool BIAS, bool RELU>
void correlate_s1(const float* P, const float* w, bool flip, float bias, const Geometry& g,
                  float* acc, float* y) {
  const int Wp = g.Wp(), total = g.H * Wp;
  constexpr int kBlock = 1024;  // accumulator block stays in L1 across the taps
  for (int t0 = 0; t0 < total; t0 += kBlock) {
    const int n = std::min(kBlock, total - t0);
    float* a = acc + t0;
    std::fill(a, a + n, 0.f);
    for (int ki = 0; ki < g.KH; ++ki)
      for (int kj = 0; kj < g.KW; ++kj) {
        const float wv = tap(w, g, ki, kj, flip);
        const float* src = P + t0 + ki * Wp + kj;
#pragma omp simd
        for (int j = 0; j < n; ++j) a[j] += wv * src[j];
      }
  }
  for (int i = 0; i < g.H; ++i) {
    const float* a = acc + (size_t)i * Wp;
    float* out = y + (size_t)i * g.W;
    for (int j = 0; j < g.W; ++j) {
      float v = a[j];
      if (BIAS) v += bias;
      if (RELU) v = v > 0.f ? v : 0.f;
      out[j] = v;
    }
  }
}

template <bool BIAS, bool RELU>
void forward_s1(const float* x, const float* w, float bias, float* y, const Geometry& g,
                std::vector<float>& buf) {
  const size_t plane = (size_t)g.Hp() * g.Wp() + g.KW;
  buf.resize(plane + (size_t)g.H * g.Wp());
  pad_plane(x, g, g.KW, buf.data());
  correlate_s1<BIAS, RELU>(buf.data(), w, false, bias, g, buf.data() + plane, y);
}

template <bool BIAS, bool RELU>
void forward_s2(const float* x, const float* w, float bias, float* y, const Geometry& g,
                std::vector<float>& buf) {
  const int Wq = phase_pitch(g);
  const size_t plane = (size_t)g.Hp() * g.Wp() + g.KW, phase = (size_t)g.Hp() * Wq;
  buf.resize(plane + 2 * phase + g.OW);
  float *P = buf.data(), *even = P + plane, *odd = even + phase, *acc = odd + phase;
  pad_plane(x, g, g.KW, P);
  split_phases(P, g, even, odd);
  for (int i = 0; i < g.OH; ++i) {
    std::fill(acc, acc + g.OW, 0.f);
    for (int ki = 0; ki < g.KH; ++ki) {
      const size_t row = (size_t)(2 * i + ki) * Wq;
      for (int kj = 0; kj < g.KW; ++kj) {
        const float wv = w[ki * g.KW + kj];
        const float* src = ((kj & 1) ? odd : even) + row + (kj >> 1);
#pragma omp simd
        for (int j = 0; j < g.OW; ++j) acc[j] += wv * src[j];
      }
    }
    float* out = y + (size_t)i * g.OW;
    for (int j = 0; j < g.OW; ++j) {
      float v = acc[j];
      if (BIAS) v += bias;
      if (RELU) v = v > 0.f ? v : 0.f;
      out[j] = v;
    }
  }
}

// dx of a stride-S convolution: dy spread onto the stride-S grid of a padded
// input-sized plane (zeros between), then a stride-1 correlation with the
// flipped kernel. For S = 1 this is dy padded.
template <int S>
void back_input(const float* dy, const float* w, float* dx, const Geometry& g,
                std::vector<float>& buf) {
  const int Wp = g.Wp();
  const size_t plane = (size_t)g.Hp() * Wp + g.KW;
  buf.resize(plane + (size_t)g.H * Wp);
  float* U = buf.data();
  std::memset(U, 0, sizeof(float) * plane);
  for (int i = 0; i < g.OH; ++i) {
    float* row = U + (size_t)(S * i + g.ph()) * Wp + g.pw();
    const float* src = dy + (size_t)i * g.OW;
    if (S == 1) {
      std::memcpy(row, src, sizeof(float) * g.OW);
    } else {
      for (int j = 0; j < g.OW; ++j) row[S * j] = src[j];
    }
  }
  correlate_s1<false, false>(U, w, true, 0.f, g, U + plane, dx);
}

// dw[ki, kj] += sum_ij dy[i, j] * xpad[S*i + ki, S*j + kj] for one plane.
template <int S>
void back_weight_plane(const float* dy, const float* x, float* dw, const Geometry& g,
                       std::vector<float>& buf) {
  const size_t plane = (size_t)g.Hp() * g.Wp() + g.KW;
  if (S == 1) {
    // dy laid out with the padded pitch (zeros in the pad columns), so each
    // tap is one flattened dot product.
    const int Wp = g.Wp();
    buf.resize(plane + (size_t)g.H * Wp);
    float *P = buf.data(), *D = P + plane;
    pad_plane(x, g, g.KW, P);
    for (int i = 0; i < g.H; ++i) {
      std::memcpy(D + (size_t)i * Wp, dy + (size_t)i * g.W, sizeof(float) * g.W);
      std::fill(D + (size_t)i * Wp + g.W, D + (size_t)(i + 1) * Wp, 0.f);
    }
    const int total = g.H * Wp;
    for (int ki = 0; ki < g.KH; ++ki)
      for (int kj = 0; kj < g.KW; ++kj) {
        const float* src = P + ki * Wp + kj;
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < total; ++t) sum += D[t] * src[t];
        dw[ki * g.KW + kj] += sum;
      }
  } else {
    const int Wq = phase_pitch(g);
    const size_t phase = (size_t)g.Hp() * Wq;
    buf.resize(plane + 2 * phase);
    float *P = buf.data(), *even = P + plane, *odd = even + phase;
    pad_plane(x, g, g.KW, P);
    split_phases(P, g, even, odd);
    for (int ki = 0; ki < g.KH; ++ki)
      for (int kj = 0; kj < g.KW; ++kj) {
        float sum = 0.f;
        for (int i = 0; i < g.OH; ++i) {
          const float* src = ((kj & 1) ? odd : even) + (size_t)(2 * i + ki) * Wq + (kj >> 1);
          const float* d = dy + (size_t)i * g.OW;
#pragma omp simd reduction(+ : sum)
          for (int j = 0; j < g.OW; ++j) sum += d[j] * src[j];
        }
        dw[ki * g.KW + kj] += sum;
      }
  }
}

Geometry geometry(const int64_t* in_shape, const int64_t* w_shape, const int64_t* out_shape) {
  return Geometry{(int)in_shape[2], (int)in_shape[3], (int)out_shape[2], (int)out_shape[3],
                  (int)w_shape[2], (int)w_shape[3]};
}

template <int S, bool BIAS, bool RELU>
int forward(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* b = BIAS ? static_cast<const float*>(params[2]) : nullptr;
  const int out = BIAS ? 3 : 2;
  float* y = static_cast<float*>(params[out]);
  const Geometry g = geometry(shapes[0], shapes[1], shapes[out]);
  const int64_t C = shapes[0][1];
  pool().parallel_for(shapes[0][0] * C, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % C;
      const float* xp = x + p * g.H * g.W;
      float* yp = y + p * g.OH * g.OW;
      const float bias = BIAS ? b[c] : 0.f;
      if (S == 1)
        forward_s1<BIAS, RELU>(xp, w + c * g.KH * g.KW, bias, yp, g, t_buffer);
      else
        forward_s2<BIAS, RELU>(xp, w + c * g.KH * g.KW, bias, yp, g, t_buffer);
    }
  });
  return 0;
}

template <int S>
int backward_input(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[3]);
  const Geometry g = geometry(shapes[3], shapes[1], shapes[0]);
  const int64_t C = shapes[3][1];
  pool().parallel_for(shapes[3][0] * C, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      back_input<S>(dy + p * g.OH * g.OW, w + (p % C) * g.KH * g.KW, dx + p * g.H * g.W, g,
                    t_buffer);
  });
  return 0;
}

template <int S>
int backward_weight(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dw = static_cast<float*>(params[3]);
  const Geometry g = geometry(shapes[1], shapes[2], shapes[0]);
  const int64_t N = shapes[1][0], C = shapes[1][1], taps = g.KH * g.KW;
  // One channel per iteration, summed over the batch: no two threads write
  // the same weights.
  pool().parallel_for(C, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      float* dwc = dw + c * taps;
      std::fill(dwc, dwc + taps, 0.f);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        back_weight_plane<S>(dy + p * g.OH * g.OW, x + p * g.H * g.W, dwc, g, t_buffer);
      }
    }
  });
  return 0;
}

}  // namespace

#define AOT_ARGS int, void **params, int *, int64_t **shapes, const char **, void *, void *

extern "C" {
int DwConvS1(AOT_ARGS) { return forward<1, false, false>(params, shapes); }
int DwConvS2(AOT_ARGS) { return forward<2, false, false>(params, shapes); }
int DwConvS1Bias(AOT_ARGS) { return forward<1, true, false>(params, shapes); }
int DwConvS2Bias(AOT_ARGS) { return forward<2, true, false>(params, shapes); }
int DwConvS1BiasRelu(AOT_ARGS) { return forward<1, true, true>(params, shapes); }
int DwConvS2BiasRelu(AOT_ARGS) { return forward<2, true, true>(params, shapes); }
int DwConvBackInputS1(AOT_ARGS) { return backward_input<1>(params, shapes); }
int DwConvBackInputS2(AOT_ARGS) { return backward_input<2>(params, shapes); }
int DwConvBackWeightS1(AOT_ARGS) { return backward_weight<1>(params, shapes); }
int DwConvBackWeightS2(AOT_ARGS) { return backward_weight<2>(params, shapes); }
}
