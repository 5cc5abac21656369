"""GhostNetV2 speed: this MindSpore port against timm (PyTorch) and onnxruntime.

    .venv/bin/python benchmark/benchmark.py                 # everything, widths 1.0 1.3 1.6
    .venv/bin/python benchmark/benchmark.py --quick         # width 1.0, fewer runs: ~5 minutes
    .venv/bin/python benchmark/benchmark.py --sections inference --widths 1.0
    .venv/bin/python benchmark/benchmark.py --profile       # where the port's time goes
    .venv/bin/python benchmark/benchmark.py --quick --load 2  # the same beside 2 busy processes

Sections (224x224 float32 unless said, every framework on --threads threads):
- inference: latency at batch 1 and throughput at batch 32 of
    ms-cell       the port's Cell in GRAPH_MODE as eval.py runs it
                  (BatchNorm folded by src.fuse.fuse_bn, CPU kernels on);
    ms-mindir     that network exported by export.py --fuse_bn --cpu_kernels,
                  run by nn.GraphCell (for MindSpore on this machine);
    ms-mindir-portable  export.py --fuse_bn (standard operators only, runs anywhere);
    torch-eager   timm's model in PyTorch eager mode (torch.no_grad);
    ort-port      onnxruntime on this port's ONNX export (export.py);
    ort-timm      onnxruntime on timm's ONNX export (torch.onnx.export);
  all holding the same weights (random, BatchNorm statistics randomised); the
  logits of every engine are compared with timm's before timing.
- train: one optimizer step (forward, loss, backward, momentum SGD update) at
  batch 32 x 224 and with the digits recipe (batch 64 x 64x64, 10 classes),
  the port's train.py step (mindcv TrainStep) against timm + torch.optim.SGD,
  each in its own process, with its peak resident memory.
- data: src/dataset.py's training pipeline (decode + augment + batch, workers
  chosen automatically) on generated JPEG photographs (ImageNet recipe) and
  on the digits PNGs (digits recipe), images per second.

Each engine runs in a worker process of its own (no thread pool or memory
shared between frameworks). After warm-up, the engines take turns, in a
rotating order, for --runs rounds, so a load change on the machine hits all
of them alike; the tables show the median and the spread (batch 1: p25-p75
of all calls; batch 32 and training: min-max of the rounds) and the ratios,
of the medians and of the best runs (on a shared machine the best run is the
nearest to the unloaded speed: PyTorch's OpenMP threads slow down far more
than the others when other processes take the cores). The machine's load
average is printed before and after: measure on a quiet machine.
"""
import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

WIDTHS = {"1.0": "ghostnetv2_100", "1.3": "ghostnetv2_130", "1.6": "ghostnetv2_160"}
IMAGE_SIZE = 224
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 32
# (name, image size, batch, classes): the 224 ImageNet shape and the digits recipe.
TRAIN_CASES = (("224px batch 32", 224, 32, 1000), ("digits 64px batch 64", 64, 64, 10))
PROTOCOL_PREFIX = "@@"
# Pause between two engines' turns: lets the previous framework's threads
# stop spinning before the next one is timed.
SETTLE_S = 0.2
INFERENCE_ENGINES = ("ms-cell", "ms-mindir", "ms-mindir-portable", "torch-eager", "ort-port",
                     "ort-timm")
