// 1x1 convolutions (inference) for MindSpore CPU custom (AOT) operators.
//
// Why: after the depthwise convolutions moved to depthwise.cc, the 1x1
// convolutions left on MindSpore's Conv2D (oneDNN, plain NCHW) were ~45% of
// the MINDIR's operator time at batch 1, and each one switched between
// MindSpore's thread pool and this library's (benchmark/RESULTS.md).
//
// Layout NCHW float32, weights (Cout, Cin, 1, 1), stride 1, no padding:
// per image a matrix product y[co, p] = sum_k w[co, k] * x[k, p] (+ bias,
// activation). Register blocking: kRows output channels x kCols vectors of pixels
// of accumulators; each step loads kCols vectors of one input channel's row
// and broadcasts one weight per output channel. The pixel rows of x are read
// in place (one input channel after the other, a tile of kCols vectors wide,
// which stays in L1 / L2 while all output channels pass over it); a tile
// narrower than that at the end of a plane is first copied, zero-padded.
// A 1 x 1 plane (SE block, head) is one pixel per image: dot products.
//
// Every output is one sum in one order whatever the thread count.
//
// Dense convolutions (one group, odd kh x kw, stride 1, padding d * (k / 2)
// for dilation d: the YOLOv3 neck's and head's 3x3 convs, which MindSpore's
// oneDNN Conv2D ran 3x slower than onnxruntime, and DeepLabV3's) are the
// same products over columns gathered per tile (implicit im2col): a row of
// the columns holds x[c, oy + dy, ox + dx] of one channel c and tap (dy,
// dx) for the tile's output pixels (zero outside the map), multiplied by
// that tap's weights where w (Cout, Cin, kh, kw) stores them. A tap that
// reads only padding for a tile (a dilated conv's outer taps on a small map)
// has no rows; a deep input is summed in passes over ranges of its channels,
// so that a pass's columns (up to 256 KB) stay in L2 while all output
// channels go over them.
//
// Entry points (AOT signature, params = inputs then outputs):
//   Pointwise[Relu](x, w) -> y     PointwiseBias[Relu|HardSigmoid|Leaky](x, w, b) -> y
//   DenseConvS1[Bias][Relu|Leaky](x, w[, b], dilation) -> y   the dense convolutions,
//                                  dilation a float32 tensor (1,) holding it
//   DenseBias(x, w, b) -> y        x (N, depth), w (rows, depth): nn.Dense
// Leaky: LeakyReLU with slope 0.1 (YOLOv3's), max(0.1 v, v).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "common.h"
#include "thread_pool.h"

