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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("libraries", nargs="+", help="kernel library builds (.so)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args(argv)
    libraries = [ctypes.CDLL(os.path.abspath(path)) for path in args.libraries]
    for library in libraries:
        library.SetNumThreads(args.threads)
    names = [os.path.basename(path) for path in args.libraries]
    print(f"{args.threads} thread(s), best of {args.calls} calls x {args.turns} turns, us")
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, entry, inputs, shape in cases():
        best = [float("inf")] * len(libraries)
        for _ in range(args.turns):
            for i, library in enumerate(libraries):
                calls = timed_calls(lambda: call_entry(library, entry, inputs, [shape]), args.calls)
                best[i] = min(best[i], min(calls) * 1e6)
        print(f"| {label} ({entry}) | " + " | ".join(f"{us:.1f}" for us in best) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