WORKER_OF_ENGINE = {"ms-cell": "ms", "ms-mindir": "ms", "ms-mindir-portable": "ms",
                    "torch-eager": "torch", "ort-port": "ort", "ort-timm": "ort"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", nargs="+", default=None, choices=list(WIDTHS),
                        help="default: all three (--quick: 1.0)")
    parser.add_argument("--sections", nargs="+", default=["inference", "train", "data"],
                        choices=["inference", "train", "data"])
    parser.add_argument("--quick", action="store_true",
                        help="width 1.0 only, fewer rounds and calls (about 5 minutes in all)")
    parser.add_argument("--runs", type=int, default=None,
                        help="rounds per measurement (default 7, --quick 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every framework")
    parser.add_argument("--load", type=int, default=0,
                        help="N busy processes beside the measured ones during the timed rounds "
                             "(the ratios on a machine whose cores are shared)")
    parser.add_argument("--output", default=None, help="also write the report to this file")
    parser.add_argument("--profile", action="store_true",
                        help="instead: MindSpore profiler op-type table of the port (width 1.0)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 7
    if args.widths is None:
        args.widths = ["1.0"] if args.quick else list(WIDTHS)
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1")
    if args.load < 0:
        parser.error("--load must be >= 0")
    return args


# ====================================================================== workers
# A worker builds its engines, prints one protocol line with its setup
# results, then answers one JSON command per stdin line until 'quit'.

def reply(payload):
    sys.stdout.write(PROTOCOL_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb():
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def inputs(batch, size=IMAGE_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, size, size), dtype=np.float32)


def set_mindspore_threads(threads):
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.device_context.cpu.op_tuning.threads_num(threads)
    from src.cpu_kernels import set_num_threads
    set_num_threads(threads)


def timed_calls(run, calls):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


class MindSporeInference:
    """The port: the Cell (BN folded, CPU kernels) and two MINDIR exports of it."""

    def __init__(self, config):
        import mindspore as ms
        from export import build_network, export_network
        from src.cpu_kernels import count_kernel_layers
        from src.mindir_infer import load_mindir
        set_mindspore_threads(config["threads"])
        net, _, _ = build_network(config["weights"], config["model"], fuse=True)
        self.kernel_layers = count_kernel_layers(net)
        self.tensors = {b: ms.Tensor(inputs(b)) for b in (LATENCY_BATCH, THROUGHPUT_BATCH)}
        # A MINDIR keeps the batch size it was exported with: one file per batch.
        self.engines = {"ms-cell": {b: net for b in self.tensors},
                        "ms-mindir": {}, "ms-mindir-portable": {}}
        for batch in self.tensors:
            # export.py --fuse_bn --cpu_kernels (runs where the kernel library is) ...
            path = os.path.join(config["tmp"], f"port_kernels_b{batch}.mindir")
            export_network(net, "MINDIR", path, batch, IMAGE_SIZE, IMAGE_SIZE, cpu_kernels=True)
            self.engines["ms-mindir"][batch] = load_mindir(path)
            # ... and export.py --fuse_bn (standard operators only, runs anywhere).
            path = os.path.join(config["tmp"], f"port_portable_b{batch}.mindir")
            export_network(net, "MINDIR", path, batch, IMAGE_SIZE, IMAGE_SIZE)
            self.engines["ms-mindir-portable"][batch] = load_mindir(path)
        self.onnx_path = os.path.join(config["tmp"], "port.onnx")
        export_network(net, "ONNX", self.onnx_path, 2, IMAGE_SIZE, IMAGE_SIZE)
        assert count_kernel_layers(net) == self.kernel_layers  # portable() restored them

    def callable(self, engine, batch):
        cell, x = self.engines[engine][batch], self.tensors[batch]
        return lambda: cell(x).asnumpy()


class TorchInference:
    def __init__(self, config):
        import timm
        import torch
        torch.set_num_threads(config["threads"])
        self.torch = torch
        model = timm.create_model(config["model"])
        model.load_state_dict(torch.load(config["weights"], map_location="cpu"))
        self.model = model.eval()
        self.tensors = {b: torch.from_numpy(inputs(b)) for b in (LATENCY_BATCH, THROUGHPUT_BATCH)}
        onnx_path = os.path.join(config["tmp"], "timm.onnx")
        with torch.no_grad():
            torch.onnx.export(model, self.tensors[LATENCY_BATCH], onnx_path, dynamo=False,
                              input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17)
        self.onnx_path = onnx_path

    def callable(self, engine, batch):
        x = self.tensors[batch]

        def run():
            with self.torch.no_grad():
                return self.model(x).numpy()
        return run


def onnxruntime_options(threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxRuntimeInference:
    def __init__(self, config):
        import onnxruntime as ort
        options = onnxruntime_options(config["threads"])
        self.sessions = {
            "ort-port": ort.InferenceSession(config["port_onnx"], options,
                                             providers=["CPUExecutionProvider"]),
            "ort-timm": ort.InferenceSession(config["timm_onnx"], options,
                                             providers=["CPUExecutionProvider"]),
        }
        self.arrays = {b: inputs(b) for b in (LATENCY_BATCH, THROUGHPUT_BATCH)}

    def callable(self, engine, batch):
        session = self.sessions[engine]
        feed = {session.get_inputs()[0].name: self.arrays[batch]}
        return lambda: session.run(None, feed)[0]


class FileInference:
    """One exported file (benchmark/compare.py): a MINDIR in nn.GraphCell or an
    ONNX file in onnxruntime, at the batch it was exported with."""

    def __init__(self, config):
        path, batch = config["path"], config["batch"]
        x = inputs(batch, config["size"])
        if path.endswith(".onnx"):
            import onnxruntime as ort
            session = ort.InferenceSession(path, onnxruntime_options(config["threads"]),
                                           providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x}
            self.run = lambda: session.run(None, feed)[0]
        else:
            import mindspore as ms
            from src.mindir_infer import load_mindir
            set_mindspore_threads(config["threads"])
            cell, tensor = load_mindir(path), ms.Tensor(x)
            self.run = lambda: cell(tensor).asnumpy()

    def callable(self, engine, batch):
        return self.run


def train_config(case):
    """The digits recipe's optimisation (momentum SGD) at this case's size and batch."""
    from src.model_utils.config import get_config
    name, size, batch, classes = case
    config = get_config("benchmark", argv=["--config_path",
                                           os.path.join(ROOT, "config",
                                                        "ghostnetv2_100_digits.yaml")])
    config.image_size, config.batch_size, config.num_classes = size, batch, classes
    config.device_target = "CPU"
    return config


class MindSporeTraining:
    """train.py's step: mindcv TrainStep around the port, mindcv momentum SGD."""

    def __init__(self, config):
        import mindspore as ms
        from src.ghostnetv2 import create_model
        from src.train_utils import create_optimizer, create_train_step
        set_mindspore_threads(config["threads"])
        case = TRAIN_CASES[config["case"]]
        recipe = train_config(case)
        net = create_model(config["model"], num_classes=case[3], dropout=recipe.dropout)
        optimizer = create_optimizer(net, recipe, [recipe.lr] * 1000)
        self.step = create_train_step(net, recipe, optimizer)
        rng = np.random.default_rng(0)
        self.images = ms.Tensor(inputs(case[2], case[1]))
        self.labels = ms.Tensor(rng.integers(0, case[3], case[2]).astype(np.int32))
        self.rss_before = current_rss_mb()

    def run(self):
        return float(self.step(self.images, self.labels).asnumpy())


class TorchTraining:
    """timm's model, cross entropy with the same label smoothing, torch momentum SGD
    (the same lr, momentum, weight decay without decay on 1-D parameters)."""

    def __init__(self, config):
        import timm
        import torch
        torch.set_num_threads(config["threads"])
        case = TRAIN_CASES[config["case"]]
        recipe = train_config(case)
        self.torch = torch
        self.model = timm.create_model(config["model"], num_classes=case[3],
                                       drop_rate=recipe.dropout).train()
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, momentum=recipe.momentum)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(inputs(case[2], case[1]))
        self.labels = torch.from_numpy(rng.integers(0, case[3], case[2]).astype(np.int64))
        self.rss_before = current_rss_mb()

    def run(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.step()
        return float(loss)


WORKERS = {"ms": MindSporeInference, "torch": TorchInference, "ort": OnnxRuntimeInference,
           "ms-train": MindSporeTraining, "torch-train": TorchTraining, "file": FileInference}


def worker_main(kind, config_json):
    config = json.loads(config_json)
    try:
        worker = WORKERS[kind](config)
    except Exception as err:  # report setup failures to the coordinator, then exit
        reply({"error": f"{kind} worker setup failed: {type(err).__name__}: {err}"})
        raise
    setup = {}
    for attr in ("onnx_path", "kernel_layers", "rss_before"):
        if hasattr(worker, attr):
            setup[attr] = getattr(worker, attr)
    reply(setup)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "logits":
            logits = worker.callable(command["engine"], LATENCY_BATCH)()
            reply({"logits": np.asarray(logits).tolist()})
        elif command["cmd"] == "infer":
            run = worker.callable(command["engine"], command["batch"])
            reply({"times": timed_calls(run, command["calls"])})
        elif command["cmd"] == "train":
            times = timed_calls(worker.run, command["steps"])
            reply({"times": times, "peak_rss_mb": peak_rss_mb()})


# ================================================================= coordinator

class Worker:
    """A worker process spoken to over its stdin / stdout."""

    def __init__(self, kind, config):
        self.kind = kind
        command = [sys.executable, os.path.abspath(__file__), "--worker", kind,
                   "--config", json.dumps(config)]
        # stderr goes to a file: a pipe read only after a failure would fill up
        # (warnings, logs) and block the worker.
        self.stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, cwd=ROOT)
        self.setup = self._read()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                payload = json.loads(line[len(PROTOCOL_PREFIX):])
                if "error" in payload:
                    raise RuntimeError(payload["error"] + "\n" + self._stderr_tail())
                return payload
        raise RuntimeError(f"{self.kind} worker exited (code {self.process.wait()}):\n"
                           f"{self._stderr_tail()}")

    def _stderr_tail(self):
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.seek(0)
        lines = [l for l in self.stderr.read().splitlines() if "NoneType" not in l]
        return "\n".join(lines[-25:])

    def ask(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
        self.stderr.close()


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def vector_extensions():
    """The x86 vector extensions the CPU reports (the kernels' code path follows them)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    shown = [f for f in ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512_vnni", "amx_tile")
             if f in flags]
    return " ".join(shown) or "unknown"


def versions():
    import importlib.metadata as metadata
    found = {"python": platform.python_version()}
    for package in ("mindspore", "mindcv", "torch", "timm", "onnxruntime", "onnx", "numpy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def make_reference_weights(model, path, seed=0):
    """timm's model with its own init, BatchNorm statistics randomised (so
    folding them is not trivial); the state_dict every engine loads."""
    import timm
    import torch
    torch.manual_seed(seed)
    net = timm.create_model(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
    torch.save(net.state_dict(), path)


BUSY_LOOP = "while True:\n    pass\n"


def busy_processes(count):
    """``count`` processes that keep a core busy (--load): the measured engines
    then share the cores, as on a machine where other work runs."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_processes(processes):
    for process in processes:
        process.kill()
        process.wait()


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def rotate(items, shift):
    shift %= len(items)
    return items[shift:] + items[:shift]


def interleaved(workers_by_engine, engines, runs, measure):
    """measure(engine, worker) for every engine, `runs` rounds, rotating order."""
    results = {engine: [] for engine in engines}
    for round_index in range(runs):
        for engine in rotate(list(engines), round_index):
            time.sleep(SETTLE_S)
            results[engine].append(measure(engine, workers_by_engine[engine]))
    return results


def run_inference(width, args, tmp):
    model = WIDTHS[width]
    weights = os.path.join(tmp, f"{model}.pth")
    make_reference_weights(model, weights)
    base = {"model": model, "weights": weights, "threads": args.threads, "tmp": tmp}
    log(f"{model}: starting workers (exports, compiles)")
    workers, busy = {}, []
    try:
        workers["ms"] = Worker("ms", base)
        workers["torch"] = Worker("torch", base)
        workers["ort"] = Worker("ort", dict(base, port_onnx=workers["ms"].setup["onnx_path"],
                                            timm_onnx=workers["torch"].setup["onnx_path"]))
        by_engine = {engine: workers[WORKER_OF_ENGINE[engine]] for engine in INFERENCE_ENGINES}
        reference = np.asarray(by_engine["torch-eager"].ask(cmd="logits",
                                                           engine="torch-eager")["logits"])
        agreement = {}
        for engine in INFERENCE_ENGINES:
            logits = np.asarray(by_engine[engine].ask(cmd="logits", engine=engine)["logits"])
            agreement[engine] = float(np.abs(logits - reference).max() / np.abs(reference).max())
        log(f"{model}: logits vs timm (max |diff| / max |logit|): "
            + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()))
        calls = 5 if args.quick else 10
        for engine in INFERENCE_ENGINES:  # warm-up: compile, caches, thread pools
            by_engine[engine].ask(cmd="infer", engine=engine, batch=LATENCY_BATCH, calls=3)
            by_engine[engine].ask(cmd="infer", engine=engine, batch=THROUGHPUT_BATCH, calls=1)
        busy = busy_processes(args.load)
        log(f"{model}: batch {LATENCY_BATCH} latency, {args.runs} rounds x {calls} calls")
        latency = interleaved(by_engine, INFERENCE_ENGINES, args.runs, lambda e, w: w.ask(
            cmd="infer", engine=e, batch=LATENCY_BATCH, calls=calls)["times"])
        log(f"{model}: batch {THROUGHPUT_BATCH} throughput, {args.runs} rounds")
        throughput = interleaved(by_engine, INFERENCE_ENGINES, args.runs, lambda e, w: w.ask(
            cmd="infer", engine=e, batch=THROUGHPUT_BATCH, calls=1)["times"][0])
        setup = {"kernel_layers": workers["ms"].setup.get("kernel_layers")}
    finally:
        stop_processes(busy)
        for worker in workers.values():
            worker.close()
    rows = {}
    for engine in INFERENCE_ENGINES:
        all_calls = [t for round_times in latency[engine] for t in round_times]
        images_per_s = [THROUGHPUT_BATCH / t for t in throughput[engine]]
        rows[engine] = {
            "latency_ms": 1e3 * float(np.median(all_calls)),
            "latency_p25": 1e3 * percentile(all_calls, 25),
            "latency_p75": 1e3 * percentile(all_calls, 75),
            "latency_best": 1e3 * float(min(all_calls)),
            "ips": float(np.median(images_per_s)),
            "ips_min": float(min(images_per_s)), "ips_max": float(max(images_per_s)),
            "agreement": agreement[engine],
        }
    return {"model": model, "rows": rows, "setup": setup}


