// Depthwise convolution kernels for MindSpore CPU custom (AOT) operators.
//
// Why: MindSpore 2.7.2 hands every depthwise convolution to oneDNN in plain
// NCHW layout, where oneDNN falls back to im2col + GEMM per channel
// ("gemm:jit"): 3-10x slower than these loops. GhostNetV2 spends most of its
// convolution time in depthwise convolutions.
//
// Layout NCHW, float32, weights (C, 1, KH, KW), odd KH/KW with KH*KW <=
// kMaxTaps, padding KH/2 and KW/2 on both sides (PyTorch's padding=k//2),
// stride 1 or 2, no dilation. Every kernel parallelises over (image, channel)
// planes, or over channels where it reduces over the batch, on the library's
// thread pool (thread_pool.h).
//
// How: a plane is copied, zero-padded, into a scratch buffer whose rows have
// a fixed pitch; flattened, every tap of the kernel is then a constant shift,
// and the convolution of the whole plane is one loop over 64-float chunks
// with the accumulators in vector registers. Stride 2 first splits the
// padded plane into its four (row, column) parity planes, where every tap is
// again a constant shift. Results in the pad columns are computed and dropped.
//
// Entry points follow MindSpore's AOT signature
//   int f(int nparam, void** params, int* ndims, int64_t** shapes,
//         const char** dtypes, void* stream, void* extra)
// with params = inputs then outputs:
//   DwConvS{1,2}[Bias[Relu]]: (x, w[, b]) -> y
//   DwConvBackInputS{1,2}:    (dy, w, x) -> dx     (x only gives dx's shape)
//   DwConvBackWeightS{1,2}:   (dy, x, w) -> dw     (w only gives dw's shape)
//   SmallConvS{1,2}[Bias[Relu]]: (x, w[, b]) -> y  a dense conv, Cin * KH * KW <= kMaxTaps
//   GhostTail[Relu][Gate]:    (z, b1, w, b2[, g]) -> out   (inference, see ghost_tail)
//   GhostTailResidual:        (z, b1, w, b2, r) -> out     (the same + r)
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "thread_pool.h"

namespace {

using ghost::kLanes;
using ghost::load;
using ghost::nearest_indices;
using ghost::pool;
using ghost::store;
using ghost::Vec;

constexpr int kMaxTaps = 49;  // up to 7x7 kernels
constexpr int kChunk = 4 * kLanes;

// Scratch, one per thread, kept between calls.
thread_local std::vector<float> t_buffer;

float* scratch(size_t floats) {
  if (t_buffer.size() < floats) t_buffer.resize(floats);
  return t_buffer.data();
}

struct Geometry {
  int H, W;    // input plane
  int OH, OW;  // output plane
  int KH, KW;
  int ph() const { return KH / 2; }
  int pw() const { return KW / 2; }
  int Hp() const { return H + 2 * ph(); }  // padded input plane
  int Wp() const { return W + 2 * pw(); }
  int taps() const { return KH * KW; }
};

// The taps of one correlation: out[t] = sum_k weight[k] * src[k][t].
struct Taps {
  int count = 0;
  const float* src[kMaxTaps];
  float weight[kMaxTaps];
};

int round_up(int n, int m) { return (n + m - 1) / m * m; }

// out[t] for t in [0, round_up(total, kLanes)): sources must be readable
// (and zero where it matters) that far past total. Chunks of four vectors,
// then single vectors: a small plane (4x4 with the digits recipe, 3x3 in the
// DFC branch at 224) is not computed to a whole chunk (4x the work of a 4x4
// plane's 24 padded outputs with AVX-512). Each output is the same sum in the
// same order either way.
void correlate(const Taps& taps, int total, float* out) {
  int t0 = 0;
  for (; t0 + kChunk <= total; t0 += kChunk) {
    Vec a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int k = 0; k < taps.count; ++k) {
      const float w = taps.weight[k];
      const float* s = taps.src[k] + t0;
      a0 += w * load(s);
      a1 += w * load(s + kLanes);
      a2 += w * load(s + 2 * kLanes);
      a3 += w * load(s + 3 * kLanes);
    }
    store(out + t0, a0);
    store(out + t0 + kLanes, a1);
    store(out + t0 + 2 * kLanes, a2);
    store(out + t0 + 3 * kLanes, a3);
  }
  for (; t0 < total; t0 += kLanes) {
    Vec a = {};
    for (int k = 0; k < taps.count; ++k) a += taps.weight[k] * load(taps.src[k] + t0);
    store(out + t0, a);
  }
}

