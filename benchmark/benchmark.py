"""GhostNetV2 speed: this MindSpore port against timm (PyTorch) and onnxruntime.

    .venv/bin/python benchmark/benchmark.py                 # everything, widths 1.0 1.3 1.6
    .venv/bin/python benchmark/benchmark.py --quick         # width 1.0, fewer runs: ~5 minutes
    .venv/bin/python benchmark/benchmark.py --sections inference --widths 1.0
    .venv/bin/python benchmark/benchmark.py --profile       # where the port's time goes
    .venv/bin/python benchmark/benchmark.py --profile --sections detection segmentation
                            # the same for the dense models (+ onnxruntime's, + a train step)
    .venv/bin/python benchmark/benchmark.py --quick --load 2  # the same beside 2 busy processes
    .venv/bin/python benchmark/benchmark.py --sections detection segmentation --widths 1.0
                                              # the dense models (not in the default sections:
                                              # ~10 minutes at width 1.0)

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
- detection, segmentation (only when named: slow): the dense models at their
  recipe's size (config/yolov3_ghostnetv2_100_coco.yaml: 320x320, batch 1
  latency and batch 8 images/s; config/deeplabv3_ghostnetv2_100_ade20k.yaml:
  512x512, output stride 8, batch 1 latency) with the engines ms-mindir,
  ms-mindir-portable, ort-port (the exported network with its box decoding /
  final resize, as export.py writes it) and torch-twin (tests/detection_twin.py,
  tests/segmentation_twin.py: timm's backbone + the same neck and heads in
  torch), all on the twin's random weights (BatchNorm statistics randomised),
  the outputs of every engine checked against the twin's (1e-4 of the largest)
  before timing; then one training step of the port (train.py's: the recipe's
  loss, SGD momentum) against the twin with the same loss in torch
  (detector 320 batch 8; segmenter 384 batch 2, and 512 batch 2 where the
  free memory allows it), with peak resident memory.
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
# The dense models at their recipe's size: inference batches (the first for
# latency, a second for throughput) and training (image size, batch,
# resident memory MindSpore needs in GB: a case is skipped, saying so, where
# less is free; the 512 figure was measured: MindSpore 16.6 GB, PyTorch 3.8).
DENSE = {
    "detection": {"recipe": "yolov3_ghostnetv2_100_coco.yaml", "size": 320, "batches": (1, 8),
                  "train": ((320, 8, 6), )},
    "segmentation": {"recipe": "deeplabv3_ghostnetv2_100_ade20k.yaml", "size": 512,
                     "batches": (1, ), "train": ((384, 2, 10), (512, 2, 18))},
}
DENSE_ENGINES = ("ms-mindir", "ms-mindir-portable", "torch-twin", "ort-port")
WORKER_OF_DENSE_ENGINE = {"ms-mindir": "ms-dense", "ms-mindir-portable": "ms-dense",
                          "torch-twin": "torch-dense", "ort-port": "ort"}
DENSE_TOLERANCE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", nargs="+", default=None, choices=list(WIDTHS),
                        help="default: all three (--quick: 1.0); the detection and segmentation "
                             "sections: 1.0 unless given")
    parser.add_argument("--sections", nargs="+", default=["inference", "train", "data"],
                        choices=["inference", "train", "data"] + list(DENSE),
                        help="default: inference train data; detection and segmentation (the "
                             "dense models, about 10 minutes) run only when named")
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
                        help="instead: MindSpore profiler op-type table of the port (width 1.0; "
                             "with --sections detection / segmentation: of the dense models)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 3 if args.quick else 7
    # The dense models take minutes per width: width 1.0 unless --widths says.
    args.dense_widths = args.widths or ["1.0"]
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
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:  # set once per process: --profile's code sets it before building
        pass
    from src.cpu_kernels import set_num_threads
    set_num_threads(threads)


def as_arrays(outputs):
    """An engine's outputs (a Tensor, an array, a list of them) as numpy arrays."""
    if isinstance(outputs, (list, tuple)):
        return [a for o in outputs for a in as_arrays(o)]
    return [outputs.asnumpy() if hasattr(outputs, "asnumpy") else np.asarray(outputs)]