def run_training(args, tmp):
    results = []
    steps = 1 if args.quick else 2
    for case_index, case in enumerate(TRAIN_CASES):
        name = case[0]
        base = {"model": WIDTHS["1.0"], "threads": args.threads, "tmp": tmp, "case": case_index}
        log(f"training {name}: starting workers")
        workers, busy = {}, []
        try:
            workers["ms-train"] = Worker("ms-train", base)
            workers["torch-train"] = Worker("torch-train", base)
            engines = list(workers)
            for engine in engines:  # warm-up: compile, allocate
                workers[engine].ask(cmd="train", steps=steps)
            busy = busy_processes(args.load)
            log(f"training {name}: {args.runs} rounds x {steps} steps")
            last = {}

            def measure(engine, worker):
                answer = worker.ask(cmd="train", steps=steps)
                last[engine] = answer
                return answer["times"]
            times = interleaved(workers, engines, args.runs, measure)
        finally:
            stop_processes(busy)
            for worker in workers.values():
                worker.close()
        batch = case[2]
        rows = {}
        for engine in engines:
            per_round = [batch / float(np.median(t)) for t in times[engine]]
            rows[engine] = {"ips": float(np.median(per_round)), "ips_min": min(per_round),
                            "ips_max": max(per_round),
                            "peak_rss_mb": last[engine]["peak_rss_mb"],
                            "rss_before_mb": workers[engine].setup.get("rss_before")}
        results.append({"case": name, "rows": rows})
    return results