// sums[k] += sum_t d[t] * src[k][t] over t in [0, round_up(total, kLanes)).
void dot_taps(const Taps& taps, const float* d, int total, Vec* sums) {
  for (int t = 0; t < total; t += kLanes) {
    const Vec dv = load(d + t);
    for (int k = 0; k < taps.count; ++k) sums[k] += dv * load(taps.src[k] + t);
  }
}

// Rows of y (rows x cols, pitch `pitch` in acc) with bias and ReLU.
template <bool BIAS, bool RELU>
void store_rows(const float* acc, int pitch, int rows, int cols, float bias, float* y) {
  for (int i = 0; i < rows; ++i) {
    const float* a = acc + (size_t)i * pitch;
    float* out = y + (size_t)i * cols;
    ghost::for_vectors(cols, [&](int j, int n) {
      Vec v = ghost::load_part(a + j, n);
      if (BIAS) v += bias;
      if (RELU) v = v > 0.f ? v : Vec{};
      ghost::store_part(out + j, v, n);
    });
  }
}

// ---- stride 1: one padded plane, pitch Wp

// Floats of a padded plane including the slack the chunked loops read.
size_t padded_size(const Geometry& g) {
  return (size_t)g.Hp() * g.Wp() + g.KW + kChunk;
}

// x (rows x cols) into a zeroed plane of pitch `pitch` at (top, left).
void place(const float* x, int rows, int cols, int pitch, int top, int left, size_t size,
           float* P) {
  std::memset(P, 0, sizeof(float) * size);
  for (int i = 0; i < rows; ++i)
    std::memcpy(P + (size_t)(i + top) * pitch + left, x + (size_t)i * cols, sizeof(float) * cols);
}

// w may be null where only the sources are needed (weight gradients).
void stride1_taps(const float* P, const float* w, bool flip, const Geometry& g, Taps& taps) {
  taps.count = g.taps();
  for (int ki = 0; ki < g.KH; ++ki)
    for (int kj = 0; kj < g.KW; ++kj) {
      const int k = ki * g.KW + kj;
      taps.src[k] = P + (size_t)ki * g.Wp() + kj;
      taps.weight[k] = w == nullptr ? 0.f : flip ? w[g.taps() - 1 - k] : w[k];
    }
}

// ---- stride 2: four parity planes of the padded plane, pitch Wq

struct Phases {
  int Hq, Wq;
  size_t size;  // floats per parity plane, slack included
};

Phases phases(const Geometry& g) {
  Phases p;
  p.Wq = (g.Wp() + 1) / 2;
  p.Hq = (g.Hp() + 1) / 2;
  p.size = (size_t)(p.Hq + 1) * p.Wq + g.KW + kChunk;
  return p;
}

// The even and odd elements of x[0, n): even[k] = x[2k], odd[k] = x[2k + 1],
// two vectors of x at a time split by a shuffle each, a short row's end
// masked (the 14-wide rows at 14x14 ran scalar: a third of a stride-2
// conv's instructions on 672 14x14 planes).
void deinterleave(const float* x, int n, float* even, float* odd) {
  ghost::VecI even_index, odd_index;
  for (int i = 0; i < kLanes; ++i) {
    even_index[i] = 2 * i;
    odd_index[i] = 2 * i + 1;
  }
  ghost::for_vectors(n / 2, [&](int k, int pairs) {
    const int floats = 2 * pairs;
    const Vec a = ghost::load_part(x + 2 * k, std::min(floats, kLanes));
    const Vec b = floats > kLanes ? ghost::load_part(x + 2 * k + kLanes, floats - kLanes) : Vec{};
    ghost::store_part(even + k, __builtin_shuffle(a, b, even_index), pairs);
    ghost::store_part(odd + k, __builtin_shuffle(a, b, odd_index), pairs);
  });
  if (n % 2) even[n / 2] = x[n - 1];
}

// parity[2 * r + c][a][m] = padded x[2a + r][2m + c], read straight from x:
// x's column j is padded column j + pw, so parity (j + pw) & 1, m = (j + pw) >> 1.
void split_parities(const float* x, const Geometry& g, const Phases& p, float* planes) {
  std::memset(planes, 0, sizeof(float) * 4 * p.size);
  const int pw = g.pw();
  for (int i = 0; i < g.H; ++i) {
    const int r = i + g.ph();
    float* row = planes + (size_t)(2 * (r & 1)) * p.size + (size_t)(r >> 1) * p.Wq;
    deinterleave(x + (size_t)i * g.W, g.W, row + (size_t)(pw & 1) * p.size + (pw >> 1),
                 row + (size_t)((pw + 1) & 1) * p.size + ((pw + 1) >> 1));
  }
}

