"""Run GhostNetV2 weights on images: a classifier's top-5 classes and their
probabilities for each image (a detector's or segmenter's task draws its own
pictures: src/tasks/<task>.py; the task comes from the weights' model info).

    python infer.py --image_path photo.jpg --checkpoint_path outputs/run/best.ckpt
    python infer.py --image_path photos/ --mindir_path ghostnetv2_100.mindir
    python infer.py --image_path photos/ --onnx_path ghostnetv2_100.onnx

IMAGE_PATH is one image or a folder (searched recursively; a flat folder of
images works). The weights are a checkpoint (.ckpt / .pth / .safetensors,
model inferred from them), an exported MINDIR, or an exported ONNX file
(needs onnxruntime). Images go through eval.py's transform (src/dataset.py).

The image size, crop and class names come from the model info recorded with
the weights (train.py's checkpoints, export.py's ONNX files and the JSON beside
its MINDIR files; see src/model_info.py); a flag given here wins, and one that
contradicts the record is warned about. Class names: --labels (a JSON list,
preprocess.py's labels.json, or one name per line), else --class_dir (a
training folder: its sorted sub-folder names), else the recorded names, else
numbers. With nothing recorded: 224, crop 0.875, numbered classes, a warning.
"""
import argparse
import json
import os
import sys

from src.dataset import IMG_EXTENSIONS, DatasetError
from src.evaluation.classification import pad_batch
from src.ghostnetv2 import list_models
from src.mindir_infer import MindirError, outputs_list
from src.model_info import read_info, read_info_named_by
from src.tasks import InferError, get_task, task_name
from src.train_utils import ConfigError
from src.weights import WeightsError, write_text_atomic

WEIGHTS_FLAGS = ("--checkpoint_path", "--mindir_path", "--onnx_path")


def parse_args(argv=None, task=None):
    """infer.py's flags and those of ``task`` (a src.tasks module; default classification)."""
    task = task or get_task(task_name(None))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--image_path", required=True, help="an image file or a folder of images")
    parser.add_argument("--checkpoint_path", default=None,
                        help=".ckpt / .pth / .safetensors weights")
    parser.add_argument("--mindir_path", default=None,
                        help="exported MINDIR to run instead of a checkpoint")
    parser.add_argument("--onnx_path", default=None,
                        help="exported ONNX file to run (with onnxruntime) instead of a checkpoint")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="network of the checkpoint (default: inferred from it)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="square input side (default: the recorded training size, or the "
                             "exported file's input size; else 224)")
    parser.add_argument("--fuse_bn", action="store_true",
                        help="with --checkpoint_path: fold BatchNorm into the convolutions "
                             "(faster; outputs equal up to float32 rounding)")
    parser.add_argument("--output_json", default=None,
                        help="also write the predictions to this JSON file")
    task.add_infer_arguments(parser)
    args = parser.parse_args(argv)
    if sum(p is not None for p in (args.checkpoint_path, args.mindir_path, args.onnx_path)) != 1:
        parser.error("pass exactly one of --checkpoint_path, --mindir_path and --onnx_path")
    return args


def list_images(image_path):
    if os.path.isfile(image_path):
        return [image_path]
    if not os.path.isdir(image_path):
        raise InferError(f"--image_path not found: {image_path}")
    images = sorted(os.path.join(folder, name)
                    for folder, _, names in os.walk(image_path, followlinks=True)
                    for name in names
                    if name.lower().endswith(IMG_EXTENSIONS) and not name.startswith("."))
    if not images:
        raise InferError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {image_path}")
    return images


