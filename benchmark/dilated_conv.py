"""One of the segmenter's ASPP convolutions alone (3x3, 960 -> 512 channels,
64x64 map: DeepLabV3 at 512x512, output stride 8) at each ASPP dilation, in
MindSpore (its Conv2D; the port's dense-convolution kernel, as the
--cpu_kernels MINDIR runs it), PyTorch and onnxruntime: whether
an engine's time falls with the dilation (the taps that land in the zero
padding skipped) or stays (computed).

    flock -x /work/wt/cpu.lock .venv/bin/python benchmark/dilated_conv.py --threads 2

One process, the engines one after another, median of --calls calls after a
warm-up; for the why, not for headline figures (benchmark.py has those).
"""
import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")
from benchmark import onnxruntime_options, set_mindspore_threads, timed_calls  # noqa: E402

IN_CHANNELS, OUT_CHANNELS, SIZE = 960, 512, 64
DILATIONS = (1, 12, 24, 36)


def median_ms(run, calls):
    run()  # warm-up
    return 1e3 * float(np.median(timed_calls(run, calls)))


def valid_tap_share(dilation, size=SIZE):
    """The share of the 3x3 taps that land inside the map (not in the padding)."""
    per_axis = sum(min(size, size - abs(offset) * dilation) for offset in (-1, 0, 1))
    return (per_axis / (3 * size)) ** 2


def mindspore_conv(x, weight, dilation, kernel=False):
    """MindSpore's Conv2D, or (kernel) the port's DenseConv2d on its CPU kernel."""
    import mindspore as ms
    from src.cpu_kernels import DenseConv2d, use_cpu_kernels
    conv = DenseConv2d(IN_CHANNELS, OUT_CHANNELS, 3, pad_mode="pad", padding=dilation,
                       dilation=dilation).set_train(False)
    use_cpu_kernels(conv, kernel)
    assert conv.use_kernel == kernel, "the CPU kernel library is not available"
    conv.weight.set_data(ms.Tensor(weight))
    tensor = ms.Tensor(x)
    return lambda: conv(tensor).asnumpy()


def torch_conv(x, weight, dilation):
    import torch
    tensor, w = torch.from_numpy(x), torch.from_numpy(weight)

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tensor, w, padding=dilation,
                                              dilation=dilation).numpy()
    return run


def onnxruntime_conv(x, weight, dilation, threads, folder):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Conv", ["x", "w"], ["y"], dilations=[dilation] * 2,
                            pads=[dilation] * 4, kernel_shape=[3, 3])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    path = os.path.join(folder, f"conv_d{dilation}.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = ort.InferenceSession(path, onnxruntime_options(threads),
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    set_mindspore_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, IN_CHANNELS, SIZE, SIZE), dtype=np.float32)
    weight = rng.standard_normal((OUT_CHANNELS, IN_CHANNELS, 3, 3), dtype=np.float32) * 0.01
    gmac = OUT_CHANNELS * IN_CHANNELS * 9 * SIZE * SIZE / 1e9
    print(f"3x3 conv {IN_CHANNELS} -> {OUT_CHANNELS}, {SIZE}x{SIZE}, batch 1, {args.threads} "
          f"threads: {gmac:.1f} GMAC with every tap; medians of {args.calls} calls, ms\n")
    print("| dilation | taps inside the map | MindSpore Conv2D | this port's kernel "
          "(DenseConv2d) | PyTorch | onnxruntime |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for dilation in DILATIONS:
            times = [median_ms(make(x, weight, dilation), args.calls) for make in (
                mindspore_conv, lambda *a: mindspore_conv(*a, kernel=True), torch_conv,
                lambda *a: onnxruntime_conv(*a, args.threads, folder))]
            print(f"| {dilation} | {valid_tap_share(dilation):.0%} | "
                  + " | ".join(f"{t:.0f}" for t in times) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
