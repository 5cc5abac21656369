// Training-mode BatchNorm for MindSpore CPU custom (AOT) operators.
//
// MindSpore 2.7.2's CPU BatchNorm and BatchNormGrad (oneDNN, plain NCHW) took
// a third of a GhostNetV2 training step at batch 32 x 224. These are two
// passes over the input forward and two backward, one channel per task.
//
//   BatchNormTrain(x, gamma, beta, moving_mean, moving_var, {eps, momentum})
//       -> (y, mean, var, new_moving_mean, new_moving_var)
//       mean, var: the batch statistics (var biased, as used to normalise);
//       new_moving = (1 - momentum) * moving + momentum * batch, with the
//       unbiased batch variance (MindSpore's rule; momentum = batch weight)
//   BatchNormTrainBack(dy, x, gamma, mean, var, {eps, ...}) -> (dx, dgamma, dbeta)
//   BatchNormInfer(x, gamma, beta, mean, var, {eps, ...}) -> y   (running statistics)
// The ...Relu variants apply ReLU to y; BatchNormTrainBackRelu takes y as a
// seventh input (the ReLU's mask).
//
// Sums run in float per plane, then in double across the batch; the forward
// pass gets mean and variance in one read, summing x - k and (x - k)^2 with
// k = the channel's first value (no cancellation when the mean is large).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.h"
#include "thread_pool.h"

namespace {

using ghost::pool;

struct Layout {
  int64_t N, C, plane;  // plane = H * W
  int64_t count() const { return N * plane; }
  int64_t offset(int64_t n, int64_t c) const { return (n * C + c) * plane; }
};

Layout layout(const int64_t* shape) { return Layout{shape[0], shape[1], shape[2] * shape[3]}; }

template <bool RELU>
int batchnorm_train(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* gamma = static_cast<const float*>(params[1]);
  const float* beta = static_cast<const float*>(params[2]);
  const float* moving_mean = static_cast<const float*>(params[3]);
  const float* moving_var = static_cast<const float*>(params[4]);
  const float eps = static_cast<const float*>(params[5])[0];
  const float momentum = static_cast<const float*>(params[5])[1];
  float* y = static_cast<float*>(params[6]);
  float* mean_out = static_cast<float*>(params[7]);
  float* var_out = static_cast<float*>(params[8]);
  float* new_moving_mean = static_cast<float*>(params[9]);
  float* new_moving_var = static_cast<float*>(params[10]);
  const Layout l = layout(shapes[0]);
  const double count = static_cast<double>(l.count());
  pool().parallel_for(l.C, l.C * l.count(), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float k = x[l.offset(0, c)];
      double total = 0.0, squares = 0.0;
      for (int64_t n = 0; n < l.N; ++n) {
        const float* xp = x + l.offset(n, c);
        float sum = 0.f, sum2 = 0.f;
#pragma omp simd reduction(+ : sum, sum2)
        for (int64_t t = 0; t < l.plane; ++t) {
          const float d = xp[t] - k;
          sum += d;
          sum2 += d * d;
        }
        total += sum;
        squares += sum2;
      }
      const double shifted_mean = total / count;
      const double var_d = std::max(0.0, squares / count - shifted_mean * shifted_mean);
      const float mean = static_cast<float>(k + shifted_mean);
      const float var = static_cast<float>(var_d);
      const float scale = gamma[c] / std::sqrt(var + eps);
      const float shift = beta[c] - mean * scale;
      for (int64_t n = 0; n < l.N; ++n) {
        const float* xp = x + l.offset(n, c);
        float* yp = y + l.offset(n, c);
#pragma omp simd
        for (int64_t t = 0; t < l.plane; ++t) {
          const float v = xp[t] * scale + shift;
          yp[t] = RELU ? (v > 0.f ? v : 0.f) : v;
        }
      }
      mean_out[c] = mean;
      var_out[c] = var;
      const float unbiased = static_cast<float>(var_d * count / std::max(1.0, count - 1.0));
      new_moving_mean[c] = (1.f - momentum) * moving_mean[c] + momentum * mean;
      new_moving_var[c] = (1.f - momentum) * moving_var[c] + momentum * unbiased;
    }
  });
  return 0;
}

