"""Fast CPU kernels for GhostNetV2: MindSpore custom (AOT) operators.

MindSpore 2.7.2 runs every depthwise convolution through oneDNN in plain NCHW
layout, where oneDNN falls back to im2col + GEMM per channel; its CPU
BatchNorm, nearest resize, spatial mean and small pooling run far below
memory bandwidth; and each operator is a separate pass over the feature map.
``src/kernels/*.cc`` computes the same operations (forward, and the gradients
for training) with vectorised loops on a small thread pool, several fused
into one pass. Measured effect and profile: benchmark/RESULTS.md.

The kernel-backed cells (no parameters beyond those of the MindSpore cell
they stand for, so parameter names and shapes are those of the plain model):

- ``DepthwiseConv2d``: an ``nn.Conv2d`` for depthwise convolutions with odd
  kernels up to 7x7, stride 1 or 2, padding k // 2;
- ``PointwiseConv2d``: an ``nn.Conv2d`` for 1x1 convolutions with an optional
  ReLU, hard sigmoid or LeakyReLU (the kernel in inference, MindSpore's Conv2D
  in training);
- ``DenseConv2d``: a dense ``nn.Conv2d`` (odd kernel, stride 1, padding
  d * (k // 2) for dilation d: the YOLOv3 neck's and head's 3x3 convs,
  DeepLabV3's ASPP), the same in inference;
- ``SmallConv2d``: a dense ``nn.Conv2d`` with in_channels * kh * kw <= 49
  (the stem), inference only, with its bias and ReLU;
- ``Linear``: an ``nn.Dense`` with a bias (the classifier; the same, MatMul);
- ``BatchNorm2d``: an ``nn.BatchNorm2d``, training and evaluation, optionally
  with the following ReLU;
- ``GateMultiply``: ``out * nearest_upsample(gate)`` (PyTorch's legacy indices);
- ``SpatialMean``: mean over H, W (keeping 1 x 1);
- ``AvgPool2x2``: ``nn.AvgPool2d(2, 2)``;
- ``UpsampleConcat``: ``cat((nearest_2x_upsample(a), b), 1)`` (YOLOv3's neck);
- ``ResizeBilinear``: ``x`` resized bilinearly to the size of ``like``
  (DeepLabV3's final resize);
- ``ChannelScale``: ``x * scale`` with a per-channel scale (SE);
- ``GhostModuleKernel``, ``DfcGate``, ``SqueezeExciteKernel``,
  ``GhostBottleneckKernel``: a BN-folded ghost module, its DFC branch, an SE
  block, a whole bottleneck, each as one kernel (inference).

Each cell runs its kernel when ``use_kernel`` is on and the input is float32,
and MindSpore's operators otherwise (same results up to float32 rounding; the
depthwise convolution and the gate forward are bit-identical).

On by default for networks built while the device target is CPU
(``GHOSTNETV2_CPU_KERNELS=0`` turns that off); for one network:

    from src.cpu_kernels import use_cpu_kernels
    use_cpu_kernels(net, False)   # or True

MindSpore's ONNX and AIR exporters cannot write a custom operator, and a
MINDIR holding one runs only where the same library exists: export under
``with portable(net, file_format): ...`` (export.py does) for files of
standard operators, under ``with with_kernels(net): ...`` (export.py
--cpu_kernels) for a MINDIR that keeps the kernels.

The library is compiled once per machine with g++ into
``$GHOSTNETV2_KERNEL_DIR`` (default ``~/.cache/ghostnetv2_kernels``), for the
machine's vector width (AVX-512, AVX / AVX2, SSE: ``kLanes`` in
``kernels/common.h``; ``GHOSTNETV2_KERNEL_CFLAGS="-mno-avx512f -mno-avx2"``
builds the AVX path on an AVX-512 machine, e.g. to test it); without
g++ (or on a non-CPU target) the cells keep MindSpore's operators and a
warning says why.
"""
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

import mindspore as ms
from mindspore import dtype as mstype
from mindspore import nn, ops

__all__ = ["DepthwiseConv2d", "PointwiseConv2d", "DenseConv2d", "SmallConv2d", "DfcGate",
           "SqueezeExciteKernel", "UpsampleConcat", "ResizeBilinear", "resize_bilinear",
           "bilinear_matrix",
           "ActivatedConv", "LEAKY_SLOPE",
           "GhostBottleneckKernel", "Linear", "BatchNorm2d", "BroadcastMultiply", "GateMultiply",
           "SpatialMean",
           "AvgPool2x2", "ChannelScale", "GhostModuleKernel", "KernelSwitch", "use_cpu_kernels",
           "portable", "with_kernels", "count_kernel_layers", "set_num_threads", "set_spin_wait",
           "kernels_available", "kernel_library", "build_library", "forget_compiled_graphs",
           "call_entry", "custom_op", "enabled_by_default",
           "KernelBuildError"]

logger = logging.getLogger(__name__)

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
SOURCES = tuple(os.path.join(KERNEL_DIR, name)
                for name in ("pool.cc", "depthwise.cc", "gating.cc", "batchnorm.cc",
                             "pointwise.cc", "fused.cc", "yolo_decode.cc"))
HEADERS = tuple(os.path.join(KERNEL_DIR, name) for name in ("thread_pool.h", "common.h"))
# -march=native: the library is built on, and for, the machine that runs it
# (the cache key includes the CPU's flags).
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-pthread", "-std=c++17", "-shared",
                 "-fPIC")
ENABLE_ENV = "GHOSTNETV2_CPU_KERNELS"
# Extra g++ flags, e.g. "-mno-avx512f -mno-avx2" to build (and test) the AVX
# code path on an AVX-512 machine; part of the cache key.
EXTRA_FLAGS_ENV = "GHOSTNETV2_KERNEL_CFLAGS"
MAX_KERNEL_TAPS = 49  # kMaxTaps of depthwise.cc: up to 7x7
LEAKY_SLOPE = 0.1  # kLeakySlope of pointwise.cc: the "leaky_relu" activation
CACHE_ENV = "GHOSTNETV2_KERNEL_DIR"


