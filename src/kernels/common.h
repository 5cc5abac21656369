// Helpers shared by the kernel files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// The signature MindSpore calls an AOT custom CPU operator with:
// (nparam, params, ndims, shapes, dtypes, stream, extra); the kernels use
// params (inputs, then outputs) and shapes.
#define AOT_ARGS int, void **params, int *, int64_t **shapes, const char **, void *, void *

namespace ghost {

// Floats per vector: the machine's vector width (the library is built with
// -march=native). A vector wider than the registers is legal, but GCC then
// keeps the accumulators of the depthwise loops on the stack: 16 lanes on an
// AVX or AVX2 CPU made every kernel 2-3x slower than 8 lanes (measured with
// -mno-avx512f -mno-avx2 on the AVX-512 machine, benchmark/RESULTS.md).
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;  // SSE, NEON
#endif

// GCC vector extension: compiles to the vectors of that width.
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef float VecU __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));

inline Vec load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
inline void store(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }

typedef int32_t VecI __attribute__((vector_size(kLanes * sizeof(int32_t))));

// The first n < kLanes floats at p, the other lanes zero; and their store.
// Masked where the ISA has masks (AVX-512, AVX), so that a row shorter than
// a vector (14 at 14x14 with AVX-512) or a row's end is not left to scalar
// code: a ghost-module tail's short rows were most of its instructions.
#if defined(__AVX512F__)
inline __mmask16 first_lanes(int n) { return static_cast<__mmask16>((1u << n) - 1); }
inline Vec load_n(const float* p, int n) { return (Vec)_mm512_maskz_loadu_ps(first_lanes(n), p); }
inline void store_n(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, first_lanes(n), (__m512)v); }
#elif defined(__AVX__)
inline __m256i first_lanes(int n) {
  return _mm256_castps_si256(_mm256_cmp_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_ps(static_cast<float>(n)), _CMP_LT_OQ));
}
inline Vec load_n(const float* p, int n) { return (Vec)_mm256_maskload_ps(p, first_lanes(n)); }
inline void store_n(float* p, Vec v, int n) { _mm256_maskstore_ps(p, first_lanes(n), (__m256)v); }
#else
inline Vec load_n(const float* p, int n) {
  Vec v = {};
  for (int i = 0; i < n; ++i) v[i] = p[i];
  return v;
}
inline void store_n(float* p, Vec v, int n) {
  for (int i = 0; i < n; ++i) p[i] = v[i];
}
#endif

// body(j, n) over [0, count) on whole vectors, n = kLanes, then the rest,
// n < kLanes; body loads and stores with load_part / store_part.
template <class Body>
inline void for_vectors(int count, Body body) {
  int j = 0;
  for (; j + kLanes <= count; j += kLanes) body(j, kLanes);
  if (j < count) body(j, count - j);
}
inline Vec load_part(const float* p, int n) { return n == kLanes ? load(p) : load_n(p, n); }
inline void store_part(float* p, Vec v, int n) {
  if (n == kLanes)
    store(p, v);
  else
    store_n(p, v, n);
}

inline Vec splat(float v) { return Vec{} + v; }

// exp(x) on a whole vector (libm's expf is scalar: it was 20% of the DFC
// gate kernel). Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-6
// polynomial for e^r, 2^n built in the exponent bits; within 2 ulp of expf.
// x is clamped to [-87, 88] (2^n stays a normal float; e^-87 ~ 1.6e-38).
inline Vec exp_vec(Vec x) {
  const Vec lo = splat(-87.f), hi = splat(88.f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick: the sum's
  // low mantissa bits are n, its bits are those of 0x4B400000 + n.
  const Vec magic = splat(12582912.f);
  const Vec k = x * 1.44269504088896341f + magic;
  const Vec n = k - magic;
  const Vec r = x - n * 0.693359375f - n * -2.12194440e-4f;
  Vec p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const VecI bits = ((reinterpret_cast<const VecI&>(k) - 0x4B400000) + 127) << 23;
  return p * reinterpret_cast<const Vec&>(bits);
}

// out[t] = 1 / (1 + exp(-x[t])) for t < count (count any size).
inline void sigmoid(const float* x, int count, float* out) {
  int t = 0;
  for (; t + kLanes <= count; t += kLanes) store(out + t, 1.f / (1.f + exp_vec(-load(x + t))));
  if (t < count) {  // the tail through a zero-padded vector
    float in[kLanes] = {}, res[kLanes];
    for (int i = t; i < count; ++i) in[i - t] = x[i];
    store(res, 1.f / (1.f + exp_vec(-load(in))));
    for (int i = t; i < count; ++i) out[i] = res[i - t];
  }
}

// Source index of output index i for a nearest resize in -> out, exactly as
// PyTorch's legacy 'nearest' (upsample nearest_idx): identity, i >> 1 for an
// exact 2x, else min(floor(i * (float)in / out), in - 1) in float32.
inline void nearest_indices(int in, int out, std::vector<int>& index) {
  index.resize(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int i = 0; i < out; ++i) {
    if (out == in)
      index[i] = i;
    else if (out == 2 * in)
      index[i] = i >> 1;
    else
      index[i] = std::min(static_cast<int>(std::floor(static_cast<float>(i) * scale)), in - 1);
  }
}

}  // namespace ghost