void stride2_taps(const float* planes, const float* w, const Geometry& g, const Phases& p,
                  Taps& taps) {
  taps.count = g.taps();
  for (int ki = 0; ki < g.KH; ++ki)
    for (int kj = 0; kj < g.KW; ++kj) {
      const int k = ki * g.KW + kj;
      const float* plane = planes + (size_t)(2 * (ki & 1) + (kj & 1)) * p.size;
      taps.src[k] = plane + (size_t)(ki >> 1) * p.Wq + (kj >> 1);
      taps.weight[k] = w == nullptr ? 0.f : w[k];
    }
}

// ---- one plane

template <int S, bool BIAS, bool RELU>
void forward_plane(const float* x, const float* w, float bias, float* y, const Geometry& g) {
  Taps taps;
  if (S == 1) {
    const size_t plane = padded_size(g);
    const int total = g.H * g.Wp();
    float* P = scratch(plane + round_up(total, kChunk));
    place(x, g.H, g.W, g.Wp(), g.ph(), g.pw(), plane, P);
    stride1_taps(P, w, false, g, taps);
    correlate(taps, total, P + plane);
    store_rows<BIAS, RELU>(P + plane, g.Wp(), g.H, g.W, bias, y);
  } else {
    const Phases p = phases(g);
    const int total = g.OH * p.Wq;
    float* planes = scratch(4 * p.size + round_up(total, kChunk));
    split_parities(x, g, p, planes);
    stride2_taps(planes, w, g, p, taps);
    correlate(taps, total, planes + 4 * p.size);
    store_rows<BIAS, RELU>(planes + 4 * p.size, p.Wq, g.OH, g.OW, bias, y);
  }
}

// dx of a stride-S convolution: dy spread onto the stride-S grid of a padded
// input-sized plane (zeros between), then a stride-1 correlation with the
// flipped kernel. For S = 1 this is dy padded.
template <int S>
void back_input_plane(const float* dy, const float* w, float* dx, const Geometry& g) {
  const size_t plane = padded_size(g);
  const int total = g.H * g.Wp();
  float* U = scratch(plane + round_up(total, kChunk));
  if (S == 1) {
    place(dy, g.OH, g.OW, g.Wp(), g.ph(), g.pw(), plane, U);
  } else {
    std::memset(U, 0, sizeof(float) * plane);
    for (int i = 0; i < g.OH; ++i) {
      float* row = U + (size_t)(S * i + g.ph()) * g.Wp() + g.pw();
      const float* src = dy + (size_t)i * g.OW;
      for (int j = 0; j < g.OW; ++j) row[S * j] = src[j];
    }
  }
  Taps taps;
  stride1_taps(U, w, true, g, taps);
  correlate(taps, total, U + plane);
  store_rows<false, false>(U + plane, g.Wp(), g.H, g.W, 0.f, dx);
}

// sums[k] += sum_ij dy[i, j] * padded x[S*i + ki, S*j + kj] for one plane.
template <int S>
void back_weight_plane(const float* dy, const float* x, Vec* sums, const Geometry& g) {
  Taps taps;
  if (S == 1) {
    const size_t plane = padded_size(g);
    const int total = g.H * g.Wp();
    const size_t dsize = round_up(total, kChunk);
    float* P = scratch(plane + dsize);
    float* D = P + plane;
    place(x, g.H, g.W, g.Wp(), g.ph(), g.pw(), plane, P);
    place(dy, g.OH, g.OW, g.Wp(), 0, 0, dsize, D);  // dy at pitch Wp, zero elsewhere
    stride1_taps(P, nullptr, false, g, taps);
    dot_taps(taps, D, total, sums);
  } else {
    const Phases p = phases(g);
    const int total = g.OH * p.Wq;
    const size_t dsize = round_up(total, kChunk);
    float* planes = scratch(4 * p.size + dsize);
    float* D = planes + 4 * p.size;
    split_parities(x, g, p, planes);
    place(dy, g.OH, g.OW, p.Wq, 0, 0, dsize, D);
    stride2_taps(planes, nullptr, g, p, taps);
    dot_taps(taps, D, total, sums);
  }
}

