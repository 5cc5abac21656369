"""Time kernel entry points in several builds of the kernel library, taking
turns: the A/B of a change to src/kernels (build the library before and after
it, e.g. from a worktree of each commit), at the shapes benchmark/RESULTS.md
quotes. Each entry is called through cpu_kernels.call_entry (ctypes, as
MindSpore calls it; ~10 us of Python per call, the same in every build).

    .venv/bin/python benchmark/kernel_ab.py old.so new.so --threads 1
    .venv/bin/python benchmark/kernel_ab.py "$(.venv/bin/python -c \
        'from src.cpu_kernels import build_library; print(build_library())')"

Each row: best of --calls calls per build, builds alternating for --turns
turns (the best over all turns is printed, one column per build).
``--cases dense``: the detector's and segmenter's convolutions instead
(e.g. ``--threads 2`` with builds of two block shapes of pointwise.cc).
"""
import argparse
import ctypes
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from benchmark import timed_calls  # noqa: E402  benchmark/benchmark.py, beside this file
from src.cpu_kernels import call_entry  # noqa: E402


def cases():
    """(label, entry, inputs, output shape) at ghostnetv2_100's 224 shapes."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    rows = [("stem 3x224x224 -> 16", "SmallConvS2BiasRelu",
             [r(1, 3, 224, 224), r(16, 3, 3, 3), r(16)], (1, 16, 112, 112))]
    for c, h, k, stride in ((48, 112, 3, 2), (72, 56, 5, 2), (672, 14, 5, 2)):
        o = (h - 1) // stride + 1
        rows.append((f"depthwise {c}x{h}x{h} {k}x{k}/{stride}", "DwConvS2Bias",
                     [r(1, c, h, h), r(c, 1, k, k), r(c)], (1, c, o, o)))
    for c, h, kh, kw in ((960, 3, 1, 5), (960, 3, 5, 1), (960, 2, 3, 3), (480, 4, 3, 3),
                         (480, 7, 1, 5), (336, 7, 1, 5), (72, 28, 1, 5)):
        rows.append((f"depthwise {c}x{h}x{h} {kh}x{kw}/1", "DwConvS1Bias",
                     [r(1, c, h, h), r(c, 1, kh, kw), r(c)], (1, c, h, h)))
    for entry, c, h, gate in (("GhostTailReluGate", 480, 7, 3), ("GhostTailResidual", 80, 7, 0),
                              ("GhostTailReluGate", 336, 14, 7), ("GhostTailReluGate", 120, 28, 14),
                              ("GhostTailResidual", 56, 14, 0), ("GhostTailReluGate", 36, 56, 28)):
        inputs = [r(1, c, h, h), r(c), r(c, 1, 3, 3), r(c)]
        inputs.append(r(1, 2 * c, gate, gate) if gate else r(1, 2 * c, h, h))
        rows.append((f"ghost tail {c}x{h}x{h}", entry, inputs, (1, 2 * c, h, h)))
    return rows


def dense_cases():
    """(label, entry, inputs, output shape) of the dense models' convolutions
    on the kernels: YOLOv3's neck at 320 (3x3 96 -> 192 on 40x40 and 10x10)
    and DeepLabV3's at 512 (the ASPP's 3x3 960 -> 512 on 64x64 at dilations
    1 and 24; its 2560 -> 512 bottleneck); and, for the shared 1x1 kernel,
    two of the classifier's 1x1 convs."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    rows = []
    for c_in, c_out, h, dilation in ((96, 192, 40, 1), (96, 192, 10, 1), (960, 512, 64, 1),
                                     (960, 512, 64, 24), (2560, 512, 64, 1)):
        rows.append((f"dense 3x3 {c_in}x{h}x{h} -> {c_out}, dilation {dilation}",
                     "DenseConvS1BiasRelu", [r(1, c_in, h, h), r(c_out, c_in, 3, 3), r(c_out),
                                             np.full(1, dilation, np.float32)], (1, c_out, h, h)))
    for c_in, c_out, h in ((24, 72, 56), (160, 960, 7)):
        rows.append((f"1x1 {c_in}x{h}x{h} -> {c_out}", "PointwiseBiasRelu",
                     [r(1, c_in, h, h), r(c_out, c_in, 1, 1), r(c_out)], (1, c_out, h, h)))
    return rows


CASES = {"classifier": (cases, 300), "dense": (dense_cases, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("libraries", nargs="+", help="kernel library builds (.so)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", choices=sorted(CASES), default="classifier",
                        help="ghostnetv2_100's kernels at 224 (default), or the dense "
                             "models' convolutions")
    parser.add_argument("--calls", type=int, default=None,
                        help="per build and turn (default 300; 3 for --cases dense)")
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args(argv)
    make_cases, default_calls = CASES[args.cases]
    args.calls = args.calls or default_calls
    libraries = [ctypes.CDLL(os.path.abspath(path)) for path in args.libraries]
    for library in libraries:
        library.SetNumThreads(args.threads)
    names = [os.path.basename(path) for path in args.libraries]
    print(f"{args.threads} thread(s), best of {args.calls} calls x {args.turns} turns, us")
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, entry, inputs, shape in make_cases():
        best = [float("inf")] * len(libraries)
        for _ in range(args.turns):
            for i, library in enumerate(libraries):
                calls = timed_calls(lambda: call_entry(library, entry, inputs, [shape]), args.calls)
                best[i] = min(best[i], min(calls) * 1e6)
        print(f"| {label} ({entry}) | " + " | ".join(f"{us:.1f}" for us in best) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
