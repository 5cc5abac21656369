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
//   GhostBottleneck[Dfc][Dw][Se][Sc](x, [dfc 6], ghost1 4, [dw 2], [se 4],
//       [shortcut 4], ghost2 4) -> out: a whole BN-folded bottleneck, each part
//       the entry point above that its cell runs alone: DfcGate, GhostModuleRelu
//       [Gate], DwConvS2Bias (Dw: the stride-2 depthwise conv), SqueezeExcite,
//       the shortcut (Sc: depthwise conv at the block's stride, then
//       PointwiseBias; else x itself) and GhostModuleResidual
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
int DwConvS2Bias(AOT_ARGS);
int SpatialMean(AOT_ARGS);
int ChannelScale(AOT_ARGS);
// This file's, composed by GhostBottleneck*.
int DfcGate(AOT_ARGS);
int SqueezeExcite(AOT_ARGS);
int GhostModuleRelu(AOT_ARGS);
int GhostModuleReluGate(AOT_ARGS);
int GhostModuleResidual(AOT_ARGS);
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

// The bottleneck's own intermediates: the parts above use t_first / t_second.
thread_local std::vector<float> t_block[4];

// The parts in GhostBottleneck.construct's order; params (inputs, then the
// output) in the order of the entry's comment at the top. At batch 1 this is
// one dispatch instead of 2-7 (ghostnetv2_100: 72 operators -> 21).
template <bool DFC, bool DW, bool SE, bool SC>
int ghost_bottleneck(void** params, int64_t** shapes) {
  const Params param{params, shapes};
  const Arg x = param(0);
  const int64_t N = x.shape[0], H = x.shape[2], W = x.shape[3];
  int i = 1, status = 0;
  Shape gate_shape{}, mid_shape{N, 0, H, W};
  float* gate = nullptr;
  if (DFC) {
    gate_shape = Shape{N, shapes[i][0], H / 2, W / 2};
    gate = buffer(t_block[0], gate_shape);
    status |= invoke(DfcGate, {x, param(i), param(i + 1), param(i + 2), param(i + 3),
                               param(i + 4), param(i + 5), {gate, gate_shape.data()}});
    i += 6;
  }
  mid_shape[1] = 2 * shapes[i][0];
  float* mid = buffer(t_block[1], mid_shape);
  if (DFC)
    status |= invoke(GhostModuleReluGate, {x, param(i), param(i + 1), param(i + 2), param(i + 3),
                                           {gate, gate_shape.data()}, {mid, mid_shape.data()}});
  else
    status |= invoke(GhostModuleRelu, {x, param(i), param(i + 1), param(i + 2), param(i + 3),
                                       {mid, mid_shape.data()}});
  i += 4;
  // At the block's stride: "same" padding, odd sizes rounded up.
  const int64_t OH = DW ? (H - 1) / 2 + 1 : H, OW = DW ? (W - 1) / 2 + 1 : W;
  if (DW) {
    const Shape strided_shape{N, mid_shape[1], OH, OW};
    float* strided = buffer(t_block[2], strided_shape);
    status |= invoke(DwConvS2Bias, {{mid, mid_shape.data()}, param(i), param(i + 1),
                                    {strided, strided_shape.data()}});
    std::swap(t_block[1], t_block[2]);  // the block's tensor stays in t_block[1]
    mid = strided;
    mid_shape = strided_shape;
    i += 2;
  }
  if (SE) {
    float* excited = buffer(t_block[2], mid_shape);
    status |= invoke(SqueezeExcite, {{mid, mid_shape.data()}, param(i), param(i + 1),
                                     param(i + 2), param(i + 3), {excited, mid_shape.data()}});
    std::swap(t_block[1], t_block[2]);
    mid = excited;
    i += 4;
  }
  Arg shortcut = x;
  Shape shortcut_shape{N, 0, OH, OW};
  if (SC) {
    const Shape thin_shape{N, x.shape[1], OH, OW};
    float* thin = buffer(t_block[0], thin_shape);  // the gate is used up
    status |= invoke(DW ? DwConvS2Bias : DwConvS1Bias,
                     {x, param(i), param(i + 1), {thin, thin_shape.data()}});
    shortcut_shape[1] = shapes[i + 2][0];
    float* wide = buffer(t_block[3], shortcut_shape);
    status |= invoke(PointwiseBias, {{thin, thin_shape.data()}, param(i + 2), param(i + 3),
                                     {wide, shortcut_shape.data()}});
    shortcut = Arg{wide, shortcut_shape.data()};
    i += 4;
  }
  status |= invoke(GhostModuleResidual, {{mid, mid_shape.data()}, param(i), param(i + 1),
                                         param(i + 2), param(i + 3), shortcut, param(i + 4)});
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
// GhostBottleneck + Dfc / Dw / Se / Sc, in that order, for each combination.
#define GHOST_BOTTLENECK(NAME, DFC, DW, SE, SC) \
  int NAME(AOT_ARGS) { return ghost_bottleneck<DFC, DW, SE, SC>(params, shapes); }
#define GHOST_BOTTLENECK_SC(NAME, DFC, DW, SE) \
  GHOST_BOTTLENECK(NAME, DFC, DW, SE, false) GHOST_BOTTLENECK(NAME##Sc, DFC, DW, SE, true)
#define GHOST_BOTTLENECK_SE(NAME, DFC, DW) \
  GHOST_BOTTLENECK_SC(NAME, DFC, DW, false) GHOST_BOTTLENECK_SC(NAME##Se, DFC, DW, true)
#define GHOST_BOTTLENECK_DW(NAME, DFC) \
  GHOST_BOTTLENECK_SE(NAME, DFC, false) GHOST_BOTTLENECK_SE(NAME##Dw, DFC, true)
GHOST_BOTTLENECK_DW(GhostBottleneck, false)
GHOST_BOTTLENECK_DW(GhostBottleneckDfc, true)
}
