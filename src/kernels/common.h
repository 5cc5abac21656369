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

constexpr int kLanes = 16;  // floats per vector

// GCC vector extension: compiles to the widest vectors -march=native allows.
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