class Runner:
    """A checkpoint's network, a MINDIR or an ONNX file, called on batches of
    preprocessed images (``run`` returns the list of its outputs); ``info`` is
    the model info recorded with it (or None), read from ``info_source``."""

    def __init__(self, checkpoint_path=None, mindir_path=None, model=None, image_size=None,
                 fuse=False, onnx_path=None, info=None, info_source=None):
        self.path = path = checkpoint_path or mindir_path or onnx_path
        self.info, self.info_source = (info, info_source) if info else read_info(path)
        self.net, self.output_shapes, self.min_input_size = None, None, 1
        if mindir_path:
            self._load_mindir(mindir_path)
        elif onnx_path:
            self._load_onnx(onnx_path)
        else:
            self._load_checkpoint(checkpoint_path, model, fuse)
        if self.fixed_shape and image_size is not None and (image_size,) * 2 != self.fixed_shape:
            raise InferError(f"{path} takes {'x'.join(map(str, self.fixed_shape))} (height x "
                             f"width) images, not --image_size {image_size}; drop --image_size "
                             "or re-export")

    @property
    def fixed_size(self):
        """S of an exported file taking S x S images, None for a checkpoint (any
        size); an InferError for a non-square export (tasks that need a square
        input read this; a segmenter reads fixed_shape)."""
        if self.fixed_shape is None:
            return None
        height, width = self.fixed_shape
        if height != width:
            raise InferError(f"{self.path} takes {height}x{width} (height x width) images; "
                             "this model's inference needs a square input: export it with "
                             "--image_height S --image_width S")
        return height

    def _set_fixed_shape(self, shape):
        """(H, W) of an exported file's B x 3 x H x W input."""
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(s, int) for s in shape[2:]):
            raise InferError(f"{self.path} takes input {shape}; expected B x 3 x H x W with a "
                             "fixed H and W (export it with export.py)")
        self.fixed_shape = (shape[2], shape[3])

    def _load_mindir(self, path):
        import mindspore as ms
        from src.mindir_infer import load_mindir, mindir_io_shapes
        ms.set_context(mode=ms.GRAPH_MODE)
        shape, self.output_shapes = mindir_io_shapes(path)
        self._set_fixed_shape(list(shape))
        net, self.batch_size = load_mindir(path), shape[0]
        self._run = lambda images: outputs_list(net(ms.Tensor(images)))
        self.summary = f"loaded {path} (MINDIR, input {'x'.join(map(str, shape))})"

    def _load_onnx(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise InferError("running an ONNX file needs onnxruntime (pip install onnxruntime), "
                             "or pass the checkpoint / MINDIR instead") from None
        try:
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise InferError(f"{path} is not a readable ONNX file ({err})") from None
        shape = session.get_inputs()[0].shape
        self._set_fixed_shape(shape)
        self.output_shapes = [output.shape for output in session.get_outputs()]
        self.batch_size = shape[0] if isinstance(shape[0], int) else 8  # dynamic batch axis
        name = session.get_inputs()[0].name
        self._run = lambda images: session.run(None, {name: images})
        self.summary = f"loaded {path} (ONNX, input {'x'.join(map(str, shape))})"

    def _load_checkpoint(self, path, model, fuse):
        import mindspore as ms
        from export import build_network
        ms.set_context(mode=ms.GRAPH_MODE)
        net, name, self.summary = build_network(path, model, fuse=fuse, info=self.info)
        self.net, self.fixed_shape, self.batch_size = net, None, 1
        self.min_input_size = getattr(net, "min_input_size", 1)
        self._run = lambda images: outputs_list(net(ms.Tensor(images)))
        self.summary += f" into {name}"

    def run(self, images):
        """The outputs (numpy arrays, one row per image) for a batch of images."""
        return [output[:len(images)] for output in self._run(pad_batch(images, self.batch_size))]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        info, where = read_info_named_by(argv, WEIGHTS_FLAGS)
        task = get_task(task_name(info))
    except (ConfigError, WeightsError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 1
    args = parse_args(argv, task)
    try:
        paths = list_images(args.image_path)
        runner = Runner(args.checkpoint_path, args.mindir_path, args.model, args.image_size,
                        args.fuse_bn, args.onnx_path, info, where)
        print(runner.summary, flush=True)
        predictions = task.predict(runner, paths, args)
    except (InferError, MindirError, WeightsError, DatasetError, ConfigError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 1
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps(predictions, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