def make_photo_folder(root, count=128, classes=4):
    """JPEG photographs of ImageNet-like size (about 500x375) from scikit-image's samples."""
    import cv2
    import skimage.data
    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
             "hubble_deep_field", "retina", "colorwheel")
    rng = np.random.default_rng(0)
    for index in range(count):
        image = getattr(skimage.data, names[index % len(names)])()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = np.ascontiguousarray(image[..., :3])
        height, width = image.shape[:2]
        scale = 500.0 / max(height, width) * rng.uniform(0.8, 1.2)
        image = cv2.resize(image, (int(width * scale), int(height * scale)),
                           interpolation=cv2.INTER_AREA)
        folder = os.path.join(root, f"class_{index % classes}")
        os.makedirs(folder, exist_ok=True)
        cv2.imwrite(os.path.join(folder, f"{index:04d}.jpg"), image[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])


def data_pipeline_speed(data_path, config_name, batches, threads, warmup=4):
    """Images/s of src.dataset's training pipeline with the recipe's augmentation."""
    code = f"""
import json, os, sys, time
sys.path.insert(0, {ROOT!r})
os.environ.setdefault("GLOG_v", "3")
import mindspore as ms
from src.dataset import create_train_dataset
from src.model_utils.config import get_config
from src.train_utils import augment_args
config = get_config("bench", argv=["--config_path", {os.path.join(ROOT, 'config', config_name)!r}])
batch = min(config.batch_size, 32)
dataset, _ = create_train_dataset({data_path!r}, config.image_size, batch,
                                  augment=augment_args(config))
epochs = dataset.create_tuple_iterator(num_epochs=-1, output_numpy=True)


def endless():
    while True:  # a new epoch each time the iterator runs out
        yield from epochs


iterator = endless()
# Start-up (worker processes), then drain what was prefetched meanwhile: the
# timed batches come at the pipeline's steady rate.
for _ in range({warmup}):
    next(iterator)
start, images = time.perf_counter(), 0
for _ in range({batches}):
    images += len(next(iterator)[0])
elapsed = time.perf_counter() - start
print("@@" + json.dumps({{"ips": images / elapsed, "workers": dataset.num_workers,
                          "batch": batch, "image_size": config.image_size}}), flush=True)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=900, check=False)
    for line in result.stdout.splitlines():
        if line.startswith(PROTOCOL_PREFIX):
            return json.loads(line[len(PROTOCOL_PREFIX):])
    raise RuntimeError(f"data pipeline benchmark failed:\n{result.stderr[-3000:]}")


def run_data(args, tmp):
    results = []
    photos = os.path.join(tmp, "photos")
    make_photo_folder(photos, count=96 if args.quick else 256)
    digits = os.path.join(tmp, "digits")
    from src.digits import write_digits
    write_digits(digits, image_size=64)
    for name, path, config_name, batches in (
            ("ImageNet recipe (JPEG ~500x375 -> 224, RandAugment, erasing)", photos,
             "ghostnetv2_100_imagenet.yaml", 4 if args.quick else 12),
            ("digits recipe (PNG 64x64)", os.path.join(digits, "train"),
             "ghostnetv2_100_digits.yaml", 10 if args.quick else 30)):
        log(f"data: {name}")
        results.append(dict(data_pipeline_speed(path, config_name, batches, args.threads),
                            name=name))
    return results


# ================================================================== reporting

ENGINE_LABELS = {
    "ms-cell": "this port, MindSpore Cell (eval.py: BN folded, CPU kernels)",
    "ms-mindir": "this port, MINDIR (export.py --fuse_bn --cpu_kernels), nn.GraphCell",
    "ms-mindir-portable": "this port, portable MINDIR (export.py --fuse_bn), nn.GraphCell",
    "torch-eager": "timm, PyTorch eager",
    "ort-port": "this port's ONNX (export.py), onnxruntime",
    "ort-timm": "timm's ONNX (torch.onnx.export), onnxruntime",
}


def inference_table(result):
    rows = result["rows"]
    torch = rows["torch-eager"]
    lines = [f"#### {result['model']}, 224x224 float32",
             "",
             f"| engine | batch {LATENCY_BATCH} ms: median (p25-p75), best | x PyTorch: median, "
             f"best | batch {THROUGHPUT_BATCH} images/s: median (min-max) | x PyTorch: median, "
             "best | logits vs timm |",
             "|---|---|---|---|---|---|"]
    for engine in INFERENCE_ENGINES:
        row = rows[engine]
        lines.append(
            f"| {ENGINE_LABELS[engine]} | {row['latency_ms']:.1f} ({row['latency_p25']:.1f}-"
            f"{row['latency_p75']:.1f}), {row['latency_best']:.1f} | "
            f"{torch['latency_ms'] / row['latency_ms']:.2f}x, "
            f"{torch['latency_best'] / row['latency_best']:.2f}x | "
            f"{row['ips']:.1f} ({row['ips_min']:.1f}-{row['ips_max']:.1f}) | "
            f"{row['ips'] / torch['ips']:.2f}x, {row['ips_max'] / torch['ips_max']:.2f}x | "
            f"{row['agreement']:.1e} |")
    port, timm = rows["ort-port"], rows["ort-timm"]
    lines += ["", f"onnxruntime, time of this port's ONNX / timm's ONNX (1.00x = equal, lower is "
                  f"faster): batch {LATENCY_BATCH} {port['latency_ms'] / timm['latency_ms']:.2f}x "
                  f"(best {port['latency_best'] / timm['latency_best']:.2f}x), batch "
                  f"{THROUGHPUT_BATCH} {timm['ips'] / port['ips']:.2f}x (best "
                  f"{timm['ips_max'] / port['ips_max']:.2f}x). Custom-kernel layers in the port: "
                  f"{result['setup']['kernel_layers']}.", ""]
    return lines


def training_table(results):
    lines = ["#### Training step (forward, loss, backward, momentum SGD), ghostnetv2_100", "",
             "| case | engine | images/s: median (min-max) | x PyTorch: median, best | "
             "peak RSS MB | RSS before training MB |", "|---|---|---|---|---|---|"]
    labels = {"ms-train": "this port, MindSpore (train.py step)",
              "torch-train": "timm, PyTorch eager"}
    for result in results:
        rows = result["rows"]
        for engine, row in rows.items():
            ratio = row["ips"] / rows["torch-train"]["ips"]
            best = row["ips_max"] / rows["torch-train"]["ips_max"]
            lines.append(f"| {result['case']} | {labels[engine]} | {row['ips']:.1f} "
                         f"({row['ips_min']:.1f}-{row['ips_max']:.1f}) | {ratio:.2f}x, "
                         f"{best:.2f}x | "
                         f"{row['peak_rss_mb']:.0f} | {row['rss_before_mb']:.0f} |")
    return lines + [""]


def data_table(results, training):
    train_ips = {}
    for result in training or []:
        train_ips[result["case"]] = result["rows"]["ms-train"]["ips"]
    lines = ["#### Data pipeline (src/dataset.py training pipeline, decode + augment + batch)",
             "", "| pipeline | workers | images/s | port's training images/s |",
             "|---|---|---|---|"]
    matches = (TRAIN_CASES[0][0], TRAIN_CASES[1][0])
    for result, case in zip(results, matches):
        train = train_ips.get(case)
        lines.append(f"| {result['name']} | {result['workers']} | {result['ips']:.0f} | "
                     + (f"{train:.1f} ({case})" if train else "not measured") + " |")
    return lines + [""]


def header(args, load_before):
    found = versions()
    return [f"### GhostNetV2 benchmark, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
            "",
            f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs; "
            f"{args.threads} threads for every framework"
            + (f"; {args.load} busy processes beside them (--load)" if args.load else ""),
            f"- CPU vector extensions: {vector_extensions()}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
            f"- command: `{' '.join([os.path.relpath(sys.executable, ROOT)] + sys.argv)}`",
            f"- load average (1, 5, 15 min) before: {load_before}", ""]


def profile(args):
    """Op-type table of the port (MindSpore profiler), batch 32 and 1, with and
    without the CPU kernels and BN folding."""
    configs = (("MindSpore operators, BatchNorm", False, False),
               ("BN folded", False, True), ("BN folded + CPU kernels", True, True))
    lines = ["#### Where the port's time goes (MindSpore profiler, ghostnetv2_100, 224x224)", ""]
    for batch in (THROUGHPUT_BATCH, LATENCY_BATCH):
        for name, kernels, fused in configs:
            code = PROFILE_CODE.format(root=ROOT, batch=batch, kernels=kernels, fused=fused,
                                       threads=args.threads)
            with tempfile.TemporaryDirectory() as out:
                result = subprocess.run([sys.executable, "-c", code, out], capture_output=True,
                                        text=True, cwd=ROOT, timeout=900, check=False)
            payload = [l for l in result.stdout.splitlines() if l.startswith(PROTOCOL_PREFIX)]
            if not payload:
                raise RuntimeError(f"profiling failed:\n{result.stderr[-3000:]}")
            data = json.loads(payload[0][len(PROTOCOL_PREFIX):])
            lines += [f"batch {batch}, {name}: {data['wall_ms']:.0f} ms per call "
                      f"({data['op_ms']:.0f} ms in operators)", "",
                      "| op type | ms per call | share | calls |", "|---|---|---|---|"]
            for op_type, ms_per_call, share, calls in data["ops"]:
                lines.append(f"| {op_type} | {ms_per_call:.1f} | {share:.0%} | {calls} |")
            lines.append("")
            log(f"profiled batch {batch}: {name}")
    return lines


PROFILE_CODE = """
import csv, glob, json, os, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("GLOG_v", "3")
import numpy as np
import mindspore as ms
os.environ["GHOSTNETV2_CPU_KERNELS"] = "1" if {kernels} else "0"
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
ms.device_context.cpu.op_tuning.threads_num({threads})
from src.cpu_kernels import set_num_threads
set_num_threads({threads})
from src.fuse import fuse_bn
from src.ghostnetv2 import create_model
from mindspore.profiler import ProfilerActivity
net = create_model("ghostnetv2_100")
net.set_train(False)
if {fused}:
    fuse_bn(net)