def first_output(outputs):
    return as_arrays(outputs)[0]


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
    """config["onnx"]: {engine: ONNX file}, each run at config's batches and size."""

    def __init__(self, config):
        import onnxruntime as ort
        options = onnxruntime_options(config["threads"])
        self.sessions = {engine: ort.InferenceSession(path, options,
                                                      providers=["CPUExecutionProvider"])
                         for engine, path in config["onnx"].items()}
        size = config.get("size", IMAGE_SIZE)
        self.arrays = {b: inputs(b, size) for b in config.get("batches", (LATENCY_BATCH,
                                                                          THROUGHPUT_BATCH))}

    def callable(self, engine, batch):
        session = self.sessions[engine]
        feed = {session.get_inputs()[0].name: self.arrays[batch]}
        return lambda: session.run(None, feed)


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


def recipe_config(recipe, **overrides):
    """A recipe in config/ as train.py reads it (every key its task knows, with
    train.py's defaults), without the data checks; overrides set keys after."""
    from src.model_utils.config import get_config
    from src.tasks import get_task, task_name
    from train import recipe_task, train_defaults
    argv = ["--config_path", os.path.join(ROOT, "config", recipe)]
    task = get_task(task_name({"task": recipe_task(argv)}))
    config = get_config("benchmark", argv, extra_defaults=train_defaults(task), strict=True)
    config.update(overrides, device_target="CPU")
    return config


def train_config(case):
    """The digits recipe's optimisation (momentum SGD) at this case's size and batch."""
    _, size, batch, classes = case
    return recipe_config("ghostnetv2_100_digits.yaml", image_size=size, batch_size=batch,
                         num_classes=classes)


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


# ---------------------------------------------------------------- dense models

def dense_recipe(section, model, **overrides):
    return recipe_config(DENSE[section]["recipe"], model=model, pretrained="", **overrides)


def dense_eval_network(section, model, params=None):
    """The exported network of a dense recipe (detector with its box decoding,
    segmenter with its final resize), weights loaded, BatchNorm folded: what
    export.py --fuse_bn writes."""
    from src.fuse import fuse_bn
    from src.tasks import get_task
    from src.weights import load_params
    net = get_task(section).create_eval_network(dense_recipe(section, model))
    if params is not None:
        load_params(net, params, "the PyTorch twin's weights")
    net.set_train(False)
    return fuse_bn(net)


def twin_network(section, model, size, seed=0):
    """The PyTorch twin of a dense recipe, in eval mode, initialised like a
    trained network, BatchNorm statistics randomised. The segmenter's are
    measured on photographs at ``size``: calibrated at a small size only, its
    activations grow at 512 until float32 itself is off by 5e-3 (the twin's
    float32 output against its float64 one), and no engine could agree at 1e-4."""
    if section == "detection":
        from tests.detection_twin import twin
        return twin(model, dense_recipe(section, model).num_classes, seed)
    from tests.segmentation_twin import realistic_twin
    config = dense_recipe(section, model)
    return realistic_twin(model, config.num_classes, config.output_stride, seed, (size, size),
                          channels=config.aspp_channels, dilations=tuple(config.aspp_dilations),
                          aux_channels=config.aux_channels)


def twin_port_state(section, twin):
    if section == "detection":
        from tests.detection_twin import port_state
        return port_state(twin)
    from tests.segmentation_twin import twin_state_for_port
    return twin_state_for_port(twin)


class TwinInference:
    """The PyTorch twin in eager mode (torch.no_grad); writes its weights for the
    port (config["tmp"]/port_weights.npz). The detector's twin decodes its boxes
    as the exported detector does."""

    def __init__(self, config):
        import torch
        torch.set_num_threads(config["threads"])
        self.torch = torch
        section, size = config["section"], config["size"]
        self.model = twin_network(section, config["model"], size)
        self.port_weights = os.path.join(config["tmp"], "port_weights.npz")
        np.savez(self.port_weights, **twin_port_state(section, self.model))
        self.tensors = {b: torch.from_numpy(inputs(b, size)) for b in config["batches"]}
        self.decode = None
        if section == "detection":
            from src.models.heads.yolov3_head import STRIDES, grid_anchors
            from src.tasks.detection import anchors_of
            from tests.detection_twin import decode
            table = grid_anchors(anchors_of(dense_recipe(section, config["model"])), STRIDES,
                                 size, size)
            self.decode = lambda maps: decode(maps, table)

    def callable(self, engine, batch):
        x = self.tensors[batch]

        def run():
            with self.torch.no_grad():
                out = self.model(x)
                return (self.decode(out) if self.decode else out).numpy()
        return run


