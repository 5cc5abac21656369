"""Run an exported MINDIR on preprocess.py's binary inputs with MindSpore's Python runtime.

    python src/mindir_infer.py --mindir_path ghostnetv2_100.mindir \\
        --dataset_path preprocess_Result/images --result_path result_Files

The Python-runtime twin of ascend310_infer/: the same inputs (raw float32
1 x 3 x H x W files) and the same outputs, ``<input name>_<i>.bin`` for each
output i of the model (a classifier: one, its logits), float32, per input in
result_path (src/edge.py), so postprocess.py scores either.
A MINDIR exported with batch_size B > 1 gets B inputs per call (the last
call padded with zeros, whose results are not written).
"""
import argparse
import glob
import os
import re
import sys
import time

import numpy as np

if __package__ in (None, ""):  # run as a script: src/mindir_infer.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.edge import result_name  # noqa: E402

FLOAT32_BYTES = 4


class MindirError(ValueError):
    """A MINDIR / input mismatch; the message says how to fix it."""


def mindir_io_shapes(path):
    """(input shape, [output shapes]) of a single-input MINDIR, read from the
    file's protobuf (a loaded graph does not expose them). A network that
    returns a tuple has its outputs recorded without shapes: [] then."""
    from mindspore.train.mind_ir_pb2 import ModelProto
    if not os.path.isfile(path):
        raise MindirError(f"MINDIR file not found: {path}")
    model = ModelProto()
    with open(path, "rb") as f:
        try:
            model.ParseFromString(f.read())
        except Exception as err:  # protobuf's DecodeError and friends
            raise MindirError(f"{path} is not a MINDIR file ({err})") from None
    inputs = [tuple(t.dims) for i in model.graph.input for t in i.tensor]
    outputs = [tuple(t.dims) for o in model.graph.output for t in o.tensor]
    if len(inputs) != 1:
        raise MindirError(f"{path}: expected one input, found {len(inputs)} (export it with "
                          f"export.py)")
    return inputs[0], outputs


# A custom operator's function, as "/path/to/library.so:Function", in a MINDIR
# that export.py --cpu_kernels wrote.
_KERNEL_FUNCTION = re.compile(rb"(/[^\x00-\x1f:]+\.so):[A-Za-z_]\w*")


def kernel_libraries(path):
    """The custom-operator libraries a MINDIR names (none for export.py's default files)."""
    with open(path, "rb") as f:
        return sorted({m.group(1).decode() for m in _KERNEL_FUNCTION.finditer(f.read())})


def load_mindir(path):
    """An nn.GraphCell of the MINDIR (callers have read its shapes with
    mindir_io_shapes, which checks that it is one), after checking that the
    CPU kernel library it needs (if exported with --cpu_kernels) exists here."""
    import mindspore as ms
    from mindspore import nn
    missing = [lib for lib in kernel_libraries(path) if not os.path.isfile(lib)]
    if missing:
        raise MindirError(f"{path} was exported with --cpu_kernels and needs the kernel library "
                          f"{missing[0]}, which is not on this machine. Export it again without "
                          f"--cpu_kernels (runs anywhere), or with it on this machine")
    return nn.GraphCell(ms.load(path))


def square_image_size(path):
    """S of a MINDIR whose input is B x 3 x S x S (what preprocess.py writes)."""
    shape, _ = mindir_io_shapes(path)
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise MindirError(f"{path} takes input {'x'.join(map(str, shape))}; preprocess.py "
                          f"writes square B x 3 x S x S images: export with "
                          f"--image_height S --image_width S")
    return shape[2]


def input_files(dataset_path, input_shape):
    """Sorted .bin inputs, checked to hold one image of the MINDIR's input each."""
    files = sorted(glob.glob(os.path.join(dataset_path, "*.bin")))
    if not files:
        raise MindirError(f"no .bin inputs in {dataset_path} (run preprocess.py first and pass "
                          f"its images folder)")
    expected = int(np.prod(input_shape[1:])) * FLOAT32_BYTES
    wrong = [f for f in files if os.path.getsize(f) != expected]
    if wrong:
        raise MindirError(f"{len(wrong)} of {len(files)} inputs in {dataset_path} are not "
                          f"{'x'.join(map(str, input_shape[1:]))} float32 images (e.g. "
                          f"{os.path.basename(wrong[0])}: {os.path.getsize(wrong[0])} bytes); "
                          f"preprocess with --mindir_path set to this MINDIR (its size and "
                          f"recorded crop) or export the MINDIR at the preprocessed size")
    return files


def outputs_list(outputs):
    """A MindSpore network's output (a Tensor or a tuple of them) as numpy arrays."""
    if isinstance(outputs, (tuple, list)):
        return [output.asnumpy() for output in outputs]
    return [outputs.asnumpy()]


def run(mindir_path, dataset_path, result_path, device_target="CPU"):
    """Write every output of the model for each input; returns (number of inputs, mean ms per call after
    the first, ms of the first call)."""
    import mindspore as ms
    input_shape, _ = mindir_io_shapes(mindir_path)
    files = input_files(dataset_path, input_shape)
    ms.set_device(device_target)
    ms.set_context(mode=ms.GRAPH_MODE)
    net = load_mindir(mindir_path)
    print(f"loaded {mindir_path} (input {'x'.join(map(str, input_shape))}); "
          f"{len(files)} inputs from {dataset_path}", flush=True)
    os.makedirs(result_path, exist_ok=True)
    batch = input_shape[0]
    times = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        images = np.zeros(input_shape, np.float32)
        for i, path in enumerate(chunk):
            images[i] = np.fromfile(path, np.float32).reshape(input_shape[1:])
        tic = time.perf_counter()
        outputs = outputs_list(net(ms.Tensor(images)))
        times.append(time.perf_counter() - tic)
        for i, path in enumerate(chunk):
            for index, output in enumerate(outputs):
                output[i].astype(np.float32).tofile(os.path.join(result_path,
                                                                 result_name(path, index)))
    # The first call includes graph compilation; report it apart, like a warm-up.
    steady = times[1:] or times
    return len(files), 1000 * float(np.mean(steady)), 1000 * times[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--mindir_path", required=True)
    parser.add_argument("--dataset_path", required=True, help="folder of preprocessed .bin inputs")
    parser.add_argument("--result_path", default="./result_Files")
    parser.add_argument("--device_target", default="CPU", choices=("CPU", "GPU", "Ascend"))
    args = parser.parse_args(argv)
    try:
        count, mean_ms, first_ms = run(args.mindir_path, args.dataset_path, args.result_path,
                                       args.device_target)
    except MindirError as err:
        print(f"mindir_infer.py: error: {err}", file=sys.stderr)
        return 1
    print(f"inference of {count} inputs: {mean_ms:.2f} ms per call on average "
          f"(first call with graph compilation {first_ms:.0f} ms); results in {args.result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