namespace {

using ghost::kLanes;
using ghost::load;
using ghost::pool;
using ghost::splat;
using ghost::store;
using ghost::Vec;

// Accumulators kRows x kCols plus kCols inputs and a broadcast weight must fit
// the vector registers: 32 with AVX-512 (8 x 3 = 24 accumulators), 16 with
// AVX / AVX2 / SSE (6 x 2 = 12). The dense convolutions' blocks are 6 x 4
// with AVX-512: on the segmenter's 960- and 2560-channel 3x3 convs 9% faster
// than 8 x 3 (fewer weights per multiply-add), but slower on small maps
// (wider tiles, fewer tasks), where the 1x1 convs of the classifier run.
#if defined(__AVX512F__)
constexpr int kRows = 8, kCols = 3;
constexpr int kConvRows = 6, kConvCols = 4;
#else
constexpr int kRows = 6, kCols = 2;
constexpr int kConvRows = 6, kConvCols = 2;
#endif
constexpr int kTile = kCols * kLanes;          // pixels per tile
constexpr int kConvTile = kConvCols * kLanes;  // pixels per dense convolution's tile

// After the bias. kHardSigmoid: relu6(v + 3) / 6, the SE block's gate (the
// same float operations as MindSpore's Add, ReLU6 and Div); kLeaky: the
// product 0.1 v where v is negative (MindSpore's leaky_relu, max(0.1 v, v)).
enum Activation { kNone, kRelu, kHardSigmoid, kLeaky };
constexpr float kLeakySlope = 0.1f;

template <typename T>
T activate(T v, Activation activation) {
  const T zero = v - v;
  if (activation == kRelu) return v > 0.f ? v : zero;
  if (activation == kLeaky) return v > 0.f ? v : v * kLeakySlope;
  if (activation == kHardSigmoid) {
    v = v + 3.f;
    v = v > 0.f ? v : zero;
    v = v < 6.f ? v : zero + 6.f;
    return v / 6.f;
  }
  return v;
}

thread_local std::vector<float> t_tile;    // a padded vector's or a pixel's column
thread_local std::vector<float> t_result;  // a padded vector's result

// One matrix product: y (rows x columns, row pitch y_pitch) = w (rows x depth,
// row pitch depth) * x (depth x columns, row pitch x_pitch) + bias, ReLU.
struct Product {
  const float* x;
  int64_t x_pitch;
  int64_t columns;
  const float* w;
  int depth;
  int rows;
  const float* bias;  // nullptr: none
  Activation activation;
  float* y;
  int64_t y_pitch;
  // A part of a longer sum (a dense convolution, pass by pass): `steps` of
  // the depth (-1: all), the weight of step k at w[offsets[k]] (the indexed
  // blocks; else w[k]); `accumulate` adds to what y holds; only the
  // `finish`ing part adds the bias and activates.
  int steps = -1;
  const int* offsets = nullptr;
  bool accumulate = false;
  bool finish = true;
};

// R rows x C vectors at (row, x, y): x readable C vectors wide on `depth` rows.
template <int R, int C, bool INDEXED>
void block(const Product& p, int row, const float* x, int64_t x_pitch, float* y, int64_t y_pitch) {
  Vec acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c)
      acc[r][c] = p.accumulate ? load(y + r * y_pitch + c * kLanes) : Vec{};
  const float* w = p.w + (int64_t)row * p.depth;
  const int steps = p.steps < 0 ? p.depth : p.steps;
  for (int k = 0; k < steps; ++k) {
    const float* xk = x + k * x_pitch;
    Vec xv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) xv[c] = load(xk + c * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const Vec wv = splat(w[(int64_t)r * p.depth + (INDEXED ? p.offsets[k] : k)]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] += wv * xv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const Vec b = splat(p.bias ? p.bias[row + r] : 0.f);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      store(y + r * y_pitch + c * kLanes,
            p.finish ? activate(acc[r][c] + b, p.activation) : acc[r][c]);
    }
  }
}

using BlockFn = void (*)(const Product&, int, const float*, int64_t, float*, int64_t);

template <int C, bool INDEXED, int... R>
constexpr std::array<BlockFn, sizeof...(R)> rows_of(std::integer_sequence<int, R...>) {
  return {&block<R + 1, C, INDEXED>...};
}

template <int ROWS, bool INDEXED, int... C>
constexpr std::array<std::array<BlockFn, ROWS>, sizeof...(C)> table_of(
    std::integer_sequence<int, C...>) {
  return {rows_of<C + 1, INDEXED>(std::make_integer_sequence<int, ROWS>())...};
}

// kBlocks[C - 1][R - 1] computes R rows x C vectors; kConvBlocks the same up
// to kConvRows x kConvCols, with the weights at p.offsets.
constexpr auto kBlocks = table_of<kRows, false>(std::make_integer_sequence<int, kCols>());
constexpr auto kConvBlocks =
    table_of<kConvRows, true>(std::make_integer_sequence<int, kConvCols>());

// Dot products of R weight rows with one contiguous column of x, vectorised
// along depth: 1 x 1 planes (the SE block, the head: x is (N, depth)) and a
// plane's last few pixels.
constexpr int kDotRows = 8;