class MindSporeDenseInference:
    """The port's dense network exported as export.py writes it: MINDIR with the
    CPU kernels, portable MINDIR (one per batch), ONNX (batch axis free)."""

    def __init__(self, config):
        import mindspore as ms
        from export import export_network
        from src.mindir_infer import load_mindir
        from src.tasks import get_task
        set_mindspore_threads(config["threads"])
        section, size = config["section"], config["size"]
        with np.load(config["port_weights"]) as weights:
            params = {k: weights[k] for k in weights.files}
        net = dense_eval_network(section, config["model"], params)
        self.tensors = {b: ms.Tensor(inputs(b, size)) for b in config["batches"]}
        self.engines = {"ms-mindir": {}, "ms-mindir-portable": {}}
        for batch in self.tensors:
            for engine, kernels in (("ms-mindir", True), ("ms-mindir-portable", False)):
                path = os.path.join(config["tmp"], f"{section}_{engine}_b{batch}.mindir")
                export_network(net, "MINDIR", path, batch, size, size, cpu_kernels=kernels)
                self.engines[engine][batch] = load_mindir(path)
        self.onnx_path = os.path.join(config["tmp"], f"{section}.onnx")
        export_network(net, "ONNX", self.onnx_path, 1, size, size,
                       output_names=get_task(section).OUTPUT_NAMES)

    def callable(self, engine, batch):
        cell, x = self.engines[engine][batch], self.tensors[batch]
        return lambda: cell(x).asnumpy()


def dense_training_batch(section, config):
    """One training batch of the recipe's shape: images, then detection targets
    (boxes assigned as the data pipeline does) or a label map with ignored pixels."""
    rng = np.random.default_rng(0)
    batch, size = config.batch_size, config.image_size
    images = inputs(batch, size)
    if section == "segmentation":
        from src.models.losses.segmentation_loss import IGNORE_LABEL
        labels = rng.integers(0, config.num_classes, (batch, size, size)).astype(np.int32)
        labels[:, : size // 8] = IGNORE_LABEL
        return images, labels
    from src.models.heads.yolov3_head import STRIDES, grid_anchors
    from src.models.losses.yolov3_loss import assign_targets
    from src.tasks.detection import anchors_of
    table = grid_anchors(anchors_of(config), STRIDES, size, size)
    targets = []
    for _ in range(batch):
        corner = rng.uniform(0, size * 0.6, (4, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(16, size * 0.4, (4, 2))], 1)
        targets.append(assign_targets(table, np.minimum(boxes, size),
                                      rng.integers(0, config.num_classes, 4),
                                      np.zeros(4, bool), size, size))
    return (images, np.stack([t[0] for t in targets]), np.stack([t[1] for t in targets]))


class MindSporeDenseTraining:
    """train.py's step of a dense recipe: the task's train step (its loss, clip,
    momentum SGD of the recipe) at config's size and batch."""

    def __init__(self, config):
        import mindspore as ms
        from src.tasks import get_task
        from src.train_utils import create_optimizer
        set_mindspore_threads(config["threads"])
        section = config["section"]
        recipe = dense_recipe(section, config["model"], image_size=config["size"],
                              batch_size=config["batch"])
        task = get_task(section)
        net = task.build_network(recipe)
        optimizer = create_optimizer(net, recipe, [recipe.lr] * 1000)
        self.step = task.create_train_step(net, recipe, optimizer)
        self.batch = [ms.Tensor(a) for a in dense_training_batch(section, recipe)]
        self.rss_before = current_rss_mb()

    def run(self):
        return float(self.step(*self.batch).asnumpy())


class TorchDenseTraining:
    """The twin in train mode with the port's loss in torch (tests/*_twin.py),
    torch momentum SGD with the recipe's lr, momentum and weight decay (every
    parameter decayed, as the recipes say), the detector's gradient clip."""

    def __init__(self, config):
        import torch
        torch.set_num_threads(config["threads"])
        self.torch = torch
        section = self.section = config["section"]
        recipe = dense_recipe(section, config["model"], image_size=config["size"],
                              batch_size=config["batch"])
        self.model = twin_network(section, config["model"], config["size"]).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=recipe.lr,
                                         momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay)
        self.clip = recipe.clip_grad if section == "detection" else 0
        self.weights = ((recipe.cls_weight, recipe.conf_weight, recipe.xy_weight,
                         recipe.wh_weight) if section == "detection" else recipe.aux_weight)
        self.batch = [torch.from_numpy(a) for a in dense_training_batch(section, recipe)]
        self.rss_before = current_rss_mb()

    def loss(self):
        if self.section == "detection":
            from tests.detection_twin import yolov3_loss
            images, box_targets, labels = self.batch
            return yolov3_loss(self.model(images), box_targets, labels, weights=self.weights)
        from tests.segmentation_twin import segmentation_loss
        images, labels = self.batch
        return segmentation_loss(*self.model.forward_train(images), labels, self.weights)

    def run(self):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        if self.clip:
            self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(loss)