Geometry geometry(const int64_t* in_shape, const int64_t* w_shape, const int64_t* out_shape) {
  return Geometry{(int)in_shape[2], (int)in_shape[3], (int)out_shape[2], (int)out_shape[3],
                  (int)w_shape[2], (int)w_shape[3]};
}

// A forward convolution's arguments: (x, w[, b]) -> y.
struct ConvArgs {
  const float *x, *w, *b;  // b: nullptr without a bias
  float* y;
  Geometry g;
};

template <bool BIAS>
ConvArgs conv_args(void** params, int64_t** shapes) {
  const int out = BIAS ? 3 : 2;
  return ConvArgs{static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
                  BIAS ? static_cast<const float*>(params[2]) : nullptr,
                  static_cast<float*>(params[out]), geometry(shapes[0], shapes[1], shapes[out])};
}

// Output (i, j) of kLanes channels at once: P holds their padded planes
// channels last (pitch g.Wp()), weights their taps ([tap][lane]); the taps in
// correlate's order.
inline Vec correlate_lanes(const float* P, const float* weights, const Geometry& g, int i, int j) {
  Vec acc = {};
  for (int ki = 0; ki < g.KH; ++ki)
    for (int kj = 0; kj < g.KW; ++kj)
      acc += load(weights + (ki * g.KW + kj) * kLanes) *
             load(P + ((size_t)(i + ki) * g.Wp() + j + kj) * kLanes);
  return acc;
}

// Planes of at most this many pixels, stride 1, go to forward_small (at 7x7
// its transposes cost more than the planes it saves: 37 -> 42 us, 480 planes).
constexpr int kSmallPlane = 16;

// A stride-1 depthwise conv over small planes (the DFC branch's 1xK / Kx1
// convs on the 3x3 maps of a 224 input; most maps of a 64 one), kLanes
// channels at a time in the vector lanes: plane by plane, the fixed cost of
// padding and setting up each plane was most of the time (960 3x3 planes:
// 45 -> 30 us at one thread). Each output is the same sum as forward_plane's,
// in the same order over the same zero-padded taps (bit-identical).
template <bool BIAS, bool RELU>
void forward_small(const ConvArgs& a, int64_t N, int64_t C) {
  const Geometry& g = a.g;
  const int Wp = g.Wp(), T = g.taps(), HW = g.H * g.W;
  const size_t padded = (size_t)g.Hp() * Wp * kLanes;
  const int64_t blocks = (C + kLanes - 1) / kLanes;
  pool().parallel_for(N * blocks, N * C * HW * T / 2, [&](int64_t begin, int64_t end) {
    // The block's padded planes, channels last, then its weights per tap.
    float* P = scratch(padded + (size_t)T * kLanes);
    float* weights = P + padded;
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / blocks, c0 = q % blocks * kLanes;
      const int lanes = (int)std::min<int64_t>(kLanes, C - c0);
      std::memset(P, 0, sizeof(float) * (padded + (size_t)T * kLanes));
      for (int l = 0; l < lanes; ++l) {
        const float* x = a.x + ((n * C + c0 + l) * HW);
        for (int i = 0; i < g.H; ++i)
          for (int j = 0; j < g.W; ++j)
            P[((size_t)(i + g.ph()) * Wp + j + g.pw()) * kLanes + l] = x[i * g.W + j];
        for (int k = 0; k < T; ++k) weights[k * kLanes + l] = a.w[(c0 + l) * T + k];
      }
      for (int i = 0; i < g.H; ++i)
        for (int j = 0; j < g.W; ++j) {
          const Vec acc = correlate_lanes(P, weights, g, i, j);
          for (int l = 0; l < lanes; ++l) {
            float v = acc[l];
            if (BIAS) v += a.b[c0 + l];
            if (RELU) v = v > 0.f ? v : 0.f;
            a.y[(n * C + c0 + l) * HW + i * g.W + j] = v;
          }
        }
    }
  });
}

