"""Export GhostNetV2 for inference: MINDIR (default), AIR (Ascend only) or ONNX.

Classifiers, detectors and segmenters alike: the task comes from the model
info recorded with the weights (none recorded: classification), and
src/tasks/<task>.py builds the network and says what the file holds.

    python export.py --checkpoint_path ghostnetv2_100.ckpt
    python export.py --checkpoint_path ck_ghostnetv2_10.pth.tar --file_format ONNX
    python export.py --checkpoint_path best.ckpt --image_height 160 --image_width 192 \\
        --batch_size 8 --file_name outputs/ghostnetv2_160x192

The checkpoint may be a MindSpore .ckpt (training checkpoints too: EMA weights
are preferred, optimizer state is dropped) or PyTorch .pth / .pth.tar /
.safetensors weights (converted in memory). The model and num_classes are read
off the weights unless given. The network is exported in inference mode
(BatchNorm statistics, no dropout); the file is written only once the export
succeeded.

MINDIR and AIR have a fixed input shape (batch_size x 3 x H x W). ONNX files
get a dynamic batch dimension named 'batch' (input 'image', a classifier's
output 'logits'); batch_size only sets the batch the graph is traced with.

H x W default to the input size the weights were trained at (the model info
train.py records in its checkpoints; 224x224 with a warning when nothing is
recorded). Every file describes itself (src/model_info.py): ONNX files hold
the model info (class names, input size, crop, mean/std) in metadata_props
under 'model_info'; MINDIR and AIR files get it as a JSON file beside them,
<file>.json, which preprocess.py, infer.py and the edge scripts read.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

from src.checkpoint import suggest_checkpoint
from src.ghostnetv2 import list_models
from src.model_info import read_info, set_onnx_info, write_sidecar
from src.tasks import get_task, task_name
from src.train_utils import ConfigError
from src.weights import WeightsError, atomic_write

FORMATS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
DEVICES = ("CPU", "GPU", "Ascend")
INPUT_NAME = "image"
BATCH_AXIS = "batch"


class ExportError(RuntimeError):
    """An export that cannot be done; the message says why and what to do instead."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--checkpoint_path", default="",
                        help=".ckpt, .pth, .pth.tar or .safetensors weights (required)")
    parser.add_argument("--file_format", default="MINDIR", type=str.upper, choices=sorted(FORMATS),
                        help="MINDIR (MindSpore / MindSpore Lite / Ascend 310), AIR (Ascend, "
                             "for ATC), ONNX (onnxruntime and other runtimes)")
    parser.add_argument("--file_name", default=None,
                        help="output file, the format's suffix is added if missing "
                             "(default: the model name, in the current folder)")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="network of the weights (default: inferred from them)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classifier outputs (default: read off the weights)")
    parser.add_argument("--batch_size", type=int, default=1,
                        help="input batch of MINDIR/AIR (fixed; 1 for ascend310_infer); for ONNX "
                             "only the traced batch (the file's batch axis is dynamic)")
    parser.add_argument("--fuse_bn", action="store_true",
                        help="fold BatchNorm into the convolutions: a faster file whose logits "
                             "equal the checkpoint's up to float32 rounding")
    parser.add_argument("--cpu_kernels", action="store_true",
                        help="MINDIR for MindSpore on this CPU machine: keeps the custom CPU "
                             "kernels (2-4x faster there, with --fuse_bn), but runs only "
                             "where their library exists (~/.cache/ghostnetv2_kernels); not for "
                             "Ascend, MindSpore Lite or another machine")
    parser.add_argument("--image_height", type=int, default=None,
                        help="input height (default: the recorded training size, else 224)")
    parser.add_argument("--image_width", type=int, default=None,
                        help="input width (default: the recorded training size, else 224)")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="eval crop recorded with the file for its users (default: the "
                             "weights' recorded crop_pct, else 0.875)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICES,
                        help="backend that compiles the graph; AIR needs Ascend")
    args = parser.parse_args(argv)
    if not args.checkpoint_path:
        parser.error(suggest_checkpoint(["python", "export.py", *(sys.argv[1:] if argv is None
                                                                   else argv)]))
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    return args