WORKERS = {"ms": MindSporeInference, "torch": TorchInference, "ort": OnnxRuntimeInference,
           "ms-train": MindSporeTraining, "torch-train": TorchTraining, "file": FileInference,
           "ms-dense": MindSporeDenseInference, "torch-dense": TwinInference,
           "ms-dense-train": MindSporeDenseTraining, "torch-dense-train": TorchDenseTraining}


def worker_main(kind, config_json):
    config = json.loads(config_json)
    try:
        worker = WORKERS[kind](config)
    except Exception as err:  # report setup failures to the coordinator, then exit
        reply({"error": f"{kind} worker setup failed: {type(err).__name__}: {err}"})
        raise
    setup = {}
    for attr in ("onnx_path", "kernel_layers", "rss_before", "port_weights"):
        if hasattr(worker, attr):
            setup[attr] = getattr(worker, attr)
    reply(setup)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        if command["cmd"] == "logits":
            logits = first_output(worker.callable(command["engine"], LATENCY_BATCH)())
            reply({"logits": np.asarray(logits).tolist()})
        elif command["cmd"] == "outputs":  # large: through a file
            outputs = worker.callable(command["engine"], command["batch"])()
            np.savez(command["path"], *as_arrays(outputs))
            reply({"path": command["path"]})
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
    workers = {}
    try:
        workers["ms"] = Worker("ms", base)
        workers["torch"] = Worker("torch", base)
        workers["ort"] = Worker("ort", dict(base, onnx={
            "ort-port": workers["ms"].setup["onnx_path"],
            "ort-timm": workers["torch"].setup["onnx_path"]}))
        by_engine = {engine: workers[WORKER_OF_ENGINE[engine]] for engine in INFERENCE_ENGINES}
        reference = np.asarray(by_engine["torch-eager"].ask(cmd="logits",
                                                           engine="torch-eager")["logits"])
        agreement = {}
        for engine in INFERENCE_ENGINES:
            logits = np.asarray(by_engine[engine].ask(cmd="logits", engine=engine)["logits"])
            agreement[engine] = float(np.abs(logits - reference).max() / np.abs(reference).max())
        log(f"{model}: logits vs timm (max |diff| / max |logit|): "
            + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()))
        rows = time_engines(by_engine, agreement, (LATENCY_BATCH, THROUGHPUT_BATCH),
                            5 if args.quick else 10, args, model)
        setup = {"kernel_layers": workers["ms"].setup.get("kernel_layers")}
    finally:
        for worker in workers.values():
            worker.close()
    return {"model": model, "rows": rows, "setup": setup}