template <bool RELU>
int batchnorm_train_back(void** params, int64_t** shapes) {
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* gamma = static_cast<const float*>(params[2]);
  const float* mean_in = static_cast<const float*>(params[3]);
  const float* var_in = static_cast<const float*>(params[4]);
  const float eps = *static_cast<const float*>(params[5]);
  const float* y = RELU ? static_cast<const float*>(params[6]) : nullptr;
  const int out = RELU ? 7 : 6;
  float* dx = static_cast<float*>(params[out]);
  float* dgamma = static_cast<float*>(params[out + 1]);
  float* dbeta = static_cast<float*>(params[out + 2]);
  const Layout l = layout(shapes[1]);
  pool().parallel_for(l.C, l.C * l.count(), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const float mean = mean_in[c];
      const float rstd = 1.f / std::sqrt(var_in[c] + eps);
      double sum_dy = 0.0, sum_dy_xc = 0.0;  // xc = x - mean
      for (int64_t n = 0; n < l.N; ++n) {
        const float* dp = dy + l.offset(n, c);
        const float* xp = x + l.offset(n, c);
        const float* yp = RELU ? y + l.offset(n, c) : nullptr;
        float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
        for (int64_t t = 0; t < l.plane; ++t) {
          const float d = RELU ? (yp[t] > 0.f ? dp[t] : 0.f) : dp[t];
          a += d;
          b += d * (xp[t] - mean);
        }
        sum_dy += a;
        sum_dy_xc += b;
      }
      const float db = static_cast<float>(sum_dy);
      const float dg = static_cast<float>(sum_dy_xc) * rstd;  // sum dy * xhat
      // dx = gamma * rstd * (dy - db / M - xhat * dg / M)
      const float k = gamma[c] * rstd;
      const float inv_m = 1.f / static_cast<float>(l.count());
      const float mean_dy = db * inv_m;
      const float xc_coef = dg * rstd * inv_m;  // xhat * dg / M = xc * rstd * dg / M
      for (int64_t n = 0; n < l.N; ++n) {
        const float* dp = dy + l.offset(n, c);
        const float* xp = x + l.offset(n, c);
        const float* yp = RELU ? y + l.offset(n, c) : nullptr;
        float* dxp = dx + l.offset(n, c);
#pragma omp simd
        for (int64_t t = 0; t < l.plane; ++t) {
          const float d = RELU ? (yp[t] > 0.f ? dp[t] : 0.f) : dp[t];
          dxp[t] = k * (d - mean_dy - (xp[t] - mean) * xc_coef);
        }
      }
      dgamma[c] = dg;
      dbeta[c] = db;
    }
  });
  return 0;
}

template <bool RELU>
int batchnorm_infer(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* gamma = static_cast<const float*>(params[1]);
  const float* beta = static_cast<const float*>(params[2]);
  const float* mean = static_cast<const float*>(params[3]);
  const float* var = static_cast<const float*>(params[4]);
  const float eps = *static_cast<const float*>(params[5]);
  float* y = static_cast<float*>(params[6]);
  const Layout l = layout(shapes[0]);
  pool().parallel_for(l.N * l.C, l.C * l.count(), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t c = q % l.C;
      const float scale = gamma[c] / std::sqrt(var[c] + eps);
      const float shift = beta[c] - mean[c] * scale;
      const float* xp = x + q * l.plane;
      float* yp = y + q * l.plane;
#pragma omp simd
      for (int64_t t = 0; t < l.plane; ++t) {
        const float v = xp[t] * scale + shift;
        yp[t] = RELU ? (v > 0.f ? v : 0.f) : v;
      }
    }
  });
  return 0;
}

}  // namespace

extern "C" {
int BatchNormTrain(AOT_ARGS) { return batchnorm_train<false>(params, shapes); }
int BatchNormTrainRelu(AOT_ARGS) { return batchnorm_train<true>(params, shapes); }
int BatchNormTrainBack(AOT_ARGS) { return batchnorm_train_back<false>(params, shapes); }
int BatchNormTrainBackRelu(AOT_ARGS) { return batchnorm_train_back<true>(params, shapes); }
int BatchNormInfer(AOT_ARGS) { return batchnorm_infer<false>(params, shapes); }
int BatchNormInferRelu(AOT_ARGS) { return batchnorm_infer<true>(params, shapes); }
}