template <int S, bool BIAS, bool RELU>
int forward(void** params, int64_t** shapes) {
  const ConvArgs a = conv_args<BIAS>(params, shapes);
  const Geometry& g = a.g;
  if (g.taps() > kMaxTaps) return 1;
  const int64_t C = shapes[0][1];
  if (S == 1 && g.H * g.W <= kSmallPlane && C >= kLanes) {
    forward_small<BIAS, RELU>(a, shapes[0][0], C);
    return 0;
  }
  const int64_t planes = shapes[0][0] * C;
  pool().parallel_for(planes, planes * g.H * g.W * g.taps() / 2, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % C;
      forward_plane<S, BIAS, RELU>(a.x + p * g.H * g.W, a.w + c * g.taps(), BIAS ? a.b[c] : 0.f,
                                   a.y + p * g.OH * g.OW, g);
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
  if (g.taps() > kMaxTaps) return 1;
  const int64_t C = shapes[3][1];
  const int64_t planes = shapes[3][0] * C;
  pool().parallel_for(planes, planes * g.H * g.W * g.taps() / 2, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p)
      back_input_plane<S>(dy + p * g.OH * g.OW, w + (p % C) * g.taps(), dx + p * g.H * g.W, g);
  });
  return 0;
}

template <int S>
int backward_weight(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dw = static_cast<float*>(params[3]);
  const Geometry g = geometry(shapes[1], shapes[2], shapes[0]);
  if (g.taps() > kMaxTaps) return 1;
  const int64_t N = shapes[1][0], C = shapes[1][1];
  // One channel per task, summed over the batch: no two threads write the
  // same weights, and the sum order does not depend on the thread count.
  pool().parallel_for(C, N * C * g.H * g.W * g.taps() / 2, [&](int64_t begin, int64_t end) {
    Vec sums[kMaxTaps];
    for (int64_t c = begin; c < end; ++c) {
      for (int k = 0; k < g.taps(); ++k) sums[k] = Vec{};
      for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n * C + c;
        back_weight_plane<S>(dy + p * g.OH * g.OW, x + p * g.H * g.W, sums, g);
      }
      for (int k = 0; k < g.taps(); ++k) {
        float total = 0.f;
        for (int lane = 0; lane < kLanes; ++lane) total += sums[k][lane];
        dw[c * g.taps() + k] = total;
      }
    }
  });
  return 0;
}

// A dense convolution with few taps in all (Cin * KH * KW <= kMaxTaps: the
// stem's 3x3 over 3 input channels), inference: oneDNN ran it in plain NCHW
// with a BiasAdd and a ReLU after it. Every input plane is padded (S = 1) or
// split into its parity planes (S = 2) once, into a buffer all threads read;
// each output plane is then one correlation over all Cin * KH * KW taps, in
// the order (input channel, row, column).
template <int S, bool BIAS, bool RELU>
int small_conv(void** params, int64_t** shapes) {
  const ConvArgs a = conv_args<BIAS>(params, shapes);
  const Geometry& g = a.g;
  const int64_t N = shapes[0][0], C_in = shapes[0][1], C_out = shapes[1][0];
  if (C_in * g.taps() > kMaxTaps || shapes[1][1] != C_in) return 1;
  const Phases p = phases(g);
  const size_t plane = S == 1 ? padded_size(g) : 4 * p.size;
  const int pitch = S == 1 ? g.Wp() : p.Wq;
  const int total = g.OH * pitch;
  thread_local std::vector<float> t_planes;  // the calling thread's; the workers read it
  if (t_planes.size() < N * C_in * plane) t_planes.resize(N * C_in * plane);
  float* planes = t_planes.data();
  pool().parallel_for(N * C_in, N * C_in * g.H * g.W, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      if (S == 1)
        place(a.x + q * g.H * g.W, g.H, g.W, g.Wp(), g.ph(), g.pw(), plane, planes + q * plane);
      else
        split_parities(a.x + q * g.H * g.W, g, p, planes + q * plane);
    }
  });
  const int64_t work = N * C_out * g.OH * g.OW * C_in * g.taps() / 2;
  pool().parallel_for(N * C_out, work, [&](int64_t begin, int64_t end) {
    float* acc = scratch(round_up(total, kChunk));
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / C_out, co = q % C_out;
      Taps taps, one;
      for (int64_t ci = 0; ci < C_in; ++ci) {
        const float* source = planes + (n * C_in + ci) * plane;
        const float* weight = a.w + (co * C_in + ci) * g.taps();
        if (S == 1)
          stride1_taps(source, weight, false, g, one);
        else
          stride2_taps(source, weight, g, p, one);
        std::copy(one.src, one.src + one.count, taps.src + taps.count);
        std::copy(one.weight, one.weight + one.count, taps.weight + taps.count);
        taps.count += one.count;
      }
      correlate(taps, total, acc);
      store_rows<BIAS, RELU>(acc, pitch, g.OH, g.OW, BIAS ? a.b[co] : 0.f, a.y + q * g.OH * g.OW);
    }
  });
  return 0;
}