x = ms.Tensor(np.random.default_rng(0).standard_normal(({batch}, 3, 224, 224), dtype=np.float32))
net(x).asnumpy()
steps = 3
profiler = ms.Profiler(output_path=sys.argv[1], activities=[ProfilerActivity.CPU])
start = time.perf_counter()
for _ in range(steps):
    net(x).asnumpy()
wall = (time.perf_counter() - start) / steps
profiler.stop()
profiler.analyse()
rows = list(csv.DictReader(open(glob.glob(sys.argv[1] + "/*/FRAMEWORK/cpu_op_type_info_0.csv")[0])))
total = sum(float(r["total_compute_time"]) for r in rows) / steps
ops = sorted(((r["op_type"], float(r["total_compute_time"]) / steps,
               float(r["total_compute_time"]) / steps / total,
               int(r["type_occurrences"]) // steps) for r in rows), key=lambda r: -r[1])
print("@@" + json.dumps({{"wall_ms": wall * 1e3, "op_ms": total, "ops": ops}}), flush=True)
"""


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.config)
        return 0
    load_before = load_average()
    report = header(args, load_before)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ghostnetv2_bench_") as tmp:
        if args.profile:
            report += profile(args)
        else:
            training = None
            if "inference" in args.sections:
                for width in args.widths:
                    report += inference_table(run_inference(width, args, tmp))
            if "train" in args.sections:
                training = run_training(args, tmp)
                report += training_table(training)
            if "data" in args.sections:
                report += data_table(run_data(args, tmp), training)
    report += [f"- load average after: {load_average()}; took {time.time() - started:.0f} s", ""]
    text = "\n".join(report)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
