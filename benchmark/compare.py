"""Time exported files against each other, taking turns: MINDIR (MindSpore,
nn.GraphCell) and ONNX (onnxruntime), each in a worker process of its own.

    .venv/bin/python benchmark/compare.py a.mindir b.mindir net.onnx --batch 1
    .venv/bin/python benchmark/compare.py a.mindir net.onnx --batch 32 --load 2

For A/B measurements of one change (a MINDIR exported before and after it;
a --cpu_kernels MINDIR keeps the kernel library it was exported with) on a
shared machine: the files take turns for --rounds rounds of --calls calls,
in a rotating order, and the table gives each file's median, p25-p75 and
best, and its time relative to the first file. ``--load N`` runs N busy
processes beside the measured one (a machine whose cores are shared).
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from benchmark import Worker, busy_processes, interleaved, load_average, stop_processes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help=".mindir or .onnx files of the same network")
    parser.add_argument("--batch", type=int, default=1, help="the batch the files take")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=10, help="calls per turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load", type=int, default=0,
                        help="busy processes running beside the measured one")
    args = parser.parse_args(argv)
    for path in args.files:
        if not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    return args


def main(argv=None):
    args = parse_args(argv)
    load_before = load_average()
    workers = {}
    busy = []
    try:
        for index, path in enumerate(args.files):
            workers[f"{index}"] = Worker("file", {"path": os.path.abspath(path),
                                                  "batch": args.batch, "size": args.image_size,
                                                  "threads": args.threads})
        for engine, worker in workers.items():  # warm-up
            worker.ask(cmd="infer", engine=engine, batch=args.batch, calls=3)
        busy = busy_processes(args.load)
        times = interleaved(workers, list(workers), args.rounds, lambda e, w: w.ask(
            cmd="infer", engine=e, batch=args.batch, calls=args.calls)["times"])
    finally:
        stop_processes(busy)
        for worker in workers.values():
            worker.close()
    print(f"batch {args.batch}, {args.threads} threads, --load {args.load}, {args.rounds} rounds "
          f"x {args.calls} calls; load average before {load_before}, after {load_average()}")
    print("| file | ms: median (p25-p75), best | x first file: median, best |\n|---|---|---|")
    first = None
    for engine, path in zip(workers, args.files):
        calls = 1e3 * np.array([t for turn in times[engine] for t in turn])
        median, best = float(np.median(calls)), float(calls.min())
        first = first or (median, best)
        print(f"| {path} | {median:.2f} ({np.percentile(calls, 25):.2f}-"
              f"{np.percentile(calls, 75):.2f}), {best:.2f} | {median / first[0]:.2f}x, "
              f"{best / first[1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