// out[j] = act(z[j] + bias).
template <bool RELU>
void bias_act_row(const float* z, float bias, int W, float* out) {
  ghost::for_vectors(W, [&](int j, int n) {
    Vec v = ghost::load_part(z + j, n) + bias;
    if (RELU) v = v > 0.f ? v : Vec{};
    ghost::store_part(out + j, v, n);
  });
}

// One output row of both halves of a ghost module: o1 = x1 (* gate g1)
// (+ r1), o2 = act(a + bias) (* gate g2) (+ r2).
template <bool RELU, bool GATE, bool RESIDUAL>
void tail_row(const float* x1, const float* a, float bias, const float* g1, const float* g2,
              const float* r1, const float* r2, int W, float* o1, float* o2) {
  using ghost::load_part;
  ghost::for_vectors(W, [&](int j, int n) {
    Vec v = load_part(a + j, n) + bias;
    if (RELU) v = v > 0.f ? v : Vec{};
    Vec u = load_part(x1 + j, n);
    if (GATE) {
      u *= load_part(g1 + j, n);
      v *= load_part(g2 + j, n);
    }
    if (RESIDUAL) {
      u += load_part(r1 + j, n);
      v += load_part(r2 + j, n);
    }
    ghost::store_part(o1 + j, u, n);
    ghost::store_part(o2 + j, v, n);
  });
}

// Planes of at most this many pixels go to ghost_tail_small (one thread:
// 480 7x7 planes with the gate 108 -> 72 us; 336 14x14 planes 145 -> 164 us,
// so not those).
constexpr int kSmallTail = 64;

// ghost_tail (below) on small planes (7x7 at 224), kLanes channels at a time
// in the vector lanes, as forward_small: plane by plane, zeroing a padded
// plane, its taps, the gate rows and the short rows cost more than the conv.
// Each output is the same arithmetic on the same values as ghost_tail's
// (bit-identical): the conv's taps in the same order, then bias, act, gate,
// residual.
template <bool RELU, bool GATE, bool RESIDUAL>
void ghost_tail_small(const float* z, const float* b1, const float* w, const float* b2,
                      const float* gate, const float* residual, float* out, int64_t N,
                      int64_t C1, const Geometry& g, int GH, int GW, const std::vector<int>& rows,
                      const std::vector<int>& cols) {
  const int Wp = g.Wp(), T = g.taps(), HW = g.H * g.W, GHW = GH * GW;
  const size_t padded = (size_t)g.Hp() * Wp * kLanes;
  const int64_t blocks = (C1 + kLanes - 1) / kLanes;
  const int64_t work = N * C1 * HW * (T / 2 + 4);
  pool().parallel_for(N * blocks, work, [&](int64_t begin, int64_t end) {
    // Channels last: padded x1, the taps' weights, b2, then both halves'
    // gate sigmoids (GATE) or residuals (RESIDUAL).
    const size_t extra = GATE ? 2 * (size_t)GHW : RESIDUAL ? 2 * (size_t)HW : 0;
    float* P = scratch(padded + ((size_t)T + 1 + extra) * kLanes);
    float* weights = P + padded;
    float* bias = weights + (size_t)T * kLanes;
    float* second = bias + kLanes;  // the second half's gate or residual: [extra / 2][kLanes]
    float* first = second + extra / 2 * kLanes;
    float lanes_u[kLanes], lanes_v[kLanes];
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / blocks, c0 = q % blocks * kLanes;
      const int lanes = (int)std::min<int64_t>(kLanes, C1 - c0);
      std::memset(P, 0, sizeof(float) * (padded + ((size_t)T + 1 + extra) * kLanes));
      for (int l = 0; l < lanes; ++l) {
        const int64_t c = c0 + l;
        const float* zc = z + (n * C1 + c) * HW;
        for (int i = 0; i < g.H; ++i)
          for (int j = 0; j < g.W; ++j) {
            float v = zc[i * g.W + j] + b1[c];
            if (RELU) v = v > 0.f ? v : 0.f;
            P[((size_t)(i + g.ph()) * Wp + j + g.pw()) * kLanes + l] = v;
          }
        for (int k = 0; k < T; ++k) weights[k * kLanes + l] = w[c * T + k];
        bias[l] = b2[c];
        const int64_t plane1 = n * 2 * C1 + c, plane2 = plane1 + C1;
        if (GATE)
          for (int t = 0; t < GHW; ++t) {
            first[t * kLanes + l] = gate[plane1 * GHW + t];
            second[t * kLanes + l] = gate[plane2 * GHW + t];
          }
        if (RESIDUAL)
          for (int t = 0; t < HW; ++t) {
            first[t * kLanes + l] = residual[plane1 * HW + t];
            second[t * kLanes + l] = residual[plane2 * HW + t];
          }
      }
      if (GATE)  // ghost::sigmoid's arithmetic, lane by lane
        for (int t = 0; t < 2 * GHW; ++t) {
          float* s = second + (size_t)t * kLanes;
          store(s, 1.f / (1.f + ghost::exp_vec(-load(s))));
        }
      const Vec b = load(bias);
      for (int i = 0; i < g.H; ++i)
        for (int j = 0; j < g.W; ++j) {
          const Vec acc = correlate_lanes(P, weights, g, i, j);
          Vec v = acc + b;
          if (RELU) v = v > 0.f ? v : Vec{};
          Vec u = load(P + ((size_t)(i + g.ph()) * Wp + j + g.pw()) * kLanes);
          if (GATE) {
            const int t = rows[i] * GW + cols[j];
            u *= load(first + (size_t)t * kLanes);
            v *= load(second + (size_t)t * kLanes);
          }
          if (RESIDUAL) {
            const int t = i * g.W + j;
            u += load(first + (size_t)t * kLanes);
            v += load(second + (size_t)t * kLanes);
          }
          store(lanes_u, u);
          store(lanes_v, v);
          for (int l = 0; l < lanes; ++l) {
            float* o = out + (n * 2 * C1 + c0 + l) * HW + i * g.W + j;
            o[0] = lanes_u[l];
            o[C1 * HW] = lanes_v[l];
          }
        }
    }
  });
}

