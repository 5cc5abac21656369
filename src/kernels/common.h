// Helpers shared by the kernel files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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
