// Memory-bound GhostNetV2 operations as single passes, for MindSpore CPU
// custom (AOT) operators. MindSpore 2.7.2's own CPU kernels for these run at
// a fraction of memory bandwidth (a 32x960x3x3 -> 7x7 nearest resize took
// ~25 ms, a spatial mean over 32x72x28x28 ~12 ms).
//
// NCHW float32, one (image, channel) plane per task:
//   GateMul(x, g) -> y            y = x * nearest_upsample(g, x's H x W),
//                                 PyTorch's legacy nearest indices
//   GateMulBackGate(dy, x, g) -> dg   dg = sum of dy * x over each g cell
//   SpatialMean(x) -> y           (N, C, 1, 1) mean over H x W
//   SpatialMeanBack(dy, x) -> dx  dx = dy / (H * W) everywhere
//   AvgPool2x2(x) -> y            2x2 average, stride 2, floor (odd edge dropped)
//   AvgPool2x2Back(dy, x) -> dx   dy / 4 over each 2x2 cell, 0 on a dropped edge
//   ChannelScale(x, s) -> y       y = x * s, s (N, C, 1, 1) (the SE block's gate)
//   ChannelScaleBack(dy, x, s) -> ds   ds = sum over H, W of dy * x
//   UpsampleConcat(a, b) -> y     y = cat(nearest 2x upsample of a, b) on channels:
//                                 a (N, CA, H / 2, W / 2), b (N, CB, H, W) (YOLOv3's neck)
//   ResizeBilinear(x, like) -> y  y = x resized to like's H x W, bilinear, half-pixel
//                                 centres (PyTorch's align_corners=False; DeepLabV3's
//                                 final resize); only like's shape is read
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "thread_pool.h"

namespace {

using ghost::nearest_indices;
using ghost::pool;

thread_local std::vector<float> t_row;
thread_local std::vector<int> t_index;

struct Planes {
  int64_t count;  // N * C
  int H, W;       // the full-resolution plane
  int GH, GW;     // the small plane
};

int gate_mul(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* g = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const Planes p{shapes[0][0] * shapes[0][1], (int)shapes[0][2], (int)shapes[0][3],
                 (int)shapes[1][2], (int)shapes[1][3]};
  std::vector<int> rows, cols;
  nearest_indices(p.GH, p.H, rows);
  nearest_indices(p.GW, p.W, cols);
  pool().parallel_for(p.count, p.count * p.H * p.W, [&](int64_t begin, int64_t end) {
    t_row.resize(p.W);
    float* gate_row = t_row.data();
    for (int64_t q = begin; q < end; ++q) {
      const float* gp = g + q * p.GH * p.GW;
      int expanded = -1;  // gate row currently expanded to full width
      for (int i = 0; i < p.H; ++i) {
        if (rows[i] != expanded) {
          expanded = rows[i];
          const float* src = gp + (int64_t)expanded * p.GW;
          for (int j = 0; j < p.W; ++j) gate_row[j] = src[cols[j]];
        }
        const float* xr = x + (q * p.H + i) * p.W;
        float* yr = y + (q * p.H + i) * p.W;
#pragma omp simd
        for (int j = 0; j < p.W; ++j) yr[j] = xr[j] * gate_row[j];
      }
    }
  });
  return 0;
}

int gate_mul_back_gate(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dg = static_cast<float*>(params[3]);
  const Planes p{shapes[1][0] * shapes[1][1], (int)shapes[1][2], (int)shapes[1][3],
                 (int)shapes[2][2], (int)shapes[2][3]};
  std::vector<int> rows, cols;
  nearest_indices(p.GH, p.H, rows);
  nearest_indices(p.GW, p.W, cols);
  pool().parallel_for(p.count, p.count * p.H * p.W, [&](int64_t begin, int64_t end) {
    t_row.resize(p.W);
    float* product = t_row.data();
    for (int64_t q = begin; q < end; ++q) {
      float* gp = dg + q * p.GH * p.GW;
      std::fill(gp, gp + p.GH * p.GW, 0.f);
      for (int i = 0; i < p.H; ++i) {
        const float* dr = dy + (q * p.H + i) * p.W;
        const float* xr = x + (q * p.H + i) * p.W;
#pragma omp simd
        for (int j = 0; j < p.W; ++j) product[j] = dr[j] * xr[j];
        float* out = gp + (int64_t)rows[i] * p.GW;
        for (int j = 0; j < p.W; ++j) out[cols[j]] += product[j];
      }
    }
  });
  return 0;
}

int spatial_mean(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  const int64_t planes = shapes[0][0] * shapes[0][1], size = shapes[0][2] * shapes[0][3];
  pool().parallel_for(planes, planes * size, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const float* xp = x + q * size;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < size; ++t) sum += xp[t];
      y[q] = sum / static_cast<float>(size);
    }
  });
  return 0;
}