class KernelBuildError(RuntimeError):
    pass


_library = {"path": None, "tried": False}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return ""


def _cache_dir():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "ghostnetv2_kernels")


def _compile_flags():
    return COMPILE_FLAGS + tuple(os.environ.get(EXTRA_FLAGS_ENV, "").split())


def _build_key(flags):
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        with open(name, "rb") as source:
            digest.update(source.read())
    digest.update(" ".join(flags).encode() + _cpu_flags().encode())
    return digest.hexdigest()[:16]


def build_library(out_dir=None, flags=None):
    """Compile src/kernels into out_dir (cached by sources, flags and CPU); return the .so path.

    flags: the compiler flags (default COMPILE_FLAGS plus $GHOSTNETV2_KERNEL_CFLAGS;
    the tests build an AVX-only variant with them)."""
    flags = _compile_flags() if flags is None else tuple(flags)
    compiler = shutil.which("g++")
    if compiler is None:
        raise KernelBuildError("g++ not found (install build-essential to get the fast "
                               "CPU kernels)")
    out_dir = out_dir or _cache_dir()
    path = os.path.join(out_dir, f"ghostnetv2_kernels_{_build_key(flags)}.so")
    if os.path.isfile(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    # Compile to a temporary name, then rename: concurrent processes (msrun
    # workers) never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    command = [compiler, *flags, "-I", KERNEL_DIR, "-o", tmp, *SOURCES]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(tmp)
        raise KernelBuildError(f"compiling the CPU kernels failed:\n{' '.join(command)}\n"
                               f"{result.stderr}")
    os.replace(tmp, path)
    logger.info("built the CPU kernels: %s", path)
    return path


def kernel_library():
    """Path of the compiled kernel library, or None where it cannot be used."""
    if not _library["tried"]:
        _library["tried"] = True
        try:
            _library["path"] = build_library()
        except (KernelBuildError, OSError) as err:
            logger.warning("fast CPU kernels unavailable, using MindSpore's own operators: %s",
                           err)
    return _library["path"]


# (nparam, params, ndims, shapes, dtypes, stream, extra): how MindSpore calls
# an AOT custom CPU operator (kernels/common.h, AOT_ARGS).
AOT_SIGNATURE = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_int),
                 ctypes.POINTER(ctypes.POINTER(ctypes.c_int64)), ctypes.c_void_p,
                 ctypes.c_void_p, ctypes.c_void_p]


def call_entry(library, name, inputs, output_shapes):
    """Entry point ``name`` of a loaded kernel library (``ctypes.CDLL``) on
    numpy inputs, as MindSpore calls it, without a graph: the outputs (float32
    arrays of ``output_shapes``) start as NaN, so a value the kernel never
    writes shows. For the kernels' tests and benchmarks."""
    arrays = [np.ascontiguousarray(a, np.float32) for a in inputs]
    arrays += [np.full(shape, np.nan, np.float32) for shape in output_shapes]
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    function = getattr(library, name)
    function.argtypes, function.restype = AOT_SIGNATURE, ctypes.c_int
    status = function(len(arrays), (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays]),
                      (ctypes.c_int * len(arrays))(*[a.ndim for a in arrays]),
                      (ctypes.POINTER(ctypes.c_int64) * len(arrays))(*shapes), None, None, None)
    if status != 0:
        raise RuntimeError(f"kernel entry {name} returned {status} (inputs "
                           f"{[a.shape for a in arrays[:len(inputs)]]})")
    return arrays[len(inputs):]


def kernels_available():
    """True where the kernels can run: CPU target and the library built."""
    if ms.get_context("device_target") != "CPU":
        return False
    return kernel_library() is not None


def enabled_by_default():
    return os.environ.get(ENABLE_ENV, "1") != "0" and kernels_available()


def set_num_threads(num_threads):
    """Threads the kernels use (default: all cores); set it with MindSpore's op threads."""
    _set_pool("SetNumThreads", "num_threads", num_threads, minimum=1)


def _set_pool(entry, name, value, minimum):
    """Call the library's pool setter ``entry`` (nothing without the library)."""
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    path = kernel_library()
    if path is not None:
        getattr(ctypes.CDLL(path), entry)(int(value))


def set_spin_wait(microseconds):
    """How long the kernels' idle workers spin for the next job before sleeping
    (default 100 us: at batch 1 waking a sleeping worker costs more than the
    job). 0 sleeps at once: for training, where MindSpore's threads need the
    cores. The workers never spin while the load average exceeds the cores."""
    _set_pool("SetSpinWait", "microseconds", microseconds, minimum=0)


def _supports(conv):
    """Geometry of the depthwise kernels: depthwise, odd kernel up to 7x7, stride 1/2, padding k//2."""
    kh, kw = conv.kernel_size  # nn.Conv2d stores kernel_size, stride, dilation as pairs
    if conv.group != conv.in_channels or conv.in_channels != conv.out_channels:
        return False
    return kh * kw <= MAX_KERNEL_TAPS and _padded_like_pytorch(conv)