template <int R>
void dot_rows(const float* w, int depth, const float* x, float* out) {
  Vec acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = Vec{};
  int k = 0;
  for (; k + kLanes <= depth; k += kLanes) {
    const Vec xv = load(x + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] += load(w + (int64_t)r * depth + k) * xv;
  }
  for (int r = 0; r < R; ++r) {
    float sum = 0.f;
    for (int lane = 0; lane < kLanes; ++lane) sum += acc[r][lane];
    for (int j = k; j < depth; ++j) sum += w[(int64_t)r * depth + j] * x[j];
    out[r] = sum;
  }
}

using DotFn = void (*)(const float*, int, const float*, float*);

template <int... R>
constexpr std::array<DotFn, sizeof...(R)> dots_of(std::integer_sequence<int, R...>) {
  return {&dot_rows<R + 1>...};
}

constexpr auto kDots = dots_of(std::make_integer_sequence<int, kDotRows>());

// Output value of row `row`: bias and activation.
inline float finish(const Product& p, int row, float v) {
  return activate(v + (p.bias ? p.bias[row] : 0.f), p.activation);
}

// A plane's last pixels up to this many go through dot products.
constexpr int kFewPixels = kLanes / 4;

// Rows [row_begin, row_end) of tile `tile` of the product: its whole vectors
// in place; the last pixels of a plane (fewer than a vector) one at a time as
// dot products if they are few (49 = 3 x 16 + 1 pixels at 7x7 with AVX-512),
// else through a zero-padded vector.
void tile_rows(const Product& p, int64_t tile, int row_begin, int row_end) {
  const int64_t first = tile * kTile;
  const int width = (int)std::min<int64_t>(kTile, p.columns - first);
  const int vectors = width / kLanes, rest = width % kLanes;
  const float* x = p.x + first;
  float* y = p.y + first;
  for (int row = row_begin; vectors > 0 && row < row_end; row += kRows) {
    const int rows = std::min(kRows, row_end - row);
    kBlocks[vectors - 1][rows - 1](p, row, x, p.x_pitch, y + row * p.y_pitch, p.y_pitch);
  }
  if (rest == 0) return;
  x += vectors * kLanes;
  y += vectors * kLanes;
  if (rest <= kFewPixels) {
    float out[kDotRows];
    t_tile.resize(p.depth);
    for (int j = 0; j < rest; ++j) {
      for (int k = 0; k < p.depth; ++k) t_tile[k] = x[k * p.x_pitch + j];
      for (int row = row_begin; row < row_end; row += kDotRows) {
        const int rows = std::min(kDotRows, row_end - row);
        kDots[rows - 1](p.w + (int64_t)row * p.depth, p.depth, t_tile.data(), out);
        for (int r = 0; r < rows; ++r)
          y[(row + r) * p.y_pitch + j] = finish(p, row + r, out[r]);
      }
    }
    return;
  }
  t_tile.assign((size_t)p.depth * kLanes, 0.f);
  for (int k = 0; k < p.depth; ++k)
    std::memcpy(t_tile.data() + (size_t)k * kLanes, x + k * p.x_pitch, rest * sizeof(float));
  t_result.resize((size_t)kRows * kLanes);
  for (int row = row_begin; row < row_end; row += kRows) {
    const int rows = std::min(kRows, row_end - row);
    kBlocks[0][rows - 1](p, row, t_tile.data(), kLanes, t_result.data(), kLanes);
    for (int r = 0; r < rows; ++r)
      std::memcpy(y + (row + r) * p.y_pitch, t_result.data() + (size_t)r * kLanes,
                  rest * sizeof(float));
  }
}