int spatial_mean_back(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  float* dx = static_cast<float*>(params[2]);
  const int64_t planes = shapes[1][0] * shapes[1][1], size = shapes[1][2] * shapes[1][3];
  pool().parallel_for(planes, planes * size, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const float v = dy[q] / static_cast<float>(size);
      std::fill(dx + q * size, dx + (q + 1) * size, v);
    }
  });
  return 0;
}

int avg_pool_2x2(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  const int64_t planes = shapes[0][0] * shapes[0][1];
  const int H = shapes[0][2], W = shapes[0][3], OH = shapes[1][2], OW = shapes[1][3];
  pool().parallel_for(planes, planes * H * W, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      for (int i = 0; i < OH; ++i) {
        const float* r0 = x + (q * H + 2 * i) * W;
        const float* r1 = r0 + W;
        float* out = y + (q * OH + i) * OW;
        for (int j = 0; j < OW; ++j)
          out[j] = (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]) * 0.25f;
      }
    }
  });
  return 0;
}

int avg_pool_2x2_back(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  float* dx = static_cast<float*>(params[2]);
  const int64_t planes = shapes[1][0] * shapes[1][1];
  const int H = shapes[1][2], W = shapes[1][3], OH = shapes[0][2], OW = shapes[0][3];
  pool().parallel_for(planes, planes * H * W, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      float* dp = dx + q * H * W;
      std::fill(dp, dp + (int64_t)H * W, 0.f);  // an odd last row / column gets nothing
      for (int i = 0; i < OH; ++i) {
        const float* d = dy + (q * OH + i) * OW;
        float* r0 = dp + (int64_t)(2 * i) * W;
        float* r1 = r0 + W;
        for (int j = 0; j < OW; ++j) {
          const float v = d[j] * 0.25f;
          r0[2 * j] = r0[2 * j + 1] = r1[2 * j] = r1[2 * j + 1] = v;
        }
      }
    }
  });
  return 0;
}

int channel_scale(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* scale = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t planes = shapes[0][0] * shapes[0][1], size = shapes[0][2] * shapes[0][3];
  pool().parallel_for(planes, planes * size, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const float* xp = x + q * size;
      float* yp = y + q * size;
      const float s = scale[q];
#pragma omp simd
      for (int64_t t = 0; t < size; ++t) yp[t] = xp[t] * s;
    }
  });
  return 0;
}

int channel_scale_back(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* ds = static_cast<float*>(params[3]);
  const int64_t planes = shapes[1][0] * shapes[1][1], size = shapes[1][2] * shapes[1][3];
  pool().parallel_for(planes, planes * size, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const float* dp = dy + q * size;
      const float* xp = x + q * size;
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < size; ++t) sum += dp[t] * xp[t];
      ds[q] = sum;
    }
  });
  return 0;
}

// One plane of y per task: an upsampled plane of a (each source row
// expanded once, written twice) or a copy of a plane of b.
int upsample_concat(void** params, int64_t** shapes) {
  const float* a = static_cast<const float*>(params[0]);
  const float* b = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  const int64_t N = shapes[1][0], CA = shapes[0][1], CB = shapes[1][1];
  const int GH = (int)shapes[0][2], GW = (int)shapes[0][3];
  const int H = (int)shapes[1][2], W = (int)shapes[1][3];
  if (shapes[0][0] != N || H != 2 * GH || W != 2 * GW) return 1;
  const int64_t channels = CA + CB, size = (int64_t)H * W;
  pool().parallel_for(N * channels, N * channels * size, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / channels, c = q % channels;
      float* out = y + q * size;
      if (c >= CA) {
        std::memcpy(out, b + (n * CB + c - CA) * size, size * sizeof(float));
        continue;
      }
      const float* plane = a + (n * CA + c) * GH * GW;
      for (int i = 0; i < GH; ++i) {
        float* row = out + (int64_t)2 * i * W;
        for (int j = 0; j < W; ++j) row[j] = plane[(int64_t)i * GW + (j >> 1)];
        std::memcpy(row + W, row, W * sizeof(float));
      }
    }
  });
  return 0;
}

