"""Process CPU time per call of exported files, in one process, taking turns:
a measure that the other processes on a shared machine barely move (wall
time under load average 15 varied 3-10x between calls; CPU time by ~5%).

    .venv/bin/python benchmark/cpu_time.py a.mindir b.mindir net.onnx --threads 1

Meant for one thread (--threads 1): with more, CPU time also counts the
threads' waiting and spinning. MINDIR files run in nn.GraphCell (a
--cpu_kernels file with the kernel library it names), ONNX files in
onnxruntime, at the batch they were exported with (--batch for an ONNX
file exported with a dynamic one).
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def runner(path, threads, batch):
    """A function that runs the file once on a fixed random input (an ONNX
    file's named, dynamic dimensions: the batch)."""
    if path.endswith(".onnx"):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        shape = [d if isinstance(d, int) else batch for d in session.get_inputs()[0].shape]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return lambda: session.run(None, {name: x})[0]
    import mindspore as ms
    from src.mindir_infer import kernel_libraries, load_mindir, mindir_io_shapes
    for library in kernel_libraries(path):
        ctypes.CDLL(library).SetNumThreads(threads)
    cell, (shape, _) = load_mindir(path), mindir_io_shapes(path)
    x = ms.Tensor(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    return lambda: cell(x).asnumpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help=".mindir or .onnx files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1, help="an ONNX file's dynamic batch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10, help="calls per turn")
    args = parser.parse_args(argv)
    for path in args.files:
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    runs = {path: runner(path, args.threads, args.batch) for path in args.files}
    for run in runs.values():  # warm-up (graph compilation)
        for _ in range(3):
            run()
    cpu = {path: [] for path in args.files}
    load_before = os.getloadavg()
    for turn in range(args.rounds):
        shift = turn % len(args.files)
        for path in args.files[shift:] + args.files[:shift]:
            for _ in range(args.calls):
                start = time.process_time()
                runs[path]()
                cpu[path].append(1e3 * (time.process_time() - start))
    print(f"{args.threads} thread(s), {args.rounds} rounds x {args.calls} calls; load average "
          f"before {load_before}, after {os.getloadavg()}")
    print("| file | CPU ms per call: median (p25-p75) |\n|---|---|")
    for path, times in cpu.items():
        print(f"| {path} | {np.median(times):.2f} ({np.percentile(times, 25):.2f}-"
              f"{np.percentile(times, 75):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