// The products of `images` (each p shifted by x_step / y_step), split into
// (image, tile, row range) tasks for the pool; tile(q, tile, row_begin,
// row_end) computes one (tile_rows, conv_tile_rows).
template <int TILE, int BLOCK_ROWS, class Tile>
void run(const Product& p, int64_t images, int64_t x_step, int64_t y_step, Tile tile) {
  const int64_t tiles = (p.columns + TILE - 1) / TILE;
  const int row_blocks = (p.rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
  // Enough tasks for the threads to share (4 per thread of 2); as few row
  // splits as that allows, since each split reads the tile again.
  const int splits = (int)std::min<int64_t>(row_blocks, std::max<int64_t>(1, 8 / (images * tiles)));
  const int rows_per_split = (row_blocks + splits - 1) / splits * BLOCK_ROWS;
  const int64_t tasks = images * tiles * splits;
  const int64_t cost = images * p.columns * p.rows * (int64_t)p.depth / 4;
  pool().parallel_for(tasks, cost, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image = task / (tiles * splits), rest = task % (tiles * splits);
      Product q = p;
      q.x += image * x_step;
      q.y += image * y_step;
      const int row_begin = (int)(rest % splits) * rows_per_split;
      tile(q, rest / splits, row_begin, std::min(p.rows, row_begin + rows_per_split));
    }
  });
}

void dot_products(const Product& p, int64_t images) {
  const int64_t blocks = (p.rows + kDotRows - 1) / kDotRows;
  pool().parallel_for(blocks, images * p.rows * (int64_t)p.depth / 4, [&](int64_t begin,
                                                                         int64_t end) {
    float out[kDotRows];
    for (int64_t block = begin; block < end; ++block) {
      const int row = (int)block * kDotRows, rows = std::min(kDotRows, p.rows - row);
      for (int64_t n = 0; n < images; ++n) {
        kDots[rows - 1](p.w + (int64_t)row * p.depth, p.depth, p.x + n * p.depth, out);
        for (int r = 0; r < rows; ++r) {
          p.y[n * p.rows + row + r] = finish(p, row + r, out[r]);
        }
      }
    }
  });
}

template <bool BIAS, Activation ACTIVATION>
int pointwise(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* bias = BIAS ? static_cast<const float*>(params[2]) : nullptr;
  float* y = static_cast<float*>(params[BIAS ? 3 : 2]);
  const int64_t N = shapes[0][0], depth = shapes[0][1], plane = shapes[0][2] * shapes[0][3];
  const Product p{x, plane, plane, w, (int)depth, (int)shapes[1][0], bias, ACTIVATION, y, plane};
  if (plane == 1)
    dot_products(p, N);
  else
    run<kTile, kRows>(p, N, depth * plane, p.rows * plane, tile_rows);
  return 0;
}

thread_local std::vector<float> t_columns;  // a dense convolution's tile of columns

// The input of a dense convolution (one image), its kernel and dilation.
struct ConvInput {
  int channels, height, width, kh, kw, dilation;
  int taps() const { return kh * kw; }
  int depth() const { return channels * taps(); }
};

// Tap (ky, kx) reads pixel (oy + dy, ox + dx) for output pixel (oy, ox).
struct Tap {
  int dy, dx;
};

Tap tap_of(const ConvInput& in, int t) {
  return {(t / in.kw - in.kh / 2) * in.dilation, (t % in.kw - in.kw / 2) * in.dilation};
}

// body(j, oy, ox, length) for each run of output pixels [first, first +
// count) within one output row (j: the run's offset in the tile).
template <class Body>
void for_runs(const ConvInput& in, int64_t first, int count, Body body) {
  for (int j = 0; j < count;) {
    const int oy = (int)((first + j) / in.width), ox = (int)((first + j) % in.width);
    const int length = std::min(in.width - ox, count - j);
    body(j, oy, ox, length);
    j += length;
  }
}

// Pixel t of a run at (oy, ox) reads input column ox + t + dx: inside the
// map for t in [lo, hi); the run's input row oy + dy inside or not.
struct Inside {
  bool row;
  int lo, hi;
};

Inside inside(const ConvInput& in, Tap tap, int oy, int ox, int length) {
  const int lo = std::min(length, std::max(0, -tap.dx - ox));
  const int hi = std::max(lo, std::min(length, in.width - tap.dx - ox));
  return {oy + tap.dy >= 0 && oy + tap.dy < in.height, lo, hi};
}

