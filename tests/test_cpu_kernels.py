"""src/cpu_kernels.py: the custom CPU kernels compute what MindSpore's
operators compute (forward and gradients), in the cells and in the network."""
import ctypes
import shutil

import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from src.cpu_kernels import (COMPILE_FLAGS, AvgPool2x2, BatchNorm2d, ChannelScale, DenseConv2d,
                             DepthwiseConv2d, GateMultiply, GhostBottleneckKernel,
                             GhostModuleKernel, Linear, PointwiseConv2d, ResizeBilinear,
                             SmallConv2d, SpatialMean, UpsampleConcat, count_kernel_layers,
                             call_entry, forget_compiled_graphs, kernels_available, portable,
                             use_cpu_kernels, _cpu_flags)

pytestmark = [pytest.mark.skipif(shutil.which("g++") is None,
                                 reason="no g++: the CPU kernels cannot be built here"),
              pytest.mark.usefixtures("graph_mode")]
RNG = np.random.default_rng(0)


def tensor(*shape):
    return ms.Tensor(RNG.normal(size=shape).astype(np.float32))


class GradOfWeightedSum(nn.Cell):
    """Gradients of sum(cell(*inputs) * target) w.r.t. every input and weight."""

    def __init__(self, cell, num_inputs):
        super().__init__()
        self.cell = cell
        weights = cell.trainable_params()
        self.grad = ms.grad(self.loss, grad_position=tuple(range(num_inputs)),
                            weights=weights if weights else None)

    def loss(self, *args):
        *inputs, target = args
        return (self.cell(*inputs) * target).sum()

    def construct(self, *args):
        return self.grad(*args)


def flat_numpy(grads):
    if isinstance(grads, (tuple, list)):
        return [array for g in grads for array in flat_numpy(g)]
    return [grads.asnumpy()]


def assert_same_as_mindspore(make_cell, inputs, forward_tol=0.0, grad_tol=1e-5):
    """Kernel cell vs the same cell on MindSpore's operators (same weights)."""
    reference, kernel = make_cell(), make_cell()
    for ref_param, param in zip(reference.get_parameters(), kernel.get_parameters()):
        param.set_data(ref_param.data.copy())
    use_cpu_kernels(reference, False)
    use_cpu_kernels(kernel, True)
    assert kernel.use_kernel and not reference.use_kernel
    expected, actual = reference(*inputs).asnumpy(), kernel(*inputs).asnumpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=forward_tol)
    target = tensor(*expected.shape)
    expected_grads = flat_numpy(GradOfWeightedSum(reference, len(inputs))(*inputs, target))
    actual_grads = flat_numpy(GradOfWeightedSum(kernel, len(inputs))(*inputs, target))
    assert len(actual_grads) == len(expected_grads)
    for got, want in zip(actual_grads, expected_grads):
        np.testing.assert_allclose(got, want, rtol=0, atol=grad_tol * max(1.0, np.abs(want).max()))


def test_library_builds():
    """A compile error must fail here (with the compiler's message), not
    silently fall back to MindSpore's operators. Cached per source version."""
    from src.cpu_kernels import build_library
    assert build_library().endswith(".so")
    assert kernels_available()


# (input shape, kernel, stride): odd sizes, both strides, the 1x5 / 5x1 DFC kernels.
DEPTHWISE_CASES = [((2, 8, 9, 11), (3, 3), 1), ((2, 8, 9, 11), (3, 3), 2),
                   ((2, 8, 10, 12), (5, 5), 2), ((2, 8, 7, 7), (1, 5), 1),
                   ((2, 8, 7, 6), (5, 1), 1)]