// One axis of a bilinear resize in -> out with half-pixel centres, as
// PyTorch computes it: output i reads src = max(0, (i + 0.5) * in / out -
// 0.5) between first = floor(src) and first + 1 (the edge repeated), with
// weights 1 - frac and frac.
struct LinearTaps {
  std::vector<int> first, second;
  std::vector<float> frac;
};

void linear_taps(int in, int out, LinearTaps& taps) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  taps.first.resize(out);
  taps.second.resize(out);
  taps.frac.resize(out);
  for (int i = 0; i < out; ++i) {
    const float src = std::max(0.f, scale * (static_cast<float>(i) + 0.5f) - 0.5f);
    const int first = std::min(static_cast<int>(src), in - 1);
    taps.first[i] = first;
    taps.second[i] = first + (first < in - 1 ? 1 : 0);
    taps.frac[i] = src - static_cast<float>(first);
  }
}

thread_local std::vector<float> t_upper, t_lower;  // two input rows resized along W

// One plane per task: each input row resized along W once (kept while
// output rows use it), each output row a blend of two such rows.
int resize_bilinear(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[2]);
  const int64_t planes = shapes[0][0] * shapes[0][1];
  const int IH = (int)shapes[0][2], IW = (int)shapes[0][3];
  const int OH = (int)shapes[1][2], OW = (int)shapes[1][3];
  if (shapes[1][0] != shapes[0][0] || IH < 1 || IW < 1) return 1;
  LinearTaps rows, cols;
  linear_taps(IH, OH, rows);
  linear_taps(IW, OW, cols);
  pool().parallel_for(planes, planes * OH * OW, [&](int64_t begin, int64_t end) {
    t_upper.resize(OW);
    t_lower.resize(OW);
    for (int64_t q = begin; q < end; ++q) {
      const float* plane = x + q * IH * IW;
      auto resize_row = [&](int row, std::vector<float>& resized) {
        const float* src = plane + (int64_t)row * IW;
        for (int j = 0; j < OW; ++j)
          resized[j] =
              src[cols.first[j]] * (1.f - cols.frac[j]) + src[cols.second[j]] * cols.frac[j];
      };
      int upper_row = -1, lower_row = -1;  // the input rows t_upper, t_lower hold
      for (int i = 0; i < OH; ++i) {
        if (rows.first[i] != upper_row) {
          if (rows.first[i] == lower_row) {  // moving down: the lower row becomes the upper
            std::swap(t_upper, t_lower);
            lower_row = upper_row;
          } else {
            resize_row(rows.first[i], t_upper);
          }
          upper_row = rows.first[i];
        }
        if (rows.second[i] != lower_row) {
          resize_row(rows.second[i], t_lower);
          lower_row = rows.second[i];
        }
        const float* upper = t_upper.data();
        const float* lower = t_lower.data();
        const float down = rows.frac[i], up = 1.f - down;
        float* out = y + (q * OH + i) * OW;
#pragma omp simd
        for (int j = 0; j < OW; ++j) out[j] = upper[j] * up + lower[j] * down;
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" {
int GateMul(AOT_ARGS) { return gate_mul(params, shapes); }
int GateMulBackGate(AOT_ARGS) { return gate_mul_back_gate(params, shapes); }
int SpatialMean(AOT_ARGS) { return spatial_mean(params, shapes); }
int SpatialMeanBack(AOT_ARGS) { return spatial_mean_back(params, shapes); }
int AvgPool2x2(AOT_ARGS) { return avg_pool_2x2(params, shapes); }
int AvgPool2x2Back(AOT_ARGS) { return avg_pool_2x2_back(params, shapes); }
int ChannelScale(AOT_ARGS) { return channel_scale(params, shapes); }
int ChannelScaleBack(AOT_ARGS) { return channel_scale_back(params, shapes); }
int UpsampleConcat(AOT_ARGS) { return upsample_concat(params, shapes); }
int ResizeBilinear(AOT_ARGS) { return resize_bilinear(params, shapes); }
}