def output_path(file_name, file_format, model):
    """Absolute output path with the format's suffix (MindSpore would append it anyway)."""
    suffix = FORMATS[file_format]
    path = file_name or model
    if not path.lower().endswith(suffix):
        path += suffix
    return os.path.abspath(os.path.expanduser(path))


def check_backend(file_format, device_target, cpu_kernels=False):
    """Fail before any work when the format cannot be produced on this backend."""
    if cpu_kernels and (file_format != "MINDIR" or device_target != "CPU"):
        raise ExportError(f"--cpu_kernels writes a MINDIR for MindSpore on the CPU; this run "
                          f"asks for {file_format} on {device_target}. Drop --cpu_kernels: the "
                          f"default file holds standard operators only and runs anywhere.")
    if file_format == "AIR" and device_target != "Ascend":
        raise ExportError(f"AIR export needs an Ascend device (--device_target Ascend on a machine "
                          f"with Ascend and MindSpore's Ascend package); this run targets "
                          f"{device_target}. Export MINDIR (runs on Ascend 310 through "
                          f"ascend310_infer/ and on MindSpore Lite) or ONNX instead.")
    from src.train_utils import set_device
    try:
        set_device(device_target)
    except ConfigError as err:
        raise ExportError(str(err)) from None
    if cpu_kernels:
        from src.cpu_kernels import kernel_library
        if kernel_library() is None:
            raise ExportError("--cpu_kernels: the CPU kernel library cannot be built here (the "
                              "warning above says why); export without --cpu_kernels")


def build_network(checkpoint_path, model=None, num_classes=None, fuse=False, info=None):
    """The network of the weights (of the task their model info names),
    loaded, in inference mode; returns (net, model, summary).

    fuse: fold BatchNorm into the convolutions (src/fuse.py): faster inference,
    outputs equal up to float32 rounding."""
    if info is None:
        info, _ = read_info(checkpoint_path)
    return get_task(task_name(info)).load_network(checkpoint_path, info, model, num_classes, fuse)


def check_image_size(net, height, width):
    minimum = getattr(net, "min_input_size", 1)
    if min(height, width) < minimum:
        raise ExportError(f"--image_height/--image_width {height}x{width} is below the smallest "
                          f"input of the network, {minimum}x{minimum}; export at a larger size")


def make_batch_dynamic(onnx_path, info=None):
    """Give every Resize of the ONNX graph a batch-independent output size
    (and put ``info``, the model info, into its metadata_props).

    MindSpore 2.7.2's exporter marks the input's batch axis dynamic
    (``dynamic_axes``) but writes each ResizeNearestNeighbor as an ONNX Resize
    with a constant ``sizes`` of (traced batch, C, H, W): at any other batch
    onnxruntime fails or, at batch 1, silently broadcasts to the traced batch.
    Here ``sizes`` becomes concat(shape(x)[:1], (C, H, W)), and the output's
    batch axis is named like the input's. Returns the number of Resize nodes
    changed.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update({node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                      for node in graph.node if node.op_type == "Constant"})
    nodes, replaced = [], []
    for index, node in enumerate(graph.node):
        if node.op_type == "Resize" and len(node.input) == 4 and node.input[3] in constants:
            sizes = f"dynamic_batch_sizes_{index}"
            nodes += _runtime_batch_sizes(graph, node.input[0], constants[node.input[3]], sizes)
            replaced.append(node.input[3])
            node.input[3] = sizes
        nodes.append(node)
    _set_nodes(graph, nodes)
    _remove_unused_constants(graph, set(replaced))
    for output in graph.output:
        output.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    if info is not None:
        set_onnx_info(model, info)
    onnx.checker.check_model(model)
    onnx.save(model, onnx_path)
    return len(replaced)


def _runtime_batch_sizes(graph, data, traced_sizes, name):
    """Nodes computing concat(shape(data)[0:1], traced_sizes[1:]) into ``name``
    (opset 11 ops); their constants go to the graph's initializers."""
    from onnx import helper, numpy_helper
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], np.int64), f"{name}_start"),
        numpy_helper.from_array(np.array([1], np.int64), f"{name}_end"),
        numpy_helper.from_array(np.asarray(traced_sizes[1:], np.int64), f"{name}_chw"),
    ])
    return [
        helper.make_node("Shape", [data], [f"{name}_shape"]),
        helper.make_node("Slice", [f"{name}_shape", f"{name}_start", f"{name}_end"],
                         [f"{name}_batch"]),
        helper.make_node("Concat", [f"{name}_batch", f"{name}_chw"], [name], axis=0),
    ]