// Whether the tap reads any pixel inside the map for the tile's pixels; a
// tap that reads only padding (most of a dilated 3x3's on a small map) is
// skipped.
bool tap_used(const ConvInput& in, Tap tap, int64_t first, int count) {
  bool used = false;
  for_runs(in, first, count, [&](int, int oy, int ox, int length) {
    const Inside span = inside(in, tap, oy, ox, length);
    used = used || (span.row && span.hi > span.lo);
  });
  return used;
}

// Row c * U + u of the columns (kConvTile floats each), for channels c0 + c
// (c < n) and the U taps used: x[c0 + c, oy + dy, ox + dx] of tap u for the
// tile's pixels, zero outside the map and past count (up to a whole vector).
void gather_columns(const float* x, const ConvInput& in, const std::vector<Tap>& taps, int c0,
                    int n, int64_t first, int count, float* columns) {
  const int64_t plane = (int64_t)in.height * in.width;
  const int used = (int)taps.size();
  const int padded = std::min(kConvTile, (count + kLanes - 1) / kLanes * kLanes);
  for_runs(in, first, count, [&](int j, int oy, int ox, int length) {
    for (int u = 0; u < used; ++u) {
      const Inside span = inside(in, taps[u], oy, ox, length);
      const float* src = x + c0 * plane + (int64_t)(oy + taps[u].dy) * in.width + ox + taps[u].dx;
      for (int c = 0; c < n; ++c, src += plane) {
        float* dst = columns + ((int64_t)c * used + u) * kConvTile + j;
        if (!span.row) {
          std::fill(dst, dst + length, 0.f);
          continue;
        }
        std::fill(dst, dst + span.lo, 0.f);
        std::memcpy(dst + span.lo, src + span.lo, (span.hi - span.lo) * sizeof(float));
        std::fill(dst + span.hi, dst + length, 0.f);
      }
    }
  });
  if (padded > count)
    for (int k = 0; k < n * used; ++k)
      std::fill(columns + (int64_t)k * kConvTile + count,
                columns + (int64_t)k * kConvTile + padded, 0.f);
}

// The columns of one pass stay within this many floats (256 KB), whatever
// the input's depth (the segmenter's 2560-channel 3x3 conv would otherwise
// sweep 4 MB per tile).
constexpr int kColumnFloats = 64 * 1024;

thread_local std::vector<int> t_offsets;  // the weights' offsets of a pass

// Rows [row_begin, row_end) of tile `tile` of a dense convolution (p.x: the
// image's input): passes over ranges of the input channels, each with every
// tap the tile uses (weight (co, c, tap) read in place at co * depth + c *
// taps + tap); passes after the first add to what the earlier ones wrote,
// the last adds the bias and activates. A tile that ends inside a vector is
// summed in t_result, then copied.
void conv_tile_rows(const Product& p, const ConvInput& in, int64_t tile, int row_begin,
                    int row_end) {
  const int64_t first = tile * kConvTile;
  const int count = (int)std::min<int64_t>(kConvTile, p.columns - first);
  const int vectors = (count + kLanes - 1) / kLanes;
  const bool whole = count == vectors * kLanes;
  std::vector<Tap> taps;
  std::vector<int> tap_index;
  for (int t = 0; t < in.taps(); ++t) {
    if (!tap_used(in, tap_of(in, t), first, count)) continue;
    taps.push_back(tap_of(in, t));
    tap_index.push_back(t);
  }
  const int used = (int)taps.size();
  const int chunk = std::max(1, std::min(in.channels, kColumnFloats / (kConvTile * used)));
  t_columns.resize((size_t)chunk * used * kConvTile);
  t_offsets.resize((size_t)chunk * used);
  float* out = whole ? p.y + first : nullptr;
  int64_t pitch = p.y_pitch;
  if (!whole) {
    t_result.resize((size_t)p.rows * kConvTile);
    out = t_result.data();
    pitch = kConvTile;
  }
  for (int c0 = 0; c0 < in.channels; c0 += chunk) {
    const int n = std::min(chunk, in.channels - c0);
    gather_columns(p.x, in, taps, c0, n, first, count, t_columns.data());
    for (int c = 0; c < n; ++c)
      for (int u = 0; u < used; ++u) t_offsets[c * used + u] = (c0 + c) * in.taps() + tap_index[u];
    Product q = p;
    q.steps = n * used;
    q.offsets = t_offsets.data();
    q.accumulate = c0 > 0;
    q.finish = c0 + n == in.channels;
    for (int row = row_begin; row < row_end; row += kConvRows) {
      const int rows = std::min(kConvRows, row_end - row);
      kConvBlocks[vectors - 1][rows - 1](q, row, t_columns.data(), kConvTile,
                                         out + row * pitch, pitch);
    }
  }
  if (!whole)
    for (int row = row_begin; row < row_end; ++row)
      std::memcpy(p.y + first + row * p.y_pitch, out + row * pitch, count * sizeof(float));
}