def _padded_like_pytorch(conv, dilated=False):
    """Odd kernel, stride 1 or 2 (both ways), NCHW, padding d * (k // 2) on
    every side for dilation d, which must be 1 unless ``dilated`` (the same in
    both directions): the geometry the correlation kernels implement."""
    kh, kw = conv.kernel_size
    stride = conv.stride[0]
    dilation = conv.dilation[0]
    if kh % 2 == 0 or kw % 2 == 0:
        return False
    if conv.stride[1] != stride or stride not in (1, 2):
        return False
    if conv.dilation[1] != dilation or (dilation != 1 and not dilated) or \
            conv.data_format != "NCHW":
        return False
    if conv.pad_mode == "same":
        return stride == 1  # 'same' at stride 1 with an odd kernel is padding d * (k // 2)
    if conv.pad_mode == "pad":
        pad = (conv.padding,) * 4 if isinstance(conv.padding, int) else tuple(conv.padding)
        return pad == (dilation * (kh // 2),) * 2 + (dilation * (kw // 2),) * 2
    return False


def _output_size(size, kernel, stride):
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def custom_op(library, name, out_shape, bprop=None, outputs=1):
    """A custom operator whose outputs have the first input's dtype."""
    def out_dtype(*dtypes):
        return dtypes[0] if outputs == 1 else (dtypes[0],) * outputs
    return ops.Custom(f"{library}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                      func_type="aot", bprop=bprop)


class KernelSwitch:
    """Mixin: a cell that runs a custom kernel when ``use_kernel`` is on and a
    MindSpore formulation of the same operation otherwise (also for inputs
    that are not float32: the kernels are float32 only)."""

    def set_kernel(self, enabled):
        """Use the custom kernel (where supported) or MindSpore's operators."""
        library = kernel_library() if enabled and kernels_available() else None
        self.use_kernel = library is not None and self.kernel_supported()
        if self.use_kernel:
            self.make_kernels(library)

    def refresh(self):
        """Pick the kernel variant again after the cell's configuration changed."""
        self.set_kernel(self.use_kernel)

    def kernel_supported(self):
        return True

    def make_kernels(self, library):
        raise NotImplementedError


class ConvKernel(KernelSwitch):
    """Mixin of the convolution cells (nn.Conv2d subclasses): ``self.kernel``
    computes the convolution, its bias and its activation. Cells with a
    ``relu`` flag (depthwise, small dense) get it from ``fuse_relu``;
    PointwiseConv2d has its own (an ``activation``)."""

    def convolve(self, x, on_kernel):
        """The kernel's output (activation included), or MindSpore's
        convolution and bias (the caller applies the activation)."""
        if on_kernel:
            if self.has_bias:
                return self.kernel(x, self.weight, self.bias)
            return self.kernel(x, self.weight)
        out = self.conv2d(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out

    def convolve_relu(self, x, on_kernel):
        """convolve(), then ReLU where ``relu`` is set (the kernel applies it itself)."""
        out = self.convolve(x, on_kernel)
        if self.relu and not on_kernel:
            out = ops.relu(out)
        return out

    def fuse_relu(self):
        """Apply ReLU in this layer (the ReLU layer after it is then removed)."""
        self.relu = True
        self.refresh()


class DepthwiseConv2d(ConvKernel, nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, stride, group=channels, ...)``
    computed by the custom CPU kernels where supported (dilated ones, as in a
    segmentation backbone, always run MindSpore's operator).

    ``relu`` (set by ``fuse_bn``) applies ReLU after the bias, inside the kernel.
    """

    def __init__(self, channels, kernel_size, stride=1, pad_mode="same", padding=0,
                 has_bias=False, dilation=1):
        super().__init__(channels, channels, kernel_size, stride, pad_mode=pad_mode,
                         padding=padding, dilation=dilation, group=channels, has_bias=has_bias)
        self.relu = False
        self.set_kernel(enabled_by_default())

    def kernel_supported(self):
        return _supports(self)

    def make_kernels(self, library):
        stride = self.stride[0]
        suffix = f"S{stride}"
        self.backward_input = custom_op(library, f"DwConvBackInput{suffix}",
                                        lambda dy, w, x: x)
        self.backward_weight = custom_op(library, f"DwConvBackWeight{suffix}",
                                         lambda dy, x, w: w)

        def out_shape(x, w, *bias):
            return [x[0], x[1], _output_size(x[2], w[2], stride), _output_size(x[3], w[3], stride)]

        name = "DwConv" + suffix + ("Bias" if self.has_bias else "") + ("Relu" if self.relu else "")
        self.kernel = custom_op(library, name, out_shape, self._bprop_bias if self.has_bias
                                else self._bprop)

    def _bprop(self, x, weight, out, dout):
        return self.backward_input(dout, weight, x), self.backward_weight(dout, x, weight)

    def _bprop_bias(self, x, weight, bias, out, dout):
        if self.relu:
            dout = dout * (out > 0).astype(dout.dtype)
        return (self.backward_input(dout, weight, x), self.backward_weight(dout, x, weight),
                dout.sum((0, 2, 3)))

    def construct(self, x):
        return self.convolve_relu(x, self.use_kernel and x.dtype == mstype.float32)


class ActivatedConv(ConvKernel):
    """Mixin of the convolution cells on the matrix-product kernels
    (PointwiseConv2d, DenseConv2d): ``activation`` after the bias, inside the
    kernel in inference (the cell not training, float32). None, "relu" (the
    SE block's reduction, a folded BatchNorm + ReLU, set by ``fuse_relu``),
    "hard_sigmoid", ``relu6(x + 3) / 6`` (the SE block's gate), or
    "leaky_relu", ``max(0.1 x, x)`` (YOLOv3's LeakyReLU, slope 0.1; set by
    ``fuse_activation``). Training runs MindSpore's Conv2D."""
    ACTIVATIONS = {None: "", "relu": "Relu", "hard_sigmoid": "HardSigmoid",
                   "leaky_relu": "Leaky"}
    # Activations the kernels have without a bias (the others need one).
    WITHOUT_BIAS = (None, "relu")

    def check_activation(self, activation):
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activation must be one of "
                             f"{list(self.ACTIVATIONS)}, got {activation!r}")
        return activation

    def kernel_name(self, base):
        return base + ("Bias" if self.has_bias else "") + self.ACTIVATIONS[self.activation]

    def activation_supported(self):
        return self.has_bias or self.activation in self.WITHOUT_BIAS

    def _through_activation(self, out, dout):
        if self.activation == "relu":
            return dout * (out > 0).astype(dout.dtype)
        if self.activation == "hard_sigmoid":
            return dout * ((out > 0) & (out < 1)).astype(dout.dtype) / 6.0
        if self.activation == "leaky_relu":
            return dout * ((out > 0).astype(dout.dtype) * (1 - LEAKY_SLOPE) + LEAKY_SLOPE)
        return dout

    def fuse_relu(self):
        """Apply ReLU in this layer (the ReLU layer after it is then removed)."""
        self.fuse_activation("relu")

    def fuse_activation(self, activation):
        """Apply ``activation`` in this layer (the caller removes its own)."""
        self.activation = self.check_activation(activation)
        self.refresh()

    def _on_kernel(self, x):
        return self.use_kernel and not self.training and x.dtype == mstype.float32

    def construct(self, x):
        on_kernel = self._on_kernel(x)
        out = self.convolve(x, on_kernel)
        if on_kernel:
            return out
        if self.activation == "relu":
            out = ops.relu(out)
        elif self.activation == "hard_sigmoid":
            out = ops.relu6(out + 3.0) / 6.0
        elif self.activation == "leaky_relu":
            out = ops.leaky_relu(out, LEAKY_SLOPE)
        return out


class PointwiseConv2d(ActivatedConv, nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels, 1)`` (stride 1, one group; same
    parameters) computed by the pointwise kernel in inference: MindSpore's
    oneDNN Conv2D took ~45% of the fused network's operator time at batch 1
    (benchmark/RESULTS.md). ``activation``: see ActivatedConv.
    """

    def __init__(self, in_channels, out_channels, has_bias=False, activation=None):
        super().__init__(in_channels, out_channels, 1, has_bias=has_bias)
        self.activation = self.check_activation(activation)
        self.transposed = ops.Conv2D(out_channel=in_channels, kernel_size=1)
        self.set_kernel(enabled_by_default())

    def kernel_supported(self):
        return self.activation_supported()

    def make_kernels(self, library):
        def out_shape(x, w, *bias):
            return [x[0], w[0], x[2], x[3]]
        self.kernel = custom_op(library, self.kernel_name("Pointwise"), out_shape,
                                self._bprop_bias if self.has_bias else self._bprop)

    def _linear_grads(self, x, weight, dout):
        """dx = w^T dy per pixel, dw = the sum over images and pixels of dy x^T
        (gradients in eval mode, e.g. a frozen backbone; training runs
        MindSpore's Conv2D)."""
        dx = self.transposed(dout, weight.transpose(1, 0, 2, 3))
        rows, depth = weight.shape[0], weight.shape[1]
        dw = ops.matmul(dout.transpose(1, 0, 2, 3).reshape(rows, -1),
                        x.transpose(1, 0, 2, 3).reshape(depth, -1).T)
        return dx, dw.reshape(weight.shape)

    def _bprop(self, x, weight, out, dout):
        return self._linear_grads(x, weight, self._through_activation(out, dout))

    def _bprop_bias(self, x, weight, bias, out, dout):
        dout = self._through_activation(out, dout)
        return self._linear_grads(x, weight, dout) + (dout.sum((0, 2, 3)),)


class DenseConv2d(ActivatedConv, nn.Conv2d):
    """A dense ``nn.Conv2d`` (one group; same parameters): in inference, where
    it has an odd kernel, stride 1 and padding d * (k // 2) for its dilation
    d, the matrix-product kernel over columns gathered tile by tile
    (pointwise.cc's implicit im2col; taps that read only padding skipped):
    MindSpore's oneDNN Conv2D ran the YOLOv3 neck's and head's 3x3
    convolutions 3x slower than onnxruntime and gains nothing from the
    padding taps of DeepLabV3's dilated ones (benchmark/RESULTS.md). Strided
    convolutions and training run MindSpore's Conv2D. ``activation``: see
    ActivatedConv.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad_mode="same",
                 padding=0, dilation=1, has_bias=False, activation=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode,
                         padding=padding, dilation=dilation, has_bias=has_bias)
        self.activation = self.check_activation(activation)
        self.backward_input = None
        if self.stride[0] == 1 and _padded_like_pytorch(self, dilated=True):
            (kh, kw), d = self.kernel_size, self.dilation[0]
            self.backward_input = ops.Conv2DBackpropInput(
                out_channels, self.kernel_size, pad_mode="pad",
                pad=(d * (kh // 2),) * 2 + (d * (kw // 2),) * 2, dilation=d)
        # The kernel's last input: its dilation, as data (a kernel sees only
        # its inputs' shapes and values).
        self.dilation_value = ms.Tensor(np.array([self.dilation[0]], np.float32))
        self.set_kernel(enabled_by_default())

    def kernel_supported(self):
        return (self.group == 1 and self.backward_input is not None
                and self.activation_supported())

    def make_kernels(self, library):
        def out_shape(x, w, *bias_dilation):
            return [x[0], w[0], x[2], x[3]]
        self.kernel = custom_op(library, self.kernel_name("DenseConvS1"), out_shape,
                                self._bprop_bias if self.has_bias else self._bprop)

    def convolve(self, x, on_kernel):
        if not on_kernel:
            return super().convolve(x, False)
        if self.has_bias:
            return self.kernel(x, self.weight, self.bias, self.dilation_value)
        return self.kernel(x, self.weight, self.dilation_value)

    def _grads(self, x, weight, out, dout):
        dout = self._through_activation(out, dout)
        return dense_conv_grads(self.backward_input, self.kernel_size, 1, x, weight, dout,
                                self.dilation[0]) + (dout,)

    def _bprop(self, x, weight, dilation, out, dout):
        dx, dw, _ = self._grads(x, weight, out, dout)
        return dx, dw, ops.zeros_like(dilation)

    def _bprop_bias(self, x, weight, bias, dilation, out, dout):
        dx, dw, dout = self._grads(x, weight, out, dout)
        return dx, dw, dout.sum((0, 2, 3)), ops.zeros_like(dilation)


def dense_conv_grads(backward_input, kernel_size, stride, x, weight, dout, dilation=1):
    """dx, dw of a dense convolution padded d * (k // 2) (gradients in eval
    mode, e.g. a frozen stem or neck): ``backward_input`` (MindSpore's
    Conv2DBackpropInput of that geometry) for dx; dw[i, j] as the correlation
    of the padded input with dout (dilated by the stride) at offset (i d, j d)."""
    kh, kw = kernel_size
    ph, pw = dilation * (kh // 2), dilation * (kw // 2)
    padded = ops.pad(x, (pw, pw, ph, ph))
    dw = ops.conv2d(padded.transpose(1, 0, 2, 3), dout.transpose(1, 0, 2, 3),
                    dilation=stride)[:, :, ::dilation, ::dilation][:, :, :kh, :kw]
    return backward_input(dout, weight, x.shape), dw.transpose(1, 0, 2, 3)


class SmallConv2d(ConvKernel, nn.Conv2d):
    """A dense ``nn.Conv2d`` (one group) with few taps in all, in_channels * kh
    * kw <= 49 (the stem: 3x3 over the 3 colour channels, stride 2), computed
    in inference by a direct-convolution kernel with its bias and ReLU; in
    MindSpore it is oneDNN's Conv2D in plain NCHW, a BiasAdd and a ReLU.
    Training runs MindSpore's Conv2D. ``relu`` as in DepthwiseConv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad_mode="same",
                 padding=0, has_bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode,
                         padding=padding, has_bias=has_bias)
        self.relu = False
        kh, kw = self.kernel_size
        self.backward_input = ops.Conv2DBackpropInput(out_channels, self.kernel_size,
                                                      pad_mode="pad",
                                                      pad=(kh // 2, kh // 2, kw // 2, kw // 2),
                                                      stride=self.stride[0])
        self.set_kernel(enabled_by_default())

    def kernel_supported(self):
        kh, kw = self.kernel_size
        return (self.group == 1 and self.in_channels * kh * kw <= MAX_KERNEL_TAPS
                and _padded_like_pytorch(self) and (self.has_bias or not self.relu))

    def make_kernels(self, library):
        stride = self.stride[0]

        def out_shape(x, w, *bias):
            return [x[0], w[0], _output_size(x[2], w[2], stride), _output_size(x[3], w[3], stride)]
        name = (f"SmallConvS{stride}" + ("Bias" if self.has_bias else "")
                + ("Relu" if self.relu else ""))
        self.kernel = custom_op(library, name, out_shape,
                                self._bprop_bias if self.has_bias else self._bprop)

    def _grads(self, x, weight, out, dout):
        """dx, dw and dout behind the ReLU, in eval mode (e.g. a frozen stem)."""
        if self.relu:
            dout = dout * (out > 0).astype(dout.dtype)
        return dense_conv_grads(self.backward_input, self.kernel_size, self.stride[0], x, weight,
                                dout) + (dout,)

    def _bprop(self, x, weight, out, dout):
        return self._grads(x, weight, out, dout)[:2]

    def _bprop_bias(self, x, weight, bias, out, dout):
        dx, dw, dout = self._grads(x, weight, out, dout)
        return dx, dw, dout.sum((0, 2, 3))

    def construct(self, x):
        return self.convolve_relu(x, self.use_kernel and not self.training
                                  and x.dtype == mstype.float32)


class Linear(KernelSwitch, nn.Dense):
    """``nn.Dense(in_channels, out_channels)`` with a bias and no activation
    (the classifier), computed by the pointwise kernel's dot products in
    inference for 2-D inputs: the last MindSpore operator of the fused
    network besides the stem. Training runs MindSpore's MatMul."""

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels)
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.kernel = custom_op(library, "DenseBias", lambda x, w, b: [x[0], w[0]], self._bprop)

    def _bprop(self, x, weight, bias, out, dout):
        return ops.matmul(dout, weight), ops.matmul(dout.T, x), dout.sum(0)

    def construct(self, x):
        if self.use_kernel and not self.training and x.dtype == mstype.float32 and x.ndim == 2:
            return self.kernel(x, self.weight, self.bias)
        return super().construct(x)


def nearest_index(size_in, size_out):
    """PyTorch's legacy 'nearest' source indices for size_in -> size_out, as a
    graph-mode int32 tensor: identity, i // 2 for an exact 2x, else
    min(floor(i * (float32)in / out), in - 1) in float32 (its upsample code)."""
    positions = ops.arange(0, size_out, dtype=mstype.int32)
    if size_out == size_in:
        return positions
    if size_out == 2 * size_in:
        return positions // 2
    scale = float(np.float32(size_in) / np.float32(size_out))
    index = ops.floor(positions.astype(mstype.float32) * scale).astype(mstype.int32)
    return ops.minimum(index, size_in - 1)


def upsample_multiply(out, gate, export_form):
    """``out * nearest_upsample(gate, out's H x W)`` on MindSpore operators.

    Two gathers with PyTorch's indices: bit-identical to ResizeNearestNeighbor
    and 3-5x faster in MindSpore. In an export (``export_form``) ResizeNearest-
    Neighbor instead: it becomes ONNX Resize, which onnxruntime runs 3x faster
    than two Gathers (benchmark/RESULTS.md)."""
    if export_form:
        return out * ops.ResizeNearestNeighbor(out.shape[2:])(gate)
    rows = nearest_index(gate.shape[2], out.shape[2])
    cols = nearest_index(gate.shape[3], out.shape[3])
    return out * ops.gather(ops.gather(gate, rows, 2), cols, 3)


class BroadcastMultiply(KernelSwitch, nn.Cell):
    """``x * broadcast(g)`` on a kernel pair: ``FORWARD(x, g)`` and
    ``BACKWARD_G(dy, x, g)`` (the gradient of g). The gradient of x is the same
    broadcast multiply, ``FORWARD(dy, g)``. Subclasses name the kernels and
    give the MindSpore formulation (``fallback``)."""
    FORWARD = BACKWARD_G = None

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.multiply = custom_op(library, self.FORWARD, lambda x, g: x)
        self.backward_g = custom_op(library, self.BACKWARD_G, lambda dy, x, g: g)
        self.kernel = custom_op(library, self.FORWARD, lambda x, g: x, self._bprop)

    def _bprop(self, x, g, out, dout):
        return self.multiply(dout, g), self.backward_g(dout, x, g)

    def construct(self, x, g):
        if self.use_kernel and x.dtype == mstype.float32:
            return self.kernel(x, g)
        return self.fallback(x, g)

    def fallback(self, x, g):
        raise NotImplementedError


class GateMultiply(BroadcastMultiply):
    """``out * nearest_upsample(gate, out's H x W)`` with PyTorch's legacy
    nearest indices (the DFC attention gate of GhostNetV2)."""
    FORWARD, BACKWARD_G = "GateMul", "GateMulBackGate"

    def __init__(self):
        super().__init__()
        self.export_form = False  # set by portable()

    def fallback(self, x, g):
        return upsample_multiply(x, g, self.export_form)


class SpatialMean(KernelSwitch, nn.Cell):
    """Mean over H and W, keeping them as 1 x 1 (global average pooling)."""

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.backward = custom_op(library, "SpatialMeanBack", lambda dy, x: x)
        self.kernel = custom_op(library, "SpatialMean", lambda x: [x[0], x[1], 1, 1], self._bprop)

    def _bprop(self, x, out, dout):
        return (self.backward(dout, x),)

    def construct(self, x):
        if self.use_kernel and x.dtype == mstype.float32:
            return self.kernel(x)
        return ops.mean(x, (2, 3), keep_dims=True)


class ChannelScale(BroadcastMultiply):
    """``x * scale`` with scale of shape (N, C, 1, 1): the SE block's gate
    (MindSpore's broadcasting Mul took ~10 ms per call at batch 32)."""
    FORWARD, BACKWARD_G = "ChannelScale", "ChannelScaleBack"

    def fallback(self, x, g):
        return x * g


class AvgPool2x2(KernelSwitch, nn.Cell):
    """2x2 average pooling, stride 2, an odd last row / column dropped
    (``nn.AvgPool2d(kernel_size=2, stride=2)``)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.backward = custom_op(library, "AvgPool2x2Back", lambda dy, x: x)
        self.kernel = custom_op(library, "AvgPool2x2",
                                lambda x: [x[0], x[1], x[2] // 2, x[3] // 2], self._bprop)

    def _bprop(self, x, out, dout):
        return (self.backward(dout, x),)

    def construct(self, x):
        if self.use_kernel and x.dtype == mstype.float32:
            return self.kernel(x)
        return self.pool(x)


class UpsampleConcat(KernelSwitch, nn.Cell):
    """``cat((nearest_2x_upsample(coarse), fine), 1)``: YOLOv3's neck joining
    a lateral map to the backbone map twice its size, as one pass (MindSpore's
    ResizeNearestNeighbor alone took 2 ms for two 96-channel maps of 10x10
    and 20x20, benchmark/RESULTS.md). Otherwise ResizeNearestNeighbor and
    Concat: an ONNX Resize that export.py makes batch-independent (a reshape
    would carry the traced batch size into the ONNX graph)."""

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.kernel = custom_op(library, "UpsampleConcat",
                                lambda a, b: [b[0], a[1] + b[1], b[2], b[3]], self._bprop)

    def _bprop(self, coarse, fine, out, dout):
        n, c, h, w = coarse.shape
        upsampled = dout[:, :c].reshape(n, c, h, 2, w, 2)
        return upsampled.sum((3, 5)), dout[:, c:]

    def construct(self, coarse, fine):
        if self.use_kernel and not self.training and coarse.dtype == mstype.float32:
            return self.kernel(coarse, fine)
        upsampled = ops.ResizeNearestNeighbor((coarse.shape[2] * 2, coarse.shape[3] * 2))(coarse)
        return ops.cat((upsampled, fine), 1)


class ResizeBilinear(KernelSwitch, nn.Cell):
    """``x`` resized to ``like``'s height and width, bilinear with half-pixel
    centres (PyTorch's align_corners=False): DeepLabV3's final resize of its
    logits to the input size, which MindSpore's ResizeBilinearV2 ran at half
    onnxruntime's speed (benchmark/RESULTS.md). In inference on float32 one
    kernel pass (only ``like``'s shape is read); ``ops.interpolate`` otherwise."""

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.kernel = custom_op(library, "ResizeBilinear",
                                lambda x, like: [x[0], x[1], like[2], like[3]], self._bprop)

    def _bprop(self, x, like, out, dout):
        # The resize is y = R x C^T with R, C the 1-D tent matrices.
        rows = bilinear_matrix(x.shape[2], dout.shape[2])
        cols = bilinear_matrix(x.shape[3], dout.shape[3])
        return ops.matmul(ops.matmul(rows.T, dout), cols), ops.zeros_like(like)

    def construct(self, x, like):
        if self.use_kernel and not self.training and x.dtype == mstype.float32:
            return self.kernel(x, like)
        return resize_bilinear(x, like.shape[2:])


def resize_bilinear(x, size):
    """Bilinear resize with half-pixel centres (PyTorch's align_corners=False)."""
    return ops.interpolate(x, size=size, mode="bilinear", align_corners=False)


@ops.constexpr
def bilinear_matrix(size_in, size_out):
    """(size_out, size_in) weights of a 1-D bilinear resize with half-pixel
    centres: output i samples src = (i + 0.5) * in / out - 0.5, clamped to
    the edges, with the tent weights max(0, 1 - |src - j|) (PyTorch's
    align_corners=False, the same numbers as ResizeBilinear)."""
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    src = np.clip(src, 0, size_in - 1)
    weights = np.maximum(0.0, 1.0 - np.abs(src[:, None] - np.arange(size_in)[None, :]))
    return ms.Tensor(weights.astype(np.float32))


class GhostModuleKernel(KernelSwitch, nn.Cell):
    """A BN-folded ghost module as one kernel (inference only):

        x1 = act(conv1x1(x, primary_weight) + b1)
        out = concat(x1, act(depthwise_conv(x1, w) + b2))
        out = out * nearest_upsample(sigmoid(gate_logits))     (gate: with DFC)
        out = out + residual                                    (residual: ghost2)

    ``act`` is ReLU or the identity. Replaces the 1x1 Conv2D, BiasAdd, ReLU,
    the cheap conv, Concat, Sigmoid, the gate multiply and the residual Add
    (each a pass over the feature map, and an operator's dispatch). Without
    the kernel, those operators.
    """

    def __init__(self, channels, kernel_size, relu, gate, residual=False):
        super().__init__()
        if residual and (relu or gate):
            raise ValueError("GhostModuleKernel: the residual variant has no ReLU and no gate")
        self.relu = relu
        self.gate = gate
        self.residual = residual
        self.export_form = False  # set by portable()
        self.primary = ops.Conv2D(out_channel=channels, kernel_size=1)
        self.depthwise = ops.Conv2D(out_channel=channels, kernel_size=kernel_size,
                                    pad_mode="same", group=channels)
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        name = ("GhostModule" + ("Relu" if self.relu else "") + ("Gate" if self.gate else "")
                + ("Residual" if self.residual else ""))
        self.kernel = custom_op(library, name,
                                lambda x, primary, *rest: [x[0], 2 * primary[0], x[2], x[3]])

    def construct(self, x, primary_weight, b1, weight, b2, extra=None):
        """extra: the gate logits (gate) or the residual (residual)."""
        if self.use_kernel and x.dtype == mstype.float32:
            if self.gate or self.residual:
                return self.kernel(x, primary_weight, b1, weight, b2, extra)
            return self.kernel(x, primary_weight, b1, weight, b2)
        x1 = ops.bias_add(self.primary(x, primary_weight), b1)
        if self.relu:
            x1 = ops.relu(x1)
        x2 = ops.bias_add(self.depthwise(x1, weight), b2)
        if self.relu:
            x2 = ops.relu(x2)
        out = ops.cat((x1, x2), 1)
        if self.gate:
            out = upsample_multiply(out, ops.sigmoid(extra), self.export_form)
        if self.residual:
            out = out + extra
        return out


class DfcGate(KernelSwitch, nn.Cell):
    """The gate logits of a BN-folded ghost module's DFC attention as one
    kernel (inference only): 2x2 average pool, 1x1 conv, 1xK depthwise conv,
    Kx1 depthwise conv, each with its bias: the chain of the cells' own kernels
    as one MindSpore operator instead of four (src/kernels/fused.cc; at batch 1
    each operator costs ~9 us of dispatch). Bit-identical to those cells on
    their kernels. Called with the branch's weights and biases; the ghost
    module runs its cells when ``use_kernel`` is off."""

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.kernel = custom_op(library, "DfcGate",
                                lambda x, project, *rest: [x[0], project[0], x[2] // 2, x[3] // 2])

    def construct(self, x, project_weight, project_bias, horizontal_weight, horizontal_bias,
                  vertical_weight, vertical_bias):
        return self.kernel(x, project_weight, project_bias, horizontal_weight, horizontal_bias,
                           vertical_weight, vertical_bias)


class GhostBottleneckKernel(KernelSwitch, nn.Cell):
    """A whole BN-folded ghost bottleneck as one kernel (inference only): the
    DFC gate, ghost1, the stride-2 depthwise conv, the SE block, the shortcut
    and ghost2 with the shortcut added, each on the kernel its cell runs alone
    (src/kernels/fused.cc): one MindSpore operator instead of 2-7, the same
    bits. Called with the parts' weights and biases in that order, those of
    absent parts left out; the bottleneck runs its cells when ``use_kernel``
    is off."""

    def __init__(self, dfc, strided, se, shortcut_conv):
        super().__init__()
        self.strided = strided
        self.name = ("GhostBottleneck" + ("Dfc" if dfc else "") + ("Dw" if strided else "")
                     + ("Se" if se else "") + ("Sc" if shortcut_conv else ""))
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        def out_shape(x, *weights):
            # ghost2's primary 1x1 weight is the last but three: half the output channels
            size = (lambda s: (s - 1) // 2 + 1) if self.strided else (lambda s: s)
            return [x[0], 2 * weights[-4][0], size(x[2]), size(x[3])]

        self.kernel = custom_op(library, self.name, out_shape)

    def construct(self, x, *weights):
        return self.kernel(x, *weights)


class SqueezeExciteKernel(KernelSwitch, nn.Cell):
    """A squeeze-and-excitation block as one kernel (inference only):
    ``x * hard_sigmoid(conv2(relu(conv1(mean_hw(x)))))`` with the 1x1 convs'
    weights and biases: SpatialMean, the two PointwiseConv2d and ChannelScale
    on their kernels as one MindSpore operator instead of four, bit-identical
    to them. The SE block runs its cells when ``use_kernel`` is off."""

    def __init__(self):
        super().__init__()
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        self.kernel = custom_op(library, "SqueezeExcite", lambda x, *rest: x)

    def construct(self, x, reduce_weight, reduce_bias, expand_weight, expand_bias):
        return self.kernel(x, reduce_weight, reduce_bias, expand_weight, expand_bias)


class BatchNorm2d(KernelSwitch, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on the custom kernels: training mode (batch
    statistics, running averages, gradients) and evaluation mode (running
    statistics; fuse_bn removes it altogether). The same parameters, and the
    same running-average rule as MindSpore's: ``moving = momentum * moving +
    (1 - momentum) * batch``, with the unbiased batch variance.

    ``relu=True`` applies ReLU to the output (in the same pass with the
    kernels), replacing a separate ReLU layer."""

    def __init__(self, num_features, eps=1e-5, momentum=0.9, relu=False, **kwargs):
        super().__init__(num_features, eps=eps, momentum=momentum, **kwargs)
        self.relu = relu
        # self.momentum is MindSpore's 1 - momentum: the batch's weight.
        self.scalars = ms.Tensor([eps, self.momentum], mstype.float32)
        self.set_kernel(enabled_by_default())

    def kernel_supported(self):
        return self.format == "NCHW"

    def make_kernels(self, library):
        relu = "Relu" if self.relu else ""
        self.backward = custom_op(library, "BatchNormTrainBack" + relu,
                                  lambda dy, x, gamma, *rest: (x, gamma, gamma), outputs=3)
        self.kernel = custom_op(library, "BatchNormTrain" + relu,
                                lambda x, gamma, *rest: (x, gamma, gamma, gamma, gamma),
                                self._bprop, outputs=5)
        self.infer_kernel = custom_op(library, "BatchNormInfer" + relu,
                                      lambda x, gamma, beta, mean, var, scalars: x)

    def _bprop(self, x, gamma, beta, moving_mean, moving_var, scalars, out, dout):
        if self.relu:
            dx, dgamma, dbeta = self.backward(dout[0], x, gamma, out[1], out[2], scalars, out[0])
        else:
            dx, dgamma, dbeta = self.backward(dout[0], x, gamma, out[1], out[2], scalars)
        return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var),
                ops.zeros_like(scalars))

    def construct(self, x):
        if not (self.use_kernel and self.use_batch_statistics is None
                and x.dtype == mstype.float32 and x.ndim == 4):
            out = super().construct(x)
            if self.relu:
                out = ops.relu(out)
            return out
        if not self.training:
            return self.infer_kernel(x, self.gamma, self.beta, self.moving_mean,
                                     self.moving_variance, self.scalars)
        y, _, _, moving_mean, moving_variance = self.kernel(
            x, self.gamma, self.beta, self.moving_mean, self.moving_variance, self.scalars)
        ops.assign(self.moving_mean, ops.stop_gradient(moving_mean))
        ops.assign(self.moving_variance, ops.stop_gradient(moving_variance))
        return y


def use_cpu_kernels(net, enabled=True):
    """Switch every kernel-backed cell of ``net`` (the KernelSwitch cells) to the
    custom kernels (where available) or back to MindSpore's operators. Returns
    net; the next call recompiles. ``count_kernel_layers(net)`` tells how many
    layers use them."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, KernelSwitch):
            cell.set_kernel(enabled)
    forget_compiled_graphs(net)
    return net


def count_kernel_layers(net):
    """Number of layers of ``net`` running on the custom kernels."""
    return sum(isinstance(cell, KernelSwitch) and cell.use_kernel
               for _, cell in net.cells_and_names())


def portable(net, file_format=None):
    """``with portable(net, file_format): ...`` runs the block with MindSpore's
    standard operators (for ONNX / AIR / portable MINDIR export), then
    restores the network. For ONNX (or an unknown format) every cell with an
    ``export_form`` attribute gets it set: the DFC upsample becomes
    ResizeNearestNeighbor (ONNX Resize, fast in onnxruntime; for MINDIR and
    AIR the gathers MindSpore runs faster), DeepLabV3's final bilinear resize
    two MatMuls (the ONNX exporter has no bilinear resize)."""
    return _kernels_switched(net, False, export_form=file_format not in ("MINDIR", "AIR"))


def with_kernels(net):
    """``with with_kernels(net): ...`` runs the block with the custom kernels
    wherever a cell supports them (export.py --cpu_kernels), then restores
    the network."""
    return _kernels_switched(net, True)


@contextlib.contextmanager
def _kernels_switched(net, enabled, export_form=False):
    cells = [cell for _, cell in net.cells_and_names() if isinstance(cell, KernelSwitch)]
    saved = [cell.use_kernel for cell in cells]
    use_cpu_kernels(net, enabled)
    forms = [cell for _, cell in net.cells_and_names() if hasattr(cell, "export_form")]
    for cell in forms:
        cell.export_form = export_form
    try:
        yield net
    finally:
        for cell in forms:
            cell.export_form = False
        for cell, use_kernel in zip(cells, saved):
            cell.set_kernel(use_kernel)
        forget_compiled_graphs(net)


def forget_compiled_graphs(net):
    """Make the next call of ``net`` compile its graph again.

    MindSpore caches a cell's compiled graph under its phase, creation time
    and id, not its structure: after cells are changed in place, the old
    graph would otherwise keep running.
    """
    for _, cell in net.cells_and_names():
        object.__setattr__(cell, "_create_time", time.time_ns())