def _set_nodes(graph, nodes):
    del graph.node[:]
    graph.node.extend(nodes)


def _remove_unused_constants(graph, names):
    """Drop the replaced constant sizes (onnxruntime warns about unused initializers)."""
    unused = names - {name for node in graph.node for name in node.input}
    initializers = [init for init in graph.initializer if init.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    _set_nodes(graph, [node for node in graph.node
                       if not (node.op_type == "Constant" and node.output[0] in unused)])


def export_network(net, file_format, path, batch_size, height, width, cpu_kernels=False,
                   info=None, output_names=("logits",)):
    """Export into a scratch folder, then move the finished file to ``path``;
    ``info`` (src.model_info) goes into an ONNX file, or beside a MINDIR / AIR;
    output_names: the ONNX names of the network's outputs, in order.

    MindSpore accepts only [A-Za-z0-9@_-.:/\\] in file names, so the export
    itself goes to a temporary folder; the copy to ``path`` is atomic. The
    custom CPU kernels are off during the export (the file holds MindSpore's
    own operators only and runs anywhere) unless ``cpu_kernels``: a MINDIR
    that names the kernel library by its path on this machine.
    """
    import mindspore as ms
    from src.cpu_kernels import portable, with_kernels
    inputs = ms.Tensor(np.zeros((batch_size, 3, height, width), np.float32))
    operators = with_kernels(net) if cpu_kernels else portable(net, file_format)
    with operators, tempfile.TemporaryDirectory(prefix="ghostnetv2_export_") as scratch:
        exported = os.path.join(scratch, "net" + FORMATS[file_format])
        try:
            if file_format == "ONNX":
                import mindspore.onnx
                mindspore.onnx.export(net, inputs, file_name=exported, input_names=[INPUT_NAME],
                                      output_names=list(output_names),
                                      dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}})
                make_batch_dynamic(exported, info)
            else:
                ms.export(net, inputs, file_name=exported, file_format=file_format)
        except RuntimeError as err:  # MindSpore reports exporter failures as RuntimeError
            raise ExportError(f"MindSpore's {file_format} exporter failed: "
                              f"{str(err).strip().splitlines()[0]}") from err
        if not os.path.isfile(exported):
            raise ExportError(f"MindSpore wrote no {file_format} file (expected {exported})")
        atomic_write(path, lambda tmp: shutil.copyfile(exported, tmp))
    if info is not None and file_format != "ONNX":
        write_sidecar(path, info)


def main(argv=None):
    args = parse_args(argv)
    try:
        check_backend(args.file_format, args.device_target, args.cpu_kernels)
        info, where = read_info(args.checkpoint_path)
        task = get_task(task_name(info))
        net, model, summary = task.load_network(args.checkpoint_path, info, args.model,
                                                args.num_classes, args.fuse_bn)
        print(summary, flush=True)
        settings = task.export_settings(args, net, model, info, where)
        height, width = settings.height, settings.width
        check_image_size(net, height, width)
        path = output_path(args.file_name, args.file_format, model)
        export_network(net, args.file_format, path, args.batch_size, height, width,
                       args.cpu_kernels, settings.info, settings.output_names)
    except (ExportError, WeightsError, ConfigError) as err:
        print(f"export.py: error: {err}", file=sys.stderr)
        return 1
    batch = "dynamic batch" if args.file_format == "ONNX" else f"batch {args.batch_size}"
    described = ("its model info in metadata_props" if args.file_format == "ONNX"
                 else f"its model info in {path}.json")
    print(f"exported {model} ({settings.description}, input {batch} x 3 x "
          f"{height} x {width}) as {args.file_format}: {path}, {described}")
    if args.cpu_kernels:
        from src.cpu_kernels import kernel_library
        print(f"it uses the CPU kernels of {kernel_library()}: it runs in MindSpore where that "
              "file exists (this machine), nowhere else")
    return 0


if __name__ == "__main__":
    sys.exit(main())