@pytest.mark.parametrize("shape,kernel,stride", DEPTHWISE_CASES)
def test_depthwise_conv(shape, kernel, stride):
    padding = (kernel[0] // 2, kernel[0] // 2, kernel[1] // 2, kernel[1] // 2)
    assert_same_as_mindspore(
        lambda: DepthwiseConv2d(shape[1], kernel, stride, pad_mode="pad", padding=padding),
        [tensor(*shape)])


@pytest.mark.parametrize("size,gate_size", [((56, 56), (28, 28)), ((7, 7), (3, 3)),
                                            ((97, 131), (48, 65))])
def test_gate_multiply(size, gate_size):
    """Includes the non-2x ratios, where the kernel must use PyTorch's legacy indices."""
    assert_same_as_mindspore(GateMultiply, [tensor(2, 3, *size), tensor(2, 3, *gate_size)])


@pytest.mark.parametrize("cell,shape", [(SpatialMean, (2, 5, 7, 9)), (AvgPool2x2, (2, 5, 7, 9)),
                                        (AvgPool2x2, (2, 5, 8, 6))])
def test_pooling(cell, shape):
    assert_same_as_mindspore(cell, [tensor(*shape)], forward_tol=1e-6)


def test_channel_scale():
    assert_same_as_mindspore(ChannelScale, [tensor(2, 5, 7, 9), tensor(2, 5, 1, 1)])


@pytest.mark.parametrize("relu", [False, True])
def test_batchnorm_training(relu):
    """Batch statistics, running averages (MindSpore's rule: unbiased variance)
    and gradients in training mode; evaluation mode unchanged; with the ReLU
    applied in the same kernel or not."""
    def make_bn():
        bn = BatchNorm2d(6, relu=relu)
        bn.gamma.set_data(ms.Tensor(np.linspace(0.5, 1.5, 6, dtype=np.float32)))
        bn.beta.set_data(ms.Tensor(np.linspace(-0.2, 0.2, 6, dtype=np.float32)))
        return bn.set_train(True)
    x = ms.Tensor((RNG.normal(size=(4, 6, 9, 11)) * 2 + 1).astype(np.float32))
    reference, kernel = make_bn(), make_bn()
    assert_same_as_mindspore(lambda: make_bn(), [x], forward_tol=1e-5)
    use_cpu_kernels(reference, False)
    use_cpu_kernels(kernel, True)
    for bn in (reference, kernel):
        bn(x)
        bn(x * 0.5)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(kernel, name).asnumpy(),
                                   getattr(reference, name).asnumpy(), rtol=1e-5, atol=1e-6)
    for bn in (reference, kernel):
        bn.set_train(False)
    np.testing.assert_allclose(kernel(x).asnumpy(), reference(x).asnumpy(), atol=1e-5)


@pytest.mark.parametrize("activation", [None, "relu", "hard_sigmoid", "leaky_relu"])
def test_pointwise_conv(activation):
    """Inference forward (the kernel) and the gradients in eval mode (its bprop
    of MindSpore operators) vs MindSpore's Conv2D; 7x9: whole vectors, then a
    zero-padded one; 3 images."""
    def make_conv():
        return PointwiseConv2d(13, 19, has_bias=True, activation=activation).set_train(False)
    assert_same_as_mindspore(make_conv, [tensor(3, 13, 7, 9) * 2], forward_tol=1e-5)


@pytest.mark.parametrize("activation,kernel_size,has_bias,dilation", [
    ("leaky_relu", 3, True, 1), ("relu", (5, 3), True, 1), (None, 3, False, 1),
    ("relu", 3, True, 4)])