def time_engines(by_engine, agreement, batches, calls, args, name):
    """Warm every engine of ``agreement`` ({engine: its outputs' difference
    from the reference}) up, then time them in turns (with --load busy
    processes beside them): batches[0] latency (`calls` calls a round),
    batches[1] (if any) throughput (one call a round). Returns {engine:
    statistics and agreement}."""
    engines = list(agreement)
    for engine in engines:  # warm-up: compile, caches, thread pools
        by_engine[engine].ask(cmd="infer", engine=engine, batch=batches[0], calls=3)
        for batch in batches[1:]:
            by_engine[engine].ask(cmd="infer", engine=engine, batch=batch, calls=1)
    busy = busy_processes(args.load)
    try:
        log(f"{name}: batch {batches[0]} latency, {args.runs} rounds x {calls} calls")
        latency = interleaved(by_engine, engines, args.runs, lambda e, w: w.ask(
            cmd="infer", engine=e, batch=batches[0], calls=calls)["times"])
        throughput = {}
        if len(batches) > 1:
            log(f"{name}: batch {batches[1]} throughput, {args.runs} rounds")
            throughput = interleaved(by_engine, engines, args.runs, lambda e, w: w.ask(
                cmd="infer", engine=e, batch=batches[1], calls=1)["times"][0])
    finally:
        stop_processes(busy)
    rows = {}
    for engine in engines:
        all_calls = [t for round_times in latency[engine] for t in round_times]
        rows[engine] = {
            "latency_ms": 1e3 * float(np.median(all_calls)),
            "latency_p25": 1e3 * percentile(all_calls, 25),
            "latency_p75": 1e3 * percentile(all_calls, 75),
            "latency_best": 1e3 * float(min(all_calls)),
            "agreement": agreement[engine],
        }
        if throughput:
            images_per_s = [batches[1] / t for t in throughput[engine]]
            rows[engine].update(ips=float(np.median(images_per_s)),
                                ips_min=float(min(images_per_s)),
                                ips_max=float(max(images_per_s)))
    return rows


def output_agreement(by_engine, engines, reference_engine, batch, tmp):
    """max |outputs - reference's| / max |reference| per engine, over every output."""
    def outputs(engine):
        path = os.path.join(tmp, f"outputs_{engine}.npz")
        by_engine[engine].ask(cmd="outputs", engine=engine, batch=batch, path=path)
        with np.load(path) as saved:
            return [saved[k] for k in saved.files]
    reference = outputs(reference_engine)
    scale = max(float(np.abs(r).max()) for r in reference)
    agreement = {}
    for engine in engines:
        got = outputs(engine)
        if [g.shape for g in got] != [r.shape for r in reference]:
            raise RuntimeError(f"{engine}: output shapes {[g.shape for g in got]} differ from "
                               f"{reference_engine}'s {[r.shape for r in reference]}")
        agreement[engine] = max(float(np.abs(g - r).max()) for g, r in zip(got, reference)) / scale
    return agreement


def run_dense_inference(section, width, args, tmp):
    """The dense model's engines, outputs checked against the twin, then timed."""
    spec, model = DENSE[section], WIDTHS[width]
    base = {"section": section, "model": model, "size": spec["size"],
            "batches": list(spec["batches"]), "threads": args.threads, "tmp": tmp}
    log(f"{section} {model}: starting workers (twin, exports, compiles)")
    workers = {}
    try:
        workers["torch-dense"] = Worker("torch-dense", base)
        workers["ms-dense"] = Worker("ms-dense", dict(
            base, port_weights=workers["torch-dense"].setup["port_weights"]))
        workers["ort"] = Worker("ort", dict(base, onnx={
            "ort-port": workers["ms-dense"].setup["onnx_path"]}))
        by_engine = {e: workers[WORKER_OF_DENSE_ENGINE[e]] for e in DENSE_ENGINES}
        agreement = output_agreement(by_engine, DENSE_ENGINES, "torch-twin", spec["batches"][0],
                                     tmp)
        log(f"{section}: outputs vs the twin (max |diff| / max |output|): "
            + ", ".join(f"{k} {v:.1e}" for k, v in agreement.items()))
        wrong = {k: v for k, v in agreement.items() if v > DENSE_TOLERANCE}
        if wrong:
            raise RuntimeError(f"{section}: outputs differ from the PyTorch twin's by more than "
                               f"{DENSE_TOLERANCE:g} of the largest output: {wrong}; the timings "
                               "would compare different networks")
        calls = 3 if section == "segmentation" or args.quick else 10
        rows = time_engines(by_engine, agreement, spec["batches"], calls, args,
                            f"{section} {model}")
    finally:
        for worker in workers.values():
            worker.close()
    return {"section": section, "model": model, "rows": rows}


