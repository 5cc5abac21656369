"""Each bottleneck of a fused GhostNetV2 at 224x224, batch 1: its fused CPU
kernel (cpu_kernels.GhostBottleneckKernel's entry, called through
cpu_kernels.call_entry) against the same block exported alone to ONNX and run
by onnxruntime, at --threads threads (default 1: free of the other cores'
availability). Best of --calls calls each; ~10 us of Python per call on both
sides. Random weights, BatchNorm folded.

    .venv/bin/python benchmark/blocks.py                # ghostnetv2_100, 1 thread
    .venv/bin/python benchmark/blocks.py --model ghostnetv2_130 --threads 2
"""
import argparse
import ctypes
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ghostnetv2_100")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)

    import mindspore as ms
    import mindspore.onnx
    import onnxruntime as ort
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from benchmark import onnxruntime_options, timed_calls  # benchmark/benchmark.py
    from src.cpu_kernels import call_entry, kernel_library, portable
    from src.fuse import fuse_bn
    from src.ghostnetv2 import GhostBottleneck, create_model

    library = ctypes.CDLL(kernel_library())
    library.SetNumThreads(args.threads)
    net = create_model(args.model)
    fuse_bn(net)
    x = net.stem(ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 224, 224),
                                                                    dtype=np.float32)))
    blocks = [cell for _, cell in net.cells_and_names() if isinstance(cell, GhostBottleneck)]
    options = onnxruntime_options(args.threads)
    print(f"{args.model}, 224x224, batch 1, {args.threads} thread(s), best of {args.calls} calls")
    print("| block | kernel entry | input -> output | kernel us | onnxruntime us | ratio |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    with tempfile.TemporaryDirectory() as scratch:
        for i, block in enumerate(blocks):
            if block.fused is None:
                raise SystemExit(f"block {i} did not fuse into one kernel")
            out = block(x)
            inputs = [x.asnumpy()] + [p.asnumpy() for p in block._fused_weights()]
            kernel = min(timed_calls(
                lambda: call_entry(library, block.fused.name, inputs, [out.shape]), args.calls))
            path = os.path.join(scratch, f"block{i}.onnx")
            with portable(block, "ONNX"):
                mindspore.onnx.export(block, x, file_name=path)
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: inputs[0]}
            onnx = min(timed_calls(lambda: session.run(None, feed), args.calls))
            kernel, onnx = kernel * 1e6, onnx * 1e6
            totals[0] += kernel
            totals[1] += onnx
            shape_in, shape_out = "x".join(map(str, x.shape[1:])), "x".join(map(str, out.shape[1:]))
            print(f"| {i} | {block.fused.name} | {shape_in} -> {shape_out} | {kernel:.0f} | "
                  f"{onnx:.0f} | {kernel / onnx:.2f} |", flush=True)
            x = out
    print(f"| sum | | | {totals[0]:.0f} | {totals[1]:.0f} | {totals[0] / totals[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
