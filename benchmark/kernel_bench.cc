// The CPU kernels alone at GhostNetV2-100's inference shapes (224x224): the
// hot ghost-module tails, depthwise and 1x1 (pointwise) convolutions, best of
// N calls, in us.
// Built from the sources with any flags, it compares instruction-set paths
// on one machine, e.g. the AVX path on an AVX-512 CPU:
//
//   cd src/kernels && for f in "" "-mno-avx512f" "-mno-avx512f -mno-avx2"; do
//     g++ -O3 -march=native $f -fopenmp-simd -pthread -std=c++17 -I. \
//         -o /tmp/kernel_bench ../../benchmark/kernel_bench.cc pool.cc depthwise.cc \
//         gating.cc batchnorm.cc pointwise.cc fused.cc && /tmp/kernel_bench 1 2; done
//
// Arguments: batch (default 1), threads (default 2). MEDIAN=1: medians instead.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define AOT(name) extern "C" int name(int, void**, int*, int64_t**, const char**, void*, void*);
AOT(GhostTailReluGate)
AOT(GhostTailRelu)
AOT(GhostTailResidual)
AOT(DwConvS2Bias)
AOT(DwConvS1Bias)
AOT(PointwiseBias)
AOT(SmallConvS2BiasRelu)
AOT(DfcGate)
extern "C" void SetNumThreads(int);