def free_memory_gb():
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0 ** 2
    return float("inf")


def run_dense_training(section, args, tmp):
    """One training step of the port against the twin, each in its own worker."""
    results = []
    steps = 1 if args.quick or section == "segmentation" else 2
    for size, batch, needs_gb in DENSE[section]["train"]:
        name = f"{section} {size}px batch {batch}"
        free = free_memory_gb()
        if free < needs_gb:
            log(f"training {name}: skipped, {free:.1f} GB free < {needs_gb} GB needed")
            results.append({"case": name, "skipped": f"skipped: {free:.1f} GB of memory free, "
                                                     f"MindSpore needs about {needs_gb} GB"})
            continue
        base = {"section": section, "model": WIDTHS["1.0"], "size": size, "batch": batch,
                "threads": args.threads, "tmp": tmp}
        results.append(dict(train_rounds(base, ("ms-dense-train", "torch-dense-train"), steps,
                                         args, name), case=name))
    return results


def run_training(args, tmp):
    results = []
    steps = 1 if args.quick else 2
    for case_index, case in enumerate(TRAIN_CASES):
        name = case[0]
        base = {"model": WIDTHS["1.0"], "threads": args.threads, "tmp": tmp, "case": case_index,
                "batch": case[2]}
        results.append(dict(train_rounds(base, ("ms-train", "torch-train"), steps, args, name),
                            case=name))
    return results


def train_rounds(base, kinds, steps, args, name):
    """Training images/s of each worker kind (its own process), in turns."""
    log(f"training {name}: starting workers")
    workers, busy = {}, []
    try:
        for kind in kinds:
            workers[kind] = Worker(kind, base)
        for kind in kinds:  # warm-up: compile, allocate
            workers[kind].ask(cmd="train", steps=steps)
        busy = busy_processes(args.load)
        log(f"training {name}: {args.runs} rounds x {steps} steps")
        last = {}

        def measure(kind, worker):
            answer = worker.ask(cmd="train", steps=steps)
            last[kind] = answer
            return answer["times"]
        times = interleaved(workers, kinds, args.runs, measure)
    finally:
        stop_processes(busy)
        for worker in workers.values():
            worker.close()
    rows = {}
    for kind in kinds:
        per_round = [base["batch"] / float(np.median(t)) for t in times[kind]]
        rows[kind] = {"ips": float(np.median(per_round)), "ips_min": min(per_round),
                      "ips_max": max(per_round), "peak_rss_mb": last[kind]["peak_rss_mb"],
                      "rss_before_mb": workers[kind].setup.get("rss_before")}
    return {"rows": rows}


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


TRAIN_LABELS = {"ms-train": "this port, MindSpore (train.py step)",
                "torch-train": "timm, PyTorch eager",
                "ms-dense-train": "this port, MindSpore (train.py step)",
                "torch-dense-train": "PyTorch twin, eager, the same loss"}


def training_table(results, title="ghostnetv2_100", digits=1):
    lines = [f"#### Training step (forward, loss, backward, momentum SGD), {title}", "",
             "| case | engine | images/s: median (min-max) | x PyTorch: median, best | "
             "peak RSS MB | RSS before training MB |", "|---|---|---|---|---|---|"]
    for result in results:
        if "skipped" in result:
            lines.append(f"| {result['case']} | {result['skipped']} | | | | |")
            continue
        rows = result["rows"]
        torch = next(row for kind, row in rows.items() if kind.startswith("torch"))
        for engine, row in rows.items():
            ratio = row["ips"] / torch["ips"]
            best = row["ips_max"] / torch["ips_max"]
            lines.append(f"| {result['case']} | {TRAIN_LABELS[engine]} | {row['ips']:.{digits}f} "
                         f"({row['ips_min']:.{digits}f}-{row['ips_max']:.{digits}f}) | "
                         f"{ratio:.2f}x, "
                         f"{best:.2f}x | "
                         f"{row['peak_rss_mb']:.0f} | {row['rss_before_mb']:.0f} |")
    return lines + [""]