def test_dense_conv(activation, kernel_size, has_bias, dilation):
    """The dense convolution's kernel (YOLOv3's neck and head, DeepLabV3's
    dilated ASPP: inference, bias and activation inside) and its eval-mode
    gradients vs MindSpore's Conv2D; a 5x3 kernel; 11x9 planes (two tiles, the
    second ending inside a vector; dilation 4: taps reading only padding)."""
    def make_conv():
        kh, kw = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
        conv = DenseConv2d(13, 19, kernel_size, pad_mode="pad",
                           padding=(dilation * (kh // 2),) * 2 + (dilation * (kw // 2),) * 2,
                           dilation=dilation, has_bias=has_bias)
        if activation:
            conv.fuse_activation(activation)
        return conv.set_train(False)
    assert_same_as_mindspore(make_conv, [tensor(2, 13, 11, 9)], forward_tol=1e-5)


def test_dense_conv_geometries_outside_the_kernel_keep_mindspore():
    """Strided dense convs, or padded otherwise than d * (k // 2), are plain nn.Conv2d."""
    for conv in (DenseConv2d(4, 6, 3, stride=2, pad_mode="pad", padding=1),
                 DenseConv2d(4, 6, 3, pad_mode="pad", padding=1, dilation=2)):
        use_cpu_kernels(conv)
        assert not conv.use_kernel
        assert conv.set_train(False)(tensor(1, 4, 8, 8)).shape[1] == 6


def test_upsample_concat():
    """YOLOv3's neck join: the same values as ResizeNearestNeighbor + Concat
    (a copy: bit for bit), and its eval-mode gradients (sums of four)."""
    assert_same_as_mindspore(lambda: UpsampleConcat().set_train(False),
                             [tensor(2, 5, 3, 4), tensor(2, 7, 6, 8)])


def test_yolo_decode():
    """YOLOv3's box decoding as one kernel (three levels, an input that is not
    square) against its MindSpore operators."""
    from src.models.heads.yolov3_head import ANCHORS_320, STRIDES, YOLOV3Decode
    decode = YOLOV3Decode(ANCHORS_320, STRIDES, 2, 64, 96).set_train(False)
    maps = tuple(tensor(2, 21, 64 // s, 96 // s) * 2 for s in STRIDES)
    use_cpu_kernels(decode, False)
    want = decode(maps).asnumpy()
    use_cpu_kernels(decode, True)
    assert decode.use_kernel
    got = decode(maps).asnumpy()
    assert got.shape == want.shape == (2, 3 * (6 + 24 + 96), 7)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_resize_bilinear():
    """DeepLabV3's final resize (8x up; and a resize down, odd sizes) on the
    kernel vs ops.interpolate, and its eval-mode gradient."""
    for small, large in (((5, 6), (40, 48)), ((9, 7), (4, 11))):
        like = tensor(2, 1, *large)
        assert_same_as_mindspore(lambda: ResizeBilinear().set_train(False),
                                 [tensor(2, 3, *small), like], forward_tol=1e-5)


def test_linear():
    """The classifier's kernel (inference) and its eval-mode gradients vs MindSpore's MatMul."""
    assert_same_as_mindspore(lambda: Linear(37, 11).set_train(False), [tensor(3, 37)],
                             forward_tol=1e-5)


@pytest.mark.parametrize("relu", [False, True])
def test_small_conv(relu):
    """The stem's kernel (a dense 3x3 stride-2 conv over 3 channels, inference,
    bias and ReLU inside) and its eval-mode gradients vs MindSpore's Conv2D;
    odd input sizes (an odd last row and column at stride 2)."""
    def make_conv():
        conv = SmallConv2d(3, 10, 3, 2, pad_mode="pad", padding=1, has_bias=True)
        if relu:
            conv.fuse_relu()
        return conv.set_train(False)
    assert_same_as_mindspore(make_conv, [tensor(2, 3, 17, 20)], forward_tol=1e-5)


def test_pointwise_conv_trains_on_mindspore():
    """In training the cell runs MindSpore's Conv2D (no kernel in the graph)."""
    conv = PointwiseConv2d(4, 6, has_bias=True, activation="relu")
    use_cpu_kernels(conv, True)
    x = tensor(2, 4, 5, 5)
    conv.set_train(False)
    inference = conv(x).asnumpy()
    conv.set_train(True)
    np.testing.assert_allclose(conv(x).asnumpy(), inference, rtol=0, atol=1e-5)
    assert conv.use_kernel and not conv._on_kernel(x)


def test_pointwise_kernel_at_the_models_sizes():
    """The pointwise kernel against float64 numpy on every plane size of the
    classifiers at 224x224 (112x112 ... 7x7, the DFC branch's 3x3, the SE
    block's and head's 1x1: whole tiles, a padded last vector, the last pixel
    as dot products, dot products over the batch) and output channel counts
    with every remainder of the kernel's row blocks (up to 8 rows)."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    library.SetNumThreads(2)
    rng = np.random.default_rng(2)
    sizes = (112, 56, 28, 14, 7, 3, 1)
    for index, size in enumerate(sizes):
        for rows in (8 * index + 1 + index % 8, 8 * index + 8):
            depth = 16 + 24 * index
            x = rng.normal(size=(2, depth, size, size)).astype(np.float32)
            w = rng.normal(size=(rows, depth, 1, 1)).astype(np.float32)
            b = rng.normal(size=rows).astype(np.float32)
            want = np.einsum("ok,nkp->nop", w[:, :, 0, 0].astype(np.float64),
                             x.reshape(2, depth, -1)).reshape(2, rows, size, size)
            want = np.maximum(want + b[None, :, None, None], 0)
            got, = call_entry(library, "PointwiseBiasRelu", [x, w, b], [want.shape])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(),
                                       err_msg=f"{rows}x{depth} at {size}x{size}")


def test_unsupported_geometry_falls_back():
    conv = DepthwiseConv2d(4, 4, 1, pad_mode="same")  # even kernel: not in the kernels
    use_cpu_kernels(conv)
    assert not conv.use_kernel
    assert conv(tensor(1, 4, 8, 8)).shape == (1, 4, 8, 8)


def test_network_with_kernels_and_portable():
    """The whole network, unfused and fused, on kernels vs MindSpore's operators,
    at an odd input size (every DFC gate upsampled by a non-2x ratio);
    portable() switches every kernel off and back on."""
    from src.fuse import fuse_bn
    from src.ghostnetv2 import create_model

    net = create_model("ghostnetv2_100", num_classes=10)
    use_cpu_kernels(net, False)
    images = ms.Tensor(RNG.normal(size=(2, 3, 65, 81)).astype(np.float32))
    reference = net(images).asnumpy()
    use_cpu_kernels(net)
    # depthwise convs, DFC gates and pools, means, BatchNorms, SE scales, 1x1 convs, classifier, stem
    assert count_kernel_layers(net) == 69 + 14 + 14 + 8 + 122 + 7 + 67 + 1 + 1
    on_kernels = net(images).asnumpy()
    fuse_bn(net)
    modules = [cell for _, cell in net.cells_and_names() if isinstance(cell, GhostModuleKernel)]
    assert len(modules) == 32 and all(module.use_kernel for module in modules)
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, GhostBottleneckKernel)]
    assert len(blocks) == 16 and all(block.use_kernel for block in blocks)
    fused_layers = count_kernel_layers(net)
    fused = net(images).asnumpy()
    scale = np.abs(reference).max()
    assert np.abs(on_kernels - reference).max() <= 1e-5 * scale
    assert np.abs(fused - reference).max() <= 1e-4 * scale
    # A bottleneck's kernel gives its parts' kernels' bits (7 variants, odd maps).
    for block in blocks:
        block.use_kernel = False
    forget_compiled_graphs(net)
    np.testing.assert_array_equal(net(images).asnumpy(), fused)
    for block in blocks:
        block.use_kernel = True
    with portable(net):
        assert count_kernel_layers(net) == 0
    assert count_kernel_layers(net) == fused_layers


# (channels, size, gate size, relu, residual): the ghost modules of the fused
# network: 2x gates, odd gates (7 -> 3), gate planes smaller than one vector,
# widths that are not a multiple of the vector width.
GHOST_MODULE_CASES = [(5, (56, 56), (28, 28), True, False), (6, (7, 7), (3, 3), True, False),
                      (4, (13, 9), (6, 4), True, False), (3, (11, 17), None, True, False),
                      (5, (14, 14), None, False, True), (4, (9, 5), None, False, False)]


@pytest.mark.parametrize("channels,size,gate_size,relu,residual", GHOST_MODULE_CASES)
def test_ghost_module_kernel(channels, size, gate_size, relu, residual):
    """GhostModuleKernel's kernel vs its MindSpore operators (inference only, no
    gradient); gate logits up to +-40 cover the sigmoid's flat ends."""
    module = GhostModuleKernel(channels, 3, relu, gate=gate_size is not None, residual=residual)
    inputs = [tensor(2, 7, *size), tensor(channels, 7, 1, 1), tensor(channels),
              tensor(channels, 1, 3, 3), tensor(channels)]
    if gate_size is not None:
        inputs.append(ms.Tensor(RNG.uniform(-40, 40, (2, 2 * channels, *gate_size))
                                .astype(np.float32)))
    if residual:
        inputs.append(tensor(2, 2 * channels, *size))
    use_cpu_kernels(module, True)
    assert module.use_kernel
    actual = module(*inputs).asnumpy()
    use_cpu_kernels(module, False)
    expected = module(*inputs).asnumpy()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# ---- the library itself, called through MindSpore's AOT signature with ctypes
# (cpu_kernels.call_entry): no graph compilation, so every entry point is
# cheap to try on odd shapes.

# -march=native on a CPU with AVX, FMA and F16C but neither AVX2 nor AVX-512
# (an AMD EPYC of the CI, some virtual machines): what such a machine builds.
AVX_ONLY_FLAGS = tuple("-march=x86-64 -mavx -mfma -mf16c".split()) + tuple(
    flag for flag in COMPILE_FLAGS if not flag.startswith("-march"))


def kernel_calls():
    """(name, inputs, output shapes) for every entry point, on planes wider than
    a vector with odd tails, and big enough that the thread pool splits them."""
    rng = np.random.default_rng(1)

    def r(*shape):
        return rng.normal(size=shape).astype(np.float32)
    n, c, h, w = 4, 32, 45, 47  # N * C * H * W above the pool's kMinParallelCost
    x, dy = r(n, c, h, w), r(n, c, h, w)
    scalars = np.array([1e-5, 0.1], np.float32)
    gamma, beta, mean, var = r(c), r(c), r(c), np.abs(r(c)) + 0.5
    calls = []
    for k, s in ((3, 1), (5, 1), (3, 2), (5, 2)):
        oh, ow = (h - 1) // s + 1, (w - 1) // s + 1
        weight, dout = r(c, 1, k, k), r(n, c, oh, ow)
        calls += [(f"DwConvS{s}", [x, weight], [(n, c, oh, ow)]),
                  (f"DwConvS{s}BiasRelu", [x, weight, gamma], [(n, c, oh, ow)]),
                  (f"DwConvBackInputS{s}", [dout, weight, x], [x.shape]),
                  (f"DwConvBackWeightS{s}", [dout, x, weight], [weight.shape])]
    stats = [(c,)] * 4
    calls += [("BatchNormTrain", [x * 2 + 1, gamma, beta, mean, var, scalars], [x.shape] + stats),
              ("BatchNormTrainBack", [dy, x, gamma, mean, var, scalars], [x.shape, (c,), (c,)]),
              ("BatchNormTrainBackRelu", [dy, x, gamma, mean, var, scalars, x],
               [x.shape, (c,), (c,)]),
              ("BatchNormInferRelu", [x, gamma, beta, mean, var, scalars], [x.shape])]
    gate, scale = r(n, c, 23, 19), r(n, c, 1, 1)
    calls += [("GateMul", [x, gate], [x.shape]), ("GateMulBackGate", [dy, x, gate], [gate.shape]),
              ("SpatialMean", [x], [scale.shape]), ("SpatialMeanBack", [scale, x], [x.shape]),
              ("AvgPool2x2", [x], [(n, c, h // 2, w // 2)]),
              ("AvgPool2x2Back", [r(n, c, h // 2, w // 2), x], [x.shape]),
              ("ChannelScale", [x, scale], [x.shape]),
              ("ChannelScaleBack", [dy, x, scale], [scale.shape])]
    half, tail = x[:, :c // 2], [gamma[:c // 2], r(c // 2, 1, 3, 3), beta[:c // 2]]
    calls += [("GhostTailReluGate", [half] + tail + [gate], [x.shape]),
              ("GhostTailResidual", [half] + tail + [x], [x.shape])]
    # 45x47: whole tiles, then a padded vector; 7x7: the last pixel as dot
    # products; 1x1: dot products over the batch. 37 rows: a partial row block.
    for shape in ((n, c, h, w), (n, c, 7, 7), (n, 4 * c, 1, 1)):
        weight, bias = r(37, shape[1], 1, 1), r(37)
        out = (shape[0], 37, shape[2], shape[3])
        calls += [("Pointwise", [r(*shape), weight], [out]),
                  ("PointwiseBiasRelu", [r(*shape), weight, bias], [out]),
                  ("PointwiseBiasHardSigmoid", [r(*shape) * 3, weight, bias], [out])]
    # Small planes: the depthwise conv with channels in the vector lanes.
    small = r(n, c, 3, 3)
    calls.append(("DwConvS1Bias", [small, r(c, 1, 1, 5), r(c)], [small.shape]))
    tail = [r(n, c, 7, 7), r(c), r(c, 1, 3, 3), r(c)]
    calls.append(("GhostTailReluGate", tail + [r(n, 2 * c, 3, 3)], [(n, 2 * c, 7, 7)]))
    calls.append(("DenseBias", [r(n, 4 * c), r(37, 4 * c), r(37)], [(n, 37)]))
    # The dense convolutions: 3x3 over c channels (a partial row block, a
    # tile ending inside a vector), 5x3 unbiased on 7x7 planes, dilation 9;
    # LeakyReLU.
    one, nine = np.ones(1, np.float32), np.full(1, 9, np.float32)  # dilations
    calls += [("DenseConvS1BiasLeaky", [x, r(37, c, 3, 3), r(37), one], [(n, 37, h, w)]),
              ("DenseConvS1Relu", [x[:, :, :7, :7], r(9, c, 5, 3), one], [(n, 9, 7, 7)]),
              ("DenseConvS1BiasRelu", [x, r(37, c, 3, 3), r(37), nine], [(n, 37, h, w)]),
              ("PointwiseBiasLeaky", [x, r(37, c, 1, 1), r(37)], [(n, 37, h, w)]),
              ("UpsampleConcat", [gate, r(n, 5, 46, 38)], [(n, c + 5, 46, 38)]),
              ("ResizeBilinear", [gate, x[:, :1]], [(n, c, h, w)])]
    # YOLOv3's decoding: 3 anchors of 7 attributes on two levels, 39 pixels.
    rows = 3 * (6 * 5 + 3 * 3)
    calls.append(("YoloDecode", [r(n, 21, 6, 5), r(n, 21, 3, 3), r(rows, 2),
                                 np.abs(r(rows, 2)), np.abs(r(rows, 1))], [(n, rows, 7)]))
    # The stem's dense conv (3 input channels, 9 taps each), both strides.
    for s in (1, 2):
        out = (n, 7, (h - 1) // s + 1, (w - 1) // s + 1)
        calls += [(f"SmallConvS{s}", [x[:, :3], r(7, 3, 3, 3)], [out]),
                  (f"SmallConvS{s}BiasRelu", [x[:, :3], r(7, 3, 3, 3), r(7)], [out])]
    calls += [(name, inputs, [chain[-1][2]]) for name, inputs, chain in fused_chains(r, x)]
    # Whole bottlenecks: every part (stride 2: 45x47 -> 23x24; 16 channels
    # inside, 12 out), and the bare one (c channels throughout).
    module1, module2 = [r(8, c, 1, 1), r(8), r(8, 1, 3, 3), r(8)], [r(6, 16, 1, 1), r(6),
                                                                   r(6, 1, 3, 3), r(6)]
    dfc = [r(16, c, 1, 1), r(16), r(16, 1, 1, 5), r(16), r(16, 1, 5, 1), r(16)]
    se = [r(4, 16, 1, 1), r(4), r(16, 4, 1, 1), r(16)]
    shortcut = [r(c, 1, 5, 5), r(c), r(12, c, 1, 1), r(12)]
    bare = [r(c // 2, c, 1, 1), r(c // 2), r(c // 2, 1, 3, 3), r(c // 2)] * 2
    calls += [("GhostBottleneckDfcDwSeSc", [x] + dfc + module1 + [r(16, 1, 5, 5), r(16)] + se
               + shortcut + module2, [(n, 12, 23, 24)]),
              ("GhostBottleneck", [x] + bare, [x.shape])]
    return calls


def fused_chains(r, x):
    """(fused entry point, its inputs, [(entry, inputs) of the chain it stands
    for, the last one's output shape]): the DFC gate (x's 45x47: an odd pooled
    map), the SE block, a ghost module with its gate and one with a residual."""
    n, c, h, w = x.shape
    module = [r(c // 2, c, 1, 1), r(c // 2), r(c // 2, 1, 3, 3), r(c // 2)]
    gate_logits, residual = r(n, c, 23, 19), r(n, c, h, w)
    half = (n, c // 2, h, w)
    gate = (n, 24, h // 2, w // 2)
    dfc = [r(24, c, 1, 1), r(24), r(24, 1, 1, 5), r(24), r(24, 1, 5, 1), r(24)]
    se = [r(8, c, 1, 1), r(8), r(c, 8, 1, 1), r(c)]
    return [("DfcGate", [x] + dfc, [("AvgPool2x2", [x], (n, c, h // 2, w // 2)),
                                    ("PointwiseBias", [None] + dfc[0:2], gate),
                                    ("DwConvS1Bias", [None] + dfc[2:4], gate),
                                    ("DwConvS1Bias", [None] + dfc[4:6], gate)]),
            ("SqueezeExcite", [x] + se, [("SpatialMean", [x], (n, c, 1, 1)),
                                         ("PointwiseBiasRelu", [None] + se[0:2], (n, 8, 1, 1)),
                                         ("PointwiseBiasHardSigmoid", [None] + se[2:4],
                                          (n, c, 1, 1)),
                                         ("ChannelScale", [x, None], x.shape)]),
            ("GhostModuleReluGate", [x] + module + [gate_logits],
             [("Pointwise", [x, module[0]], half),
              ("GhostTailReluGate", [None] + module[1:] + [gate_logits], x.shape)]),
            ("GhostModuleResidual", [x] + module + [residual],
             [("Pointwise", [x, module[0]], half),
              ("GhostTailResidual", [None] + module[1:] + [residual], x.shape)])]


def test_fused_kernels_are_their_chains():
    """DfcGate and SqueezeExcite give bit-for-bit what the chain of kernels
    they fuse gives, each step fed the last one's output (None above)."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    library.SetNumThreads(2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 16, 45, 47)).astype(np.float32)
    for name, inputs, chain in fused_chains(lambda *shape: rng.normal(size=shape).astype(
            np.float32), x):
        value = None
        for step, step_inputs, shape in chain:
            step_inputs = [value if a is None else a for a in step_inputs]
            value, = call_entry(library, step, step_inputs, [shape])
        fused, = call_entry(library, name, inputs, [value.shape])
        np.testing.assert_array_equal(fused, value, err_msg=name)


@pytest.mark.parametrize("entry", ["DwConvS1", "DwConvS1BiasRelu"])
def test_depthwise_small_planes_are_the_plane_by_plane_sums(entry):
    """On planes of at most 16 pixels the depthwise kernel computes many
    channels at once (forward_small); it gives bit-for-bit what the kernel
    computes one plane at a time (one channel per call), partial channel
    blocks and 1x1 planes included."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    rng = np.random.default_rng(5)
    for channels, (h, w), (kh, kw) in ((37, (3, 3), (1, 5)), (37, (3, 3), (5, 1)),
                                       (20, (4, 4), (3, 3)), (16, (1, 1), (3, 3)),
                                       (33, (2, 5), (5, 5))):
        x = rng.normal(size=(2, channels, h, w)).astype(np.float32)
        weight = rng.normal(size=(channels, 1, kh, kw)).astype(np.float32)
        bias = rng.normal(size=channels).astype(np.float32)
        extra = [bias] if "Bias" in entry else []
        got, = call_entry(library, entry, [x, weight] + extra, [x.shape])
        for n in range(2):
            for c in range(channels):
                one, = call_entry(library, entry, [x[n:n + 1, c:c + 1], weight[c:c + 1]]
                                   + [b[c:c + 1] for b in extra], [(1, 1, h, w)])
                np.testing.assert_array_equal(got[n, c], one[0, 0],
                                              err_msg=f"{channels}x{h}x{w}, {kh}x{kw}, {n}/{c}")


@pytest.mark.parametrize("entry", ["GhostTail", "GhostTailRelu", "GhostTailGate",
                                   "GhostTailReluGate", "GhostTailResidual"])
def test_ghost_tail_small_planes_are_the_plane_by_plane_results(entry):
    """The same for the ghost-module tail (ghost_tail_small, planes of at
    most 64 pixels): every variant against one channel per call, with 2x,
    odd (5x9 from 3x4) and 1x1 gates and a partial channel block."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    rng = np.random.default_rng(6)
    for channels, (h, w), gate_size in ((37, (7, 7), (3, 3)), (16, (8, 8), (4, 4)),
                                        (20, (5, 9), (3, 4)), (33, (1, 1), (1, 1))):
        z, b1 = rng.normal(size=(2, channels, h, w)).astype(np.float32), rng.normal(size=channels)
        weight, b2 = rng.normal(size=(channels, 1, 3, 3)), rng.normal(size=channels)
        extra = []
        if "Gate" in entry:
            extra = [rng.uniform(-40, 40, (2, 2 * channels, *gate_size))]
        if "Residual" in entry:
            extra = [rng.normal(size=(2, 2 * channels, h, w))]
        got, = call_entry(library, entry, [z, b1, weight, b2] + extra,
                           [(2, 2 * channels, h, w)])
        for c in range(channels):
            halves = [c, channels + c]
            one, = call_entry(library, entry, [z[:, c:c + 1], b1[c:c + 1], weight[c:c + 1],
                                                b2[c:c + 1]] + [e[:, halves] for e in extra],
                               [(2, 2, h, w)])
            np.testing.assert_array_equal(got[:, halves], one,
                                          err_msg=f"{channels}x{h}x{w}, channel {c}")


def correlate(x, w, b, stride=1, dilation=1):
    """A dense convolution padded d * (k // 2) in float64: bias plus the taps' sums."""
    n, _, height, width = x.shape
    kh, kw = w.shape[2:]
    ph, pw = dilation * (kh // 2), dilation * (kw // 2)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (height - 1) // stride + 1, (width - 1) // stride + 1
    out = np.zeros((n, w.shape[0], oh, ow)) + b[None, :, None, None]
    for i in range(kh):
        for j in range(kw):
            top, left = i * dilation, j * dilation
            patch = padded[:, :, top:top + stride * oh:stride, left:left + stride * ow:stride]
            out += np.einsum("oc,nchw->nohw", w[:, :, i, j], patch)
    return out


def test_small_conv_kernel_against_numpy():
    """The dense small conv against a float64 correlation, both strides, an
    odd plane, 5x5 taps over 1 channel and 3x3 over 5 (45 taps)."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    rng = np.random.default_rng(4)
    for c_in, k, stride in ((3, 3, 2), (1, 5, 1), (5, 3, 1), (5, 3, 2)):
        x = rng.normal(size=(2, c_in, 13, 10)).astype(np.float32)
        w = rng.normal(size=(6, c_in, k, k)).astype(np.float32)
        b = rng.normal(size=6).astype(np.float32)
        want = correlate(x, w, b, stride)
        got, = call_entry(library, f"SmallConvS{stride}Bias", [x, w, b], [want.shape])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(),
                                   err_msg=f"{c_in} channels, {k}x{k}, stride {stride}")


def test_dense_conv_kernel_against_numpy():
    """The dense convolution's kernel against a float64 correlation on the
    planes YOLOv3 uses at 64-320 pixels (40x40 ... 2x2: many tiles, one, a
    vector's part) and odd ones (1x1, a 1-pixel-wide column), 3x3 and 1x5
    kernels, row counts with every remainder of the row blocks; dilations
    (DeepLabV3's ASPP: 12 / 24 / 36 on 64x64) whose outer taps read only
    padding for some tiles and for whole maps; 4100 input channels (passes
    over parts of the channels, with 16- and with 8-float vectors)."""
    from src.cpu_kernels import kernel_library
    library = ctypes.CDLL(kernel_library())
    library.SetNumThreads(2)
    rng = np.random.default_rng(5)
    cases = ((40, 40, 3, 3, 24, 1, 6), (20, 20, 3, 3, 17, 1, 6), (10, 10, 3, 3, 8, 1, 6),
             (2, 2, 3, 3, 3, 1, 6), (1, 1, 3, 3, 5, 1, 6), (9, 1, 1, 5, 11, 1, 6),
             (7, 13, 3, 3, 1, 1, 6), (32, 32, 3, 3, 9, 12, 6), (16, 20, 3, 3, 9, 18, 4),
             (5, 5, 3, 3, 7, 6, 4), (4, 4, 3, 3, 3, 2, 4100))
    for height, width, kh, kw, rows, dilation, channels in cases:
        x = rng.normal(size=(2, channels, height, width)).astype(np.float32)
        w = rng.normal(size=(rows, channels, kh, kw)).astype(np.float32)
        b = rng.normal(size=rows).astype(np.float32)
        want = correlate(x, w, b, dilation=dilation)
        want = np.maximum(0.1 * want, want)
        got, = call_entry(library, "DenseConvS1BiasLeaky",
                          [x, w, b, np.full(1, dilation, np.float32)], [want.shape])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max(),
                                   err_msg=f"{rows} rows, {kh}x{kw} dilation {dilation}, "
                                           f"{height}x{width}")


def run_kernels(library, threads):
    library.SetNumThreads(threads)
    return {name: call_entry(library, name, inputs, shapes)
            for name, inputs, shapes in kernel_calls()}


def test_kernels_are_deterministic_and_the_same_on_an_avx_only_cpu():
    """Every entry point writes all its outputs and gives bit-identical results
    on 1 and 5 threads (no sum depends on the thread pool's timing), and the
    library built as for a CPU without AVX2 / AVX-512 (8-float vectors, the
    remainder loops of 256-bit code) computes what this machine's build does.
    A seeded training run depends on both."""
    from src.cpu_kernels import build_library
    native = ctypes.CDLL(build_library())  # both builds cached like the library itself
    single, threaded = run_kernels(native, 1), run_kernels(native, 5)
    for name, outputs in single.items():
        for one, five in zip(outputs, threaded[name]):
            assert np.isfinite(one).all(), f"{name} left outputs unwritten"
            np.testing.assert_array_equal(one, five, err_msg=f"{name}: 1 vs 5 threads")
    if not {"avx", "fma", "f16c"} <= set(_cpu_flags().split()):
        pytest.skip("this CPU cannot run an AVX + FMA build")
    avx_only = run_kernels(ctypes.CDLL(build_library(flags=AVX_ONLY_FLAGS)), 3)
    for name, outputs in single.items():
        for want, got in zip(outputs, avx_only[name]):
            assert np.isfinite(got).all(), f"{name} (AVX-only build) left outputs unwritten"
            np.testing.assert_allclose(got, want, rtol=1e-5,
                                       atol=1e-5 * np.abs(want).max(), err_msg=name)


def test_spinning_and_sleeping_workers_compute_the_same():
    """Workers that spin for the next job (inference) and workers that sleep
    at once (training, crowded machine) give bit-identical outputs, many jobs
    in a row; set_spin_wait sets what the library reads back."""
    from src.cpu_kernels import build_library, set_spin_wait
    native = ctypes.CDLL(build_library())
    native.SetSpinWait(0)
    sleeping = run_kernels(native, 3)
    native.SetSpinWait(100)
    spinning = run_kernels(native, 3)
    for name, outputs in sleeping.items():
        for want, got in zip(outputs, spinning[name]):
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: spinning workers")
    set_spin_wait(7)
    assert native.GetSpinWait() == 7
    set_spin_wait(100)
    with pytest.raises(ValueError):
        set_spin_wait(-1)
