// Chains of the other files' kernels as one MindSpore operator (inference).
//
// Why: at batch 1 each MindSpore operator costs about 9 us of dispatch
// besides its work, and the DFC branch and the SE block are chains of small
// operators on small maps (benchmark/RESULTS.md "Batch 1"): one operator each
// saves 3 dispatches per block (42 + 21 in ghostnetv2_100), and a ghost
// module's 1x1 conv joined to the rest of it one more (32). Each step is the
// same entry point MindSpore would call, on the same data: the results are
// bit-identical to the chain of operators.
//
// Entry points (AOT signature, params = inputs then outputs):
//   DfcGate(x, wp, bp, wh, bh, wv, bv) -> logits
//       AvgPool2x2 -> 1x1 conv (wp, bp) -> 1xK depthwise (wh, bh) -> Kx1
//       depthwise (wv, bv): the DFC attention's gate logits (BN folded)
//   SqueezeExcite(x, w1, b1, w2, b2) -> y
//       y = x * hard_sigmoid(conv(w2, b2, relu(conv(w1, b1, mean_hw(x)))))
//   GhostModule[Relu][Gate|Residual](x, wp, b1, w, b2[, extra]) -> out
//       Pointwise(x, wp) -> z, then GhostTail[Relu][Gate|Residual](z, b1, w,
//       b2[, extra]): a BN-folded ghost module (depthwise.cc's ghost_tail)
#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common.h"

extern "C" {
int AvgPool2x2(AOT_ARGS);
int Pointwise(AOT_ARGS);
int GhostTail(AOT_ARGS);
int GhostTailRelu(AOT_ARGS);
int GhostTailReluGate(AOT_ARGS);
int GhostTailGate(AOT_ARGS);
int GhostTailResidual(AOT_ARGS);
int PointwiseBias(AOT_ARGS);
int PointwiseBiasRelu(AOT_ARGS);
int PointwiseBiasHardSigmoid(AOT_ARGS);
int DwConvS1Bias(AOT_ARGS);
int SpatialMean(AOT_ARGS);
int ChannelScale(AOT_ARGS);
}

namespace {

using Shape = std::array<int64_t, 4>;
using Entry = int (*)(AOT_ARGS);

// A tensor argument: data and shape (weights and biases pass their own shapes).
struct Arg {
  const float* data;
  const int64_t* shape;
};

// param(i): the entry point's i-th tensor.
struct Params {
  void** params;
  int64_t** shapes;
  Arg operator()(int i) const { return Arg{static_cast<const float*>(params[i]), shapes[i]}; }
};

// entry(args) as MindSpore calls it (inputs, then outputs).
int invoke(Entry entry, std::initializer_list<Arg> args) {
  void* params[8];
  int64_t* shapes[8];
  int count = 0;
  for (const Arg& arg : args) {
    params[count] = const_cast<float*>(arg.data);
    shapes[count] = const_cast<int64_t*>(arg.shape);
    ++count;
  }
  return entry(count, params, nullptr, shapes, nullptr, nullptr, nullptr);
}

// Intermediate tensors, the calling thread's (the workers write into them).
thread_local std::vector<float> t_first, t_second;

// Grows only: a resize to more elements writes zeros over them, a pass over
// memory the size of the tensor (at batch 32, 4-7% of the network's time
// when the two buffers took turns between a small and a large tensor).
float* buffer(std::vector<float>& storage, const Shape& shape) {
  const size_t floats = shape[0] * shape[1] * shape[2] * shape[3];
  if (storage.size() < floats) storage.resize(floats);
  return storage.data();
}

int dfc_gate(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  float* logits = static_cast<float*>(params[7]);
  const int64_t N = shapes[0][0], C_in = shapes[0][1], C_out = shapes[1][0];
  const Shape pooled_shape{N, C_in, shapes[0][2] / 2, shapes[0][3] / 2};
  const Shape gate_shape{N, C_out, pooled_shape[2], pooled_shape[3]};
  float* pooled = buffer(t_first, pooled_shape);
  float* projected = buffer(t_second, gate_shape);
  const Params param{params, shapes};
  int status = invoke(AvgPool2x2, {{x, shapes[0]}, {pooled, pooled_shape.data()}});
  status |= invoke(PointwiseBias, {{pooled, pooled_shape.data()}, param(1), param(2),
                                   {projected, gate_shape.data()}});
  float* horizontal = buffer(t_first, gate_shape);  // the pooled map is used up
  status |= invoke(DwConvS1Bias, {{projected, gate_shape.data()}, param(3), param(4),
                                  {horizontal, gate_shape.data()}});
  status |= invoke(DwConvS1Bias, {{horizontal, gate_shape.data()}, param(5), param(6),
                                  {logits, gate_shape.data()}});
  return status;
}

int squeeze_excite(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[5]);
  const int64_t N = shapes[0][0], C = shapes[0][1], reduced = shapes[1][0];
  const Shape mean_shape{N, C, 1, 1}, reduced_shape{N, reduced, 1, 1};
  float* mean = buffer(t_first, mean_shape);
  float* hidden = buffer(t_second, reduced_shape);
  const Params param{params, shapes};
  int status = invoke(SpatialMean, {{x, shapes[0]}, {mean, mean_shape.data()}});
  status |= invoke(PointwiseBiasRelu, {{mean, mean_shape.data()}, param(1), param(2),
                                       {hidden, reduced_shape.data()}});
  float* scale = mean;  // the mean is used up
  status |= invoke(PointwiseBiasHardSigmoid, {{hidden, reduced_shape.data()}, param(3), param(4),
                                              {scale, mean_shape.data()}});
  status |= invoke(ChannelScale, {{x, shapes[0]}, {scale, mean_shape.data()}, {y, shapes[0]}});
  return status;
}

// The primary 1x1 conv's product z, then TAIL(z, b1, w, b2[, extra]).
template <Entry TAIL, bool EXTRA>
int ghost_module(void** params, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const Shape z_shape{shapes[0][0], shapes[1][0], shapes[0][2], shapes[0][3]};
  float* z = buffer(t_first, z_shape);
  const Params param{params, shapes};
  int status = invoke(Pointwise, {{x, shapes[0]}, param(1), {z, z_shape.data()}});
  const Arg product{z, z_shape.data()};
  if (EXTRA)
    status |= invoke(TAIL, {product, param(2), param(3), param(4), param(5), param(6)});
  else
    status |= invoke(TAIL, {product, param(2), param(3), param(4), param(5)});
  return status;
}

}  // namespace

extern "C" {
int DfcGate(AOT_ARGS) { return dfc_gate(params, shapes); }
int SqueezeExcite(AOT_ARGS) { return squeeze_excite(params, shapes); }
int GhostModule(AOT_ARGS) { return ghost_module<GhostTail, false>(params, shapes); }
int GhostModuleRelu(AOT_ARGS) { return ghost_module<GhostTailRelu, false>(params, shapes); }
int GhostModuleGate(AOT_ARGS) { return ghost_module<GhostTailGate, true>(params, shapes); }
int GhostModuleReluGate(AOT_ARGS) { return ghost_module<GhostTailReluGate, true>(params, shapes); }
int GhostModuleResidual(AOT_ARGS) { return ghost_module<GhostTailResidual, true>(params, shapes); }
}