DENSE_LABELS = {
    "ms-mindir": "this port, MINDIR (export.py --fuse_bn --cpu_kernels), nn.GraphCell",
    "ms-mindir-portable": "this port, portable MINDIR (export.py --fuse_bn), nn.GraphCell",
    "torch-twin": "PyTorch twin (timm backbone + the same neck/heads), eager",
    "ort-port": "this port's ONNX (export.py), onnxruntime",
}


def dense_inference_table(result):
    spec, rows = DENSE[result["section"]], result["rows"]
    batches, size = spec["batches"], spec["size"]
    twin, ort = rows["torch-twin"], rows["ort-port"]
    throughput = len(batches) > 1
    header_cells = [f"batch {batches[0]} ms: median (p25-p75), best", "x PyTorch: median, best"]
    if throughput:
        header_cells += [f"batch {batches[1]} images/s: median (min-max)",
                         "x PyTorch: median, best"]
    lines = [f"#### {result['section']}, {result['model']}, {size}x{size} float32 "
             f"(config/{spec['recipe']})", "",
             "| engine | " + " | ".join(header_cells) + " | outputs vs the twin |",
             "|---" * (len(header_cells) + 2) + "|"]
    for engine in DENSE_ENGINES:
        row = rows[engine]
        cells = [f"{row['latency_ms']:.1f} ({row['latency_p25']:.1f}-{row['latency_p75']:.1f}), "
                 f"{row['latency_best']:.1f}",
                 f"{twin['latency_ms'] / row['latency_ms']:.2f}x, "
                 f"{twin['latency_best'] / row['latency_best']:.2f}x"]
        if throughput:
            cells += [f"{row['ips']:.1f} ({row['ips_min']:.1f}-{row['ips_max']:.1f})",
                      f"{row['ips'] / twin['ips']:.2f}x, {row['ips_max'] / twin['ips_max']:.2f}x"]
        lines.append(f"| {DENSE_LABELS[engine]} | " + " | ".join(cells)
                     + f" | {row['agreement']:.1e} |")
    mindir = rows["ms-mindir"]
    note = (f"MINDIR (CPU kernels) against onnxruntime: batch {batches[0]} time "
            f"{mindir['latency_ms'] / ort['latency_ms']:.2f}x onnxruntime's")
    if throughput:
        note += f", batch {batches[1]} images/s {mindir['ips'] / ort['ips']:.2f}x"
    return lines + ["", note + " (goal: time <= 1.2x, images/s >= 1x).", ""]


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
            build = CLASSIFIER_BUILD.format(fused=fused)
            lines += profile_table(f"batch {batch}, {name}", build, batch, IMAGE_SIZE, kernels,
                                   args.threads)
            log(f"profiled batch {batch}: {name}")
    return lines


def profile_dense(args):
    """Op-type tables of each dense model named in --sections: its exported
    network (BN folded, CPU kernels on) at the recipe's size, batch 1, in
    MindSpore and in onnxruntime; the port's train step at the first
    training case."""
    lines = []
    for section in (s for s in args.sections if s in DENSE):
        spec, model = DENSE[section], WIDTHS[args.dense_widths[0]]
        lines += [f"#### Where the {section} time goes (MindSpore profiler, {model}, "
                  f"{spec['size']}x{spec['size']}, BN folded, CPU kernels)", ""]
        build = DENSE_BUILD.format(section=section, model=model, folder=os.path.dirname(__file__))
        lines += profile_table(f"MINDIR network, {section} batch 1", build, 1, spec["size"],
                               True, args.threads)
        lines += profile_table(f"its ONNX in onnxruntime (node events of its profiler), "
                               f"{section} batch 1", build, 1, spec["size"], True, args.threads,
                               code=ORT_PROFILE_CODE)
        size, batch, _ = spec["train"][0]
        config = {"section": section, "model": model, "size": size, "batch": batch,
                  "threads": args.threads}
        build = DENSE_TRAIN_BUILD.format(folder=os.path.dirname(__file__), config=config)
        lines += profile_table(f"MindSpore train step (train.py's), {section} {size}px batch "
                               f"{batch}", build, batch, size, True, args.threads)
        log(f"profiled {section}")
    return lines