namespace {

using Kernel = int (*)(int, void**, int*, int64_t**, const char**, void*, void*);

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::mt19937 rng(0);

Tensor random_tensor(std::vector<int64_t> shape) {
  size_t count = 1;
  for (auto d : shape) count *= d;
  Tensor t{shape, std::vector<float>(count)};
  std::normal_distribution<float> normal;
  for (auto& v : t.data) v = normal(rng);
  return t;
}

// Inputs then outputs, as MindSpore passes them.
double time_us(Kernel kernel, std::vector<Tensor>& tensors, int calls) {
  std::vector<void*> params;
  std::vector<int64_t*> shapes;
  for (auto& t : tensors) {
    params.push_back(t.data.data());
    shapes.push_back(t.shape.data());
  }
  std::vector<double> times;
  for (int i = 0; i <= calls; ++i) {  // the first call warms up
    const auto start = std::chrono::steady_clock::now();
    kernel((int)params.size(), params.data(), nullptr, shapes.data(), nullptr, nullptr, nullptr);
    times.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  times.erase(times.begin());
  std::sort(times.begin(), times.end());
  return getenv("MEDIAN") ? times[times.size() / 2] : times[0];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? atoi(argv[1]) : 1;
  SetNumThreads(argc > 2 ? atoi(argv[2]) : 2);
  const int calls = N == 1 ? 200 : 10;
  double total = 0;
  // (name, kernel, C1, H, gate H or 0, residual): ghost modules' tails.
  auto tail = [&](const char* name, Kernel kernel, int64_t C, int64_t H, int64_t GH, bool residual) {
    std::vector<Tensor> t{random_tensor({N, C, H, H}), random_tensor({C}),
                          random_tensor({C, 1, 3, 3}), random_tensor({C})};
    if (GH) t.push_back(random_tensor({N, 2 * C, GH, GH}));
    if (residual) t.push_back(random_tensor({N, 2 * C, H, H}));
    t.push_back(random_tensor({N, 2 * C, H, H}));
    const double us = time_us(kernel, t, calls);
    total += us;
    printf("%-18s %4ldx%3ldx%3ld %9.1f us\n", name, (long)C, (long)H, (long)H, us);
  };
  tail("GhostTailRelu", GhostTailRelu, 24, 112, 0, false);
  tail("GhostTailReluGate", GhostTailReluGate, 36, 56, 28, false);
  tail("GhostTailReluGate", GhostTailReluGate, 120, 28, 14, false);
  tail("GhostTailReluGate", GhostTailReluGate, 336, 14, 7, false);
  tail("GhostTailReluGate", GhostTailReluGate, 480, 7, 3, false);
  tail("GhostTailResidual", GhostTailResidual, 40, 28, 0, true);
  tail("GhostTailResidual", GhostTailResidual, 80, 7, 0, true);
  auto depthwise = [&](const char* name, Kernel kernel, int64_t C, int64_t H, int64_t KH,
                       int64_t KW, int64_t S) {
    const int64_t OH = (H + 2 * (KH / 2) - KH) / S + 1, OW = (H + 2 * (KW / 2) - KW) / S + 1;
    std::vector<Tensor> t{random_tensor({N, C, H, H}), random_tensor({C, 1, KH, KW}),
                          random_tensor({C}), random_tensor({N, C, OH, OW})};
    const double us = time_us(kernel, t, calls);
    total += us;
    printf("%-18s %4ldx%3ldx%3ld %ldx%ld/%ld %9.1f us\n", name, (long)C, (long)H, (long)H,
           (long)KH, (long)KW, (long)S, us);
  };
  depthwise("DwConvS2Bias", DwConvS2Bias, 48, 112, 3, 3, 2);
  depthwise("DwConvS2Bias", DwConvS2Bias, 72, 56, 5, 5, 2);
  depthwise("DwConvS2Bias", DwConvS2Bias, 672, 14, 5, 5, 2);
  depthwise("DwConvS1Bias", DwConvS1Bias, 72, 28, 1, 5, 1);
  depthwise("DwConvS1Bias", DwConvS1Bias, 960, 3, 5, 1, 1);
  printf("sum %.1f us\n", total);
  // 1x1 convolutions (Cin, H, Cout), from each stage, the DFC branch and the SE block.
  double pointwise_total = 0;
  auto pointwise = [&](int64_t C, int64_t H, int64_t O) {
    std::vector<Tensor> t{random_tensor({N, C, H, H}), random_tensor({O, C, 1, 1}),
                          random_tensor({O}), random_tensor({N, O, H, H})};
    const double us = time_us(PointwiseBias, t, calls);
    pointwise_total += us;
    printf("%-18s %4ldx%3ldx%3ld ->%4ld %9.1f us\n", "PointwiseBias", (long)C, (long)H, (long)H,
           (long)O, us);
  };
  pointwise(16, 112, 24);
  pointwise(72, 56, 12);
  pointwise(40, 28, 120);
  pointwise(480, 14, 56);
  pointwise(160, 7, 480);
  pointwise(160, 3, 960);
  pointwise(960, 1, 240);
  printf("pointwise sum %.1f us\n", pointwise_total);
  // The stem: 3x3 stride-2 conv, 3 -> 16 channels, bias and ReLU.
  {
    std::vector<Tensor> t{random_tensor({N, 3, 224, 224}), random_tensor({16, 3, 3, 3}),
                          random_tensor({16}), random_tensor({N, 16, 112, 112})};
    printf("%-18s %4dx%3dx%3d ->%4d %9.1f us\n", "SmallConvS2BiasRelu", 3, 224, 224, 16,
           time_us(SmallConvS2BiasRelu, t, calls));
  }
  // DFC gates (pool, 1x1, 1x5, 5x1): input channels, map, gate channels.
  auto dfc = [&](int64_t C, int64_t H, int64_t O) {
    const int64_t P = H / 2;
    std::vector<Tensor> t{random_tensor({N, C, H, H}), random_tensor({O, C, 1, 1}),
                          random_tensor({O}), random_tensor({O, 1, 1, 5}), random_tensor({O}),
                          random_tensor({O, 1, 5, 1}), random_tensor({O}),
                          random_tensor({N, O, P, P})};
    printf("%-18s %4ldx%3ldx%3ld ->%4ld %9.1f us\n", "DfcGate", (long)C, (long)H, (long)H,
           (long)O, time_us(DfcGate, t, calls));
  };
  dfc(24, 56, 72);
  dfc(112, 14, 672);
  dfc(160, 7, 960);
  return 0;
}
