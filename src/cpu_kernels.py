"""Fast depthwise convolution on the CPU: MindSpore custom (AOT) operators.

MindSpore 2.7.2 runs every depthwise convolution through oneDNN in plain NCHW
layout, where oneDNN falls back to im2col + GEMM per channel; GhostNetV2
spends most of its convolution time there. ``src/kernels/depthwise.cc``
computes the same convolution (forward, and both gradients for training)
with vectorised loops, 2-4x faster (benchmark/RESULTS.md).

``DepthwiseConv2d`` is an ``nn.Conv2d`` (same parameters, names, shapes,
padding attributes) whose construct calls the custom operator when it can:
on the CPU, float32, odd kernels, stride 1 or 2, padding k // 2. Otherwise,
or when the kernels are switched off, it is exactly ``nn.Conv2d``.

Switching them on (off by default, see below):

    from src.cpu_kernels import use_cpu_kernels
    use_cpu_kernels(net)                  # after building / loading / fuse_bn

or ``GHOSTNETV2_CPU_KERNELS=1`` in the environment for every new network.
A network with the kernels on cannot be exported to ONNX or AIR (MindSpore's
exporters cannot write a custom operator), and a MINDIR exported from it runs
only where the same library exists (``nn.GraphCell`` on this machine). Export
under ``with portable(net): ...`` for a file that runs anywhere. The kernels
are off by default so that exporting a freshly built network always works.

The library is compiled once per machine with g++ into
``$GHOSTNETV2_KERNEL_DIR`` (default ``~/.cache/ghostnetv2_kernels``); without
g++ (or on a non-CPU target) the network keeps MindSpore's own convolution
and a warning says why.
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

import mindspore as ms
from mindspore import nn, ops

__all__ = ["DepthwiseConv2d", "kernel_library", "kernels_available", "use_cpu_kernels",
           "count_kernel_layers",
           "set_num_threads", "portable", "forget_compiled_graphs", "KernelBuildError"]

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "depthwise.cc")
# -march=native: the library is built on, and for, the machine that runs it
# (the cache key includes the CPU's flags).
COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-pthread", "-std=c++17", "-shared",
                 "-fPIC")
ENABLE_ENV = "GHOSTNETV2_CPU_KERNELS"
CACHE_ENV = "GHOSTNETV2_KERNEL_DIR"


class KernelBuildError(RuntimeError):
    pass


_library = {"path": None, "tried": False, "threads": None}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return ""


def _cache_dir():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "ghostnetv2_kernels")


def build_library(out_dir=None):
    """Compile depthwise.cc into out_dir (cached by source, flags and CPU); return the .so path."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise KernelBuildError("g++ not found (install build-essential to get the fast "
                               "depthwise convolution kernels)")
    with open(SOURCE, "rb") as source:
        key = hashlib.sha256(source.read() + " ".join(COMPILE_FLAGS).encode()
                             + _cpu_flags().encode()).hexdigest()[:16]
    out_dir = out_dir or _cache_dir()
    path = os.path.join(out_dir, f"depthwise_{key}.so")
    if os.path.isfile(path):
        return path
    os.makedirs(out_dir, exist_ok=True)
    # Compile to a temporary name, then rename: concurrent processes (msrun
    # workers) never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    command = [compiler, *COMPILE_FLAGS, "-o", tmp, SOURCE]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(tmp)
        raise KernelBuildError(f"compiling {SOURCE} failed:\n{' '.join(command)}\n{result.stderr}")
    os.replace(tmp, path)
    logger.info("built the depthwise convolution kernels: %s", path)
    return path


def kernel_library():
    """Path of the compiled kernel library, or None where it cannot be used."""
    if not _library["tried"]:
        _library["tried"] = True
        try:
            _library["path"] = build_library()
        except (KernelBuildError, OSError) as err:
            logger.warning("fast CPU depthwise kernels unavailable, using MindSpore's "
                           "convolution: %s", err)
    return _library["path"]


def kernels_available():
    """True where the kernels can run: CPU target and the library built."""
    if ms.get_context("device_target") != "CPU":
        return False
    return kernel_library() is not None


def enabled_by_default():
    return os.environ.get(ENABLE_ENV, "0") == "1" and kernels_available()


def set_num_threads(num_threads):
    """Threads the kernels use (default: all cores); set it with MindSpore's op threads."""
    path = kernel_library()
    if path is None:
        return
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    ctypes.CDLL(path).SetNumThreads(int(num_threads))
    _library["threads"] = num_threads