// The tail of a BN-folded ghost module, one pass for what is otherwise
// BiasAdd, ReLU, the cheap depthwise conv, Concat and the DFC gate multiply:
//   x1 = act(z + b1)                      (z: the primary 1x1 conv, no bias)
//   out = concat(x1, act(dwconv3x3(x1, w) + b2)) along channels
//   out *= nearest_upsample(sigmoid(g))   (GATE: g = the DFC branch's logits)
//   out += r                              (RESIDUAL: the bottleneck's shortcut)
// act is ReLU or the identity. out has 2 * C1 channels.
template <bool RELU, bool GATE, bool RESIDUAL>
int ghost_tail(void** params, int64_t** shapes) {
  const float* z = static_cast<const float*>(params[0]);
  const float* b1 = static_cast<const float*>(params[1]);
  const float* w = static_cast<const float*>(params[2]);
  const float* b2 = static_cast<const float*>(params[3]);
  const float* gate = GATE ? static_cast<const float*>(params[4]) : nullptr;
  const float* residual = RESIDUAL ? static_cast<const float*>(params[4]) : nullptr;
  const int out_index = GATE || RESIDUAL ? 5 : 4;
  float* out = static_cast<float*>(params[out_index]);
  const int64_t N = shapes[0][0], C1 = shapes[0][1];
  const Geometry g{(int)shapes[0][2], (int)shapes[0][3], (int)shapes[0][2], (int)shapes[0][3],
                   (int)shapes[2][2], (int)shapes[2][3]};
  if (g.taps() > kMaxTaps) return 1;
  const int GH = GATE ? shapes[4][2] : 1, GW = GATE ? shapes[4][3] : 1;
  std::vector<int> rows, cols;
  if (GATE) {
    nearest_indices(GH, g.H, rows);
    nearest_indices(GW, g.W, cols);
  }
  if (g.H * g.W <= kSmallTail && C1 >= kLanes) {
    ghost_tail_small<RELU, GATE, RESIDUAL>(z, b1, w, b2, gate, residual, out, N, C1, g, GH, GW,
                                           rows, cols);
    return 0;
  }
  const int64_t plane = (int64_t)g.H * g.W;
  const int64_t work = N * C1 * g.H * g.W * (g.taps() / 2 + 4);
  pool().parallel_for(N * C1, work, [&](int64_t begin, int64_t end) {
    const size_t padded = padded_size(g);
    const int total = g.H * g.Wp();
    // Padded x1, the conv's accumulator, and two gate rows expanded to width W.
    float* P = scratch(padded + round_up(total, kChunk) + 2 * (size_t)g.W + 2 * GH * GW);
    float* acc = P + padded;
    float* gate_rows = acc + round_up(total, kChunk);
    float* gate_sig = gate_rows + 2 * g.W;
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / C1, c = q % C1;
      float* first = out + (n * 2 * C1 + c) * plane;
      float* second = first + C1 * plane;
      const float* r1 = RESIDUAL ? residual + (n * 2 * C1 + c) * plane : nullptr;
      const float* r2 = RESIDUAL ? r1 + C1 * plane : nullptr;
      std::memset(P, 0, sizeof(float) * padded);
      for (int i = 0; i < g.H; ++i)
        bias_act_row<RELU>(z + q * plane + (size_t)i * g.W, b1[c], g.W,
                           P + (size_t)(i + g.ph()) * g.Wp() + g.pw());
      Taps taps;
      stride1_taps(P, w + c * g.taps(), false, g, taps);
      correlate(taps, total, acc);
      if (GATE) {  // sigmoid of both channels' gate planes
        const float* g0 = gate + (n * 2 * C1 + c) * GH * GW;
        ghost::sigmoid(g0, GH * GW, gate_sig);
        ghost::sigmoid(g0 + C1 * GH * GW, GH * GW, gate_sig + GH * GW);
      }
      int expanded = -1;
      for (int i = 0; i < g.H; ++i) {
        if (GATE && rows[i] != expanded) {
          expanded = rows[i];
          const float* s0 = gate_sig + (size_t)expanded * GW;
          const float* s1 = s0 + GH * GW;
          for (int j = 0; j < g.W; ++j) {
            gate_rows[j] = s0[cols[j]];
            gate_rows[g.W + j] = s1[cols[j]];
          }
        }
        const size_t row = (size_t)i * g.W;
        tail_row<RELU, GATE, RESIDUAL>(P + (size_t)(i + g.ph()) * g.Wp() + g.pw(),
                                       acc + (size_t)i * g.Wp(), b2[c], gate_rows,
                                       gate_rows + g.W, RESIDUAL ? r1 + row : nullptr,
                                       RESIDUAL ? r2 + row : nullptr, g.W, first + row,
                                       second + row);
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" {
int DwConvS1(AOT_ARGS) { return forward<1, false, false>(params, shapes); }
int DwConvS2(AOT_ARGS) { return forward<2, false, false>(params, shapes); }
int DwConvS1Bias(AOT_ARGS) { return forward<1, true, false>(params, shapes); }
int DwConvS2Bias(AOT_ARGS) { return forward<2, true, false>(params, shapes); }
int DwConvS1BiasRelu(AOT_ARGS) { return forward<1, true, true>(params, shapes); }
int DwConvS2BiasRelu(AOT_ARGS) { return forward<2, true, true>(params, shapes); }
int SmallConvS1(AOT_ARGS) { return small_conv<1, false, false>(params, shapes); }
int SmallConvS2(AOT_ARGS) { return small_conv<2, false, false>(params, shapes); }
int SmallConvS1Bias(AOT_ARGS) { return small_conv<1, true, false>(params, shapes); }
int SmallConvS2Bias(AOT_ARGS) { return small_conv<2, true, false>(params, shapes); }
int SmallConvS1BiasRelu(AOT_ARGS) { return small_conv<1, true, true>(params, shapes); }
int SmallConvS2BiasRelu(AOT_ARGS) { return small_conv<2, true, true>(params, shapes); }
int DwConvBackInputS1(AOT_ARGS) { return backward_input<1>(params, shapes); }
int DwConvBackInputS2(AOT_ARGS) { return backward_input<2>(params, shapes); }
int DwConvBackWeightS1(AOT_ARGS) { return backward_weight<1>(params, shapes); }
int DwConvBackWeightS2(AOT_ARGS) { return backward_weight<2>(params, shapes); }
int GhostTail(AOT_ARGS) { return ghost_tail<false, false, false>(params, shapes); }
int GhostTailRelu(AOT_ARGS) { return ghost_tail<true, false, false>(params, shapes); }
int GhostTailGate(AOT_ARGS) { return ghost_tail<false, true, false>(params, shapes); }
int GhostTailReluGate(AOT_ARGS) { return ghost_tail<true, true, false>(params, shapes); }
int GhostTailResidual(AOT_ARGS) { return ghost_tail<false, false, true>(params, shapes); }
}