def profile_table(title, build, batch, size, kernels, threads, code=None):
    """Run PROFILE_CODE (or ``code``) around the network `build` makes; its
    op-type table."""
    code = (code or PROFILE_CODE).format(root=ROOT, batch=batch, size=size, kernels=kernels,
                                         threads=threads, build=build)
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", code, out], capture_output=True,
                                text=True, cwd=ROOT, timeout=900, check=False)
    payload = [l for l in result.stdout.splitlines() if l.startswith(PROTOCOL_PREFIX)]
    if not payload:
        raise RuntimeError(f"profiling failed:\n{result.stderr[-3000:]}")
    data = json.loads(payload[0][len(PROTOCOL_PREFIX):])
    lines = [f"{title}: {data['wall_ms']:.0f} ms per call "
             f"({data['op_ms']:.0f} ms in operators)", "",
             "| op type | ms per call | share | calls |", "|---|---|---|---|"]
    for op_type, ms_per_call, share, calls in data["ops"]:
        lines.append(f"| {op_type} | {ms_per_call:.1f} | {share:.0%} | {calls} |")
    return lines + [""]


CLASSIFIER_BUILD = """
from src.fuse import fuse_bn
from src.ghostnetv2 import create_model
net = create_model("ghostnetv2_100")
net.set_train(False)
if {fused}:
    fuse_bn(net)
"""
DENSE_BUILD = """
sys.path.insert(0, {folder!r})
from benchmark import dense_eval_network
net = dense_eval_network({section!r}, {model!r})
"""
DENSE_TRAIN_BUILD = """
sys.path.insert(0, {folder!r})
from benchmark import MindSporeDenseTraining
run = MindSporeDenseTraining({config!r}).run
"""


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
from mindspore.profiler import ProfilerActivity
x = ms.Tensor(np.random.default_rng(0).standard_normal(({batch}, 3, {size}, {size}),
                                                       dtype=np.float32))
{build}
if "run" not in globals():  # a network to call on x (else the build's run: a train step)
    def run():
        return net(x).asnumpy()
run()
steps = 3
profiler = ms.Profiler(output_path=sys.argv[1], activities=[ProfilerActivity.CPU])
start = time.perf_counter()
for _ in range(steps):
    run()
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

# The same table for onnxruntime on the network's ONNX export (export.py's).
ORT_PROFILE_CODE = """
import collections, json, os, sys, time
sys.path.insert(0, {root!r})
os.environ.setdefault("GLOG_v", "3")
import numpy as np
import mindspore as ms
import onnxruntime as ort
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
from export import export_network
{build}
from benchmark import onnxruntime_options  # the build put benchmark/ on the path
path = os.path.join(sys.argv[1], "net.onnx")
export_network(net, "ONNX", path, 1, {size}, {size})
options = onnxruntime_options({threads})
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feed = {{session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
    ({batch}, 3, {size}, {size}), dtype=np.float32)}}
session.run(None, feed)
options.enable_profiling = True
options.profile_file_prefix = os.path.join(sys.argv[1], "ort")
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
session.run(None, feed)  # warm-up, dropped below
steps = 3
start = time.perf_counter()
for _ in range(steps):
    session.run(None, feed)
wall = (time.perf_counter() - start) / steps
events = json.load(open(session.end_profiling()))
runs = [e for e in events if e.get("name") == "model_run"]
first_timed = runs[-steps]["ts"]
total, calls = collections.Counter(), collections.Counter()
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
        total[e["args"]["op_name"]] += e["dur"] / 1e3 / steps
        calls[e["args"]["op_name"]] += 1
op_ms = sum(total.values())
ops = [(k, v, v / op_ms, calls[k] // steps) for k, v in total.most_common()]
print("@@" + json.dumps({{"wall_ms": wall * 1e3, "op_ms": op_ms, "ops": ops}}), flush=True)
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
            dense = any(s in DENSE for s in args.sections)
            report += profile_dense(args) if dense else profile(args)
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
            for section in (s for s in args.sections if s in DENSE):
                for width in args.dense_widths:
                    report += dense_inference_table(run_dense_inference(section, width, args,
                                                                        tmp))
                report += training_table(run_dense_training(section, args, tmp),
                                         f"{section}, ghostnetv2_100", digits=2)
    report += [f"- load average after: {load_average()}; took {time.time() - started:.0f} s", ""]
    text = "\n".join(report)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
