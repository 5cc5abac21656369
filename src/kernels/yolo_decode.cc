// YOLOv3's box decoding (src/models/heads/yolov3_head.py YOLOV3Decode) as one
// pass, for MindSpore CPU custom (AOT) operators. On MindSpore's operators
// it is a Transpose, Reshape and Concat per level, slices, two Sigmoids, an
// Exp and a final Concat: ~15 operators, each a pass over the predictions.
//
//   YoloDecode(map_1 .. map_L, centre, size, stride) -> out
//     map_l (N, A * K, H_l, W_l): per anchor a, K = 5 + classes attributes
//       (tx, ty, tw, th, objectness, class logits) at channel a * K + k;
//     centre, size (R, 2), stride (R, 1): the anchors' table in the rows'
//       order (level, row, column, anchor), R = A * sum of H_l * W_l;
//     out (N, R, K): x1, y1, x2, y2 in input pixels, sigmoid(objectness),
//       sigmoid(class logits): centre + (sigmoid(t_xy) - 0.5) * stride,
//       half size = size * exp(t_wh) * 0.5.
// L is the number of parameters less four. One (image, level, anchor) per
// task: its K planes transformed along the pixels (vectors), then written
// as rows of K.
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"
#include "thread_pool.h"

namespace {

using ghost::pool;
using ghost::sigmoid;

thread_local std::vector<float> t_planes;  // one anchor's K transformed planes

struct Level {
  const float* map;
  int64_t pixels;     // H * W
  int64_t first_row;  // of the level's rows in out
};

int yolo_decode(int nparam, void** params, int64_t** shapes) {
  const int levels = nparam - 4;
  if (levels < 1) return 1;
  const float* centre = static_cast<const float*>(params[levels]);
  const float* size = static_cast<const float*>(params[levels + 1]);
  const float* stride = static_cast<const float*>(params[levels + 2]);
  float* out = static_cast<float*>(params[levels + 3]);
  const int64_t N = shapes[0][0], R = shapes[levels][0], K = shapes[levels + 3][2];
  const int64_t A = shapes[0][1] / K;
  std::vector<Level> table;
  int64_t rows = 0;
  for (int l = 0; l < levels; ++l) {
    if (shapes[l][0] != N || shapes[l][1] != A * K) return 1;
    const int64_t pixels = shapes[l][2] * shapes[l][3];
    table.push_back({static_cast<const float*>(params[l]), pixels, rows});
    rows += pixels * A;
  }
  if (rows != R || K < 5 || shapes[levels + 3][1] != R) return 1;
  const int64_t tasks = N * levels * A;
  pool().parallel_for(tasks, N * R * K * 4, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (levels * A), a = task % A;
      const Level& level = table[(task / A) % levels];
      const int64_t P = level.pixels;
      const float* planes = level.map + (n * A * K + a * K) * P;
      t_planes.resize(K * P);
      float* t = t_planes.data();
      // Row of pixel p: first_row + p * A + a; its table entries at 2 * row.
      auto table_row = [&](int64_t p) { return level.first_row + p * A + a; };
      for (int64_t p = 0; p < P; ++p) {  // the box from its four planes
        const int64_t row = table_row(p);
        for (int d = 0; d < 2; ++d) {
          const float xy = planes[d * P + p], wh = planes[(2 + d) * P + p];
          const float c = centre[2 * row + d] +
                          (1.f / (1.f + std::exp(-xy)) - 0.5f) * stride[row];
          const float half = size[2 * row + d] * std::exp(wh) * 0.5f;
          t[d * P + p] = c - half;
          t[(2 + d) * P + p] = c + half;
        }
      }
      for (int64_t k = 4; k < K; ++k) sigmoid(planes + k * P, (int)P, t + k * P);
      for (int64_t p = 0; p < P; ++p) {
        float* dst = out + (n * R + table_row(p)) * K;
        for (int64_t k = 0; k < K; ++k) dst[k] = t[k * P + p];
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" {
int YoloDecode(int nparam, void** params, int*, int64_t** shapes, const char**, void*, void*) {
  return yolo_decode(nparam, params, shapes);
}
}