// (x, w[, b], dilation) -> y; dilation: a float32 tensor (1,) holding it.
template <bool BIAS, Activation ACTIVATION>
int dense_conv(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* bias = BIAS ? static_cast<const float*>(params[2]) : nullptr;
  const float dilation = *static_cast<const float*>(params[BIAS ? 3 : 2]);
  float* y = static_cast<float*>(params[BIAS ? 4 : 3]);
  const ConvInput in{(int)shapes[0][1], (int)shapes[0][2], (int)shapes[0][3],
                     (int)shapes[1][2], (int)shapes[1][3], (int)dilation};
  if (shapes[1][1] != in.channels || in.kh % 2 == 0 || in.kw % 2 == 0 || in.dilation < 1 ||
      in.dilation != dilation)
    return 1;
  const int64_t plane = (int64_t)in.height * in.width;
  const Product p{x, plane, plane, w, in.depth(), (int)shapes[1][0], bias, ACTIVATION, y, plane};
  run<kConvTile, kConvRows>(p, shapes[0][0], in.channels * plane, p.rows * plane,
      [&in](const Product& q, int64_t tile, int row_begin, int row_end) {
        conv_tile_rows(q, in, tile, row_begin, row_end);
      });
  return 0;
}

// A fully connected layer, x (N, depth) and w (rows, depth): the classifier.
int dense_bias(void** params, int64_t** shapes) {
  const Product p{static_cast<const float*>(params[0]), 1, 1, static_cast<const float*>(params[1]),
                  (int)shapes[0][1], (int)shapes[1][0], static_cast<const float*>(params[2]),
                  kNone, static_cast<float*>(params[3]), 1};
  dot_products(p, shapes[0][0]);
  return 0;
}

}  // namespace

extern "C" {
int DenseBias(AOT_ARGS) { return dense_bias(params, shapes); }
int Pointwise(AOT_ARGS) { return pointwise<false, kNone>(params, shapes); }
int PointwiseRelu(AOT_ARGS) { return pointwise<false, kRelu>(params, shapes); }
int PointwiseBias(AOT_ARGS) { return pointwise<true, kNone>(params, shapes); }
int PointwiseBiasRelu(AOT_ARGS) { return pointwise<true, kRelu>(params, shapes); }
int PointwiseBiasHardSigmoid(AOT_ARGS) { return pointwise<true, kHardSigmoid>(params, shapes); }
int PointwiseBiasLeaky(AOT_ARGS) { return pointwise<true, kLeaky>(params, shapes); }
int DenseConvS1(AOT_ARGS) { return dense_conv<false, kNone>(params, shapes); }
int DenseConvS1Relu(AOT_ARGS) { return dense_conv<false, kRelu>(params, shapes); }
int DenseConvS1Bias(AOT_ARGS) { return dense_conv<true, kNone>(params, shapes); }
int DenseConvS1BiasRelu(AOT_ARGS) { return dense_conv<true, kRelu>(params, shapes); }
int DenseConvS1BiasLeaky(AOT_ARGS) { return dense_conv<true, kLeaky>(params, shapes); }
}