def _supports(conv):
    """Geometry the kernels implement: depthwise, odd kernel, stride 1/2, padding k//2."""
    kh, kw = conv.kernel_size  # nn.Conv2d stores kernel_size, stride, dilation as pairs
    stride = conv.stride[0]
    if conv.group != conv.in_channels or conv.in_channels != conv.out_channels:
        return False
    if kh % 2 == 0 or kw % 2 == 0 or conv.stride[1] != stride or stride not in (1, 2):
        return False
    if tuple(conv.dilation) != (1, 1) or conv.data_format != "NCHW":
        return False
    if conv.pad_mode == "same":
        return stride == 1  # 'same' at stride 1 with an odd kernel is padding k // 2
    if conv.pad_mode == "pad":
        pad = (conv.padding,) * 4 if isinstance(conv.padding, int) else tuple(conv.padding)
        return pad == (kh // 2, kh // 2, kw // 2, kw // 2)
    return False


def _output_size(size, kernel, stride):
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _custom(library, name, out_shape, bprop=None):
    return ops.Custom(f"{library}:{name}", out_shape=out_shape, out_dtype=lambda *dtypes: dtypes[0],
                      func_type="aot", bprop=bprop)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, stride, group=channels, ...)``
    computed by the custom CPU kernels where supported.

    ``relu`` (set by ``fuse_bn``) applies ReLU after the bias, inside the kernel.
    """

    def __init__(self, channels, kernel_size, stride=1, pad_mode="same", padding=0,
                 has_bias=False):
        super().__init__(channels, channels, kernel_size, stride, pad_mode=pad_mode,
                         padding=padding, group=channels, has_bias=has_bias)
        self.relu = False
        self.use_kernel = False
        self.set_kernel(enabled_by_default())

    def set_kernel(self, enabled):
        """Use the custom kernel (if the geometry is supported) or MindSpore's Conv2D."""
        library = kernel_library() if enabled and kernels_available() else None
        self.use_kernel = library is not None and _supports(self)
        if not self.use_kernel:
            return
        stride = self.stride[0]
        suffix = f"S{stride}"
        self.backward_input = _custom(library, f"DwConvBackInput{suffix}",
                                      lambda dy, w, x: x)
        self.backward_weight = _custom(library, f"DwConvBackWeight{suffix}",
                                       lambda dy, x, w: w)

        def out_shape(x, w, *bias):
            return [x[0], x[1], _output_size(x[2], w[2], stride), _output_size(x[3], w[3], stride)]

        name = "DwConv" + suffix + ("Bias" if self.has_bias else "") + ("Relu" if self.relu else "")
        self.kernel = _custom(library, name, out_shape, self._bprop_bias if self.has_bias
                              else self._bprop)

    def _bprop(self, x, weight, out, dout):
        return self.backward_input(dout, weight, x), self.backward_weight(dout, x, weight)

    def _bprop_bias(self, x, weight, bias, out, dout):
        if self.relu:
            dout = dout * (out > 0).astype(dout.dtype)
        return (self.backward_input(dout, weight, x), self.backward_weight(dout, x, weight),
                dout.sum((0, 2, 3)))

    def fuse_relu(self):
        """Apply ReLU in this layer (the ReLU layer after it is then removed)."""
        self.relu = True
        self.refresh()

    def refresh(self):
        """Pick the kernel variant again after has_bias or relu changed."""
        self.set_kernel(self.use_kernel)

    def construct(self, x):
        if self.use_kernel:
            if self.has_bias:
                return self.kernel(x, self.weight, self.bias)
            return self.kernel(x, self.weight)
        out = self.conv2d(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        if self.relu:
            out = ops.relu(out)
        return out


def use_cpu_kernels(net, enabled=True):
    """Switch every DepthwiseConv2d of ``net`` to the custom kernels (where
    available) or back to MindSpore's Conv2D. Returns net; the next call
    recompiles. ``count_kernel_layers(net)`` tells how many layers use them."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, DepthwiseConv2d):
            cell.set_kernel(enabled)
    forget_compiled_graphs(net)
    return net


def count_kernel_layers(net):
    """Number of layers of ``net`` running on the custom kernels."""
    return sum(isinstance(cell, DepthwiseConv2d) and cell.use_kernel
               for _, cell in net.cells_and_names())


@contextlib.contextmanager
def portable(net):
    """``with portable(net): ...`` runs the block with MindSpore's own
    convolutions (for ONNX / AIR / portable MINDIR export), then restores."""
    enabled = [(cell, cell.use_kernel) for _, cell in net.cells_and_names()
               if isinstance(cell, DepthwiseConv2d)]
    use_cpu_kernels(net, False)
    try:
        yield net
    finally:
        for cell, use_kernel in enabled:
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
