"""Classify images: the top-5 classes and their probabilities for each image.

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

import numpy as np

from src.dataset import IMG_EXTENSIONS, BadImageError, DatasetError, _normalize_ops, find_classes, \
    load_rgb, resize_center_crop
from src.evaluation.classification import pad_batch, top_classes
from src.ghostnetv2 import list_models
from src.mindir_infer import MindirError
from src.model_info import choose_preprocessing, print_messages, read_info, read_labels_file, \
    recorded_class_names
from src.weights import WeightsError, write_text_atomic

TOP_K = 5


class InferError(ValueError):
    """Bad input to infer.py; the message says what to fix."""


def parse_args(argv=None):
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
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="eval crop: shorter side to image_size / crop_pct (default: the "
                             "recorded one, else 0.875)")
    parser.add_argument("--fuse_bn", action="store_true",
                        help="with --checkpoint_path: fold BatchNorm into the convolutions "
                             "(faster; probabilities equal up to float32 rounding)")
    parser.add_argument("--labels", default=None,
                        help="class names: JSON list, preprocess.py's labels.json, or one per line")
    parser.add_argument("--class_dir", default=None,
                        help="training folder whose sub-folder names are the class names")
    parser.add_argument("--output_json", default=None,
                        help="also write the predictions to this JSON file")
    args = parser.parse_args(argv)
    if sum(p is not None for p in (args.checkpoint_path, args.mindir_path, args.onnx_path)) != 1:
        parser.error("pass exactly one of --checkpoint_path, --mindir_path and --onnx_path")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        parser.error(f"--crop_pct must be in (0, 1], got {args.crop_pct}")
    return args


def eval_image(path, image_size, crop_pct=0.875):
    """One image file through eval.py's transform: src.dataset's PIL decode, resize
    and center crop, then its normalize / HWC->CHW ops. Returns float32 CHW."""
    image = np.asarray(resize_center_crop(load_rgb(path), image_size, crop_pct))
    for op in _normalize_ops():
        image = op(image)
    return image


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


def read_class_names(labels=None, class_dir=None):
    """Class names from a labels file or a training folder; None if neither is given."""
    if class_dir:
        return find_classes(class_dir)
    return read_labels_file(labels) if labels else None


class Classifier:
    """A checkpoint's network, a MINDIR or an ONNX file, called on batches of
    preprocessed images; ``info`` is the model info recorded with it (or None)."""

    def __init__(self, checkpoint_path=None, mindir_path=None, model=None, image_size=None,
                 fuse=False, onnx_path=None):
        path = checkpoint_path or mindir_path or onnx_path
        self.info, self.info_source = read_info(path)
        if mindir_path:
            self._load_mindir(mindir_path)
        elif onnx_path:
            self._load_onnx(onnx_path)
        else:
            self._load_checkpoint(checkpoint_path, model, fuse)
        if self.fixed_size and image_size not in (None, self.fixed_size):
            raise InferError(f"{path} takes {self.fixed_size}x{self.fixed_size} images, not "
                             f"--image_size {image_size}; drop --image_size or re-export")

    def _load_mindir(self, path):
        import mindspore as ms
        from src.mindir_infer import load_mindir, mindir_io_shapes, square_image_size
        ms.set_context(mode=ms.GRAPH_MODE)
        self.fixed_size = square_image_size(path)
        shape, (_, self.num_classes) = mindir_io_shapes(path)
        net, self.batch_size = load_mindir(path), shape[0]
        self.run = lambda images: net(ms.Tensor(images)).asnumpy()
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
        if len(shape) != 4 or shape[2] != shape[3] or not isinstance(shape[2], int):
            raise InferError(f"{path} takes input {shape}; expected B x 3 x S x S "
                             "(export it with export.py)")
        self.fixed_size, self.num_classes = shape[2], session.get_outputs()[0].shape[1]
        self.batch_size = shape[0] if isinstance(shape[0], int) else 8  # dynamic batch axis
        name = session.get_inputs()[0].name
        self.run = lambda images: session.run(None, {name: images})[0]
        self.summary = f"loaded {path} (ONNX, input {'x'.join(map(str, shape))})"

    def _load_checkpoint(self, path, model, fuse):
        import mindspore as ms
        from export import build_network
        ms.set_context(mode=ms.GRAPH_MODE)
        net, name, self.summary = build_network(path, model, fuse=fuse)
        self.num_classes, self.fixed_size, self.batch_size = net.num_classes, None, 1
        self.min_input_size = net.min_input_size
        self.run = lambda images: net(ms.Tensor(images)).asnumpy()
        self.summary += f" into {name}"

    def preprocessing(self, image_size=None, crop_pct=None):
        """(image size, crop_pct, messages): flags, else the record, else the defaults."""
        size, crop, messages = choose_preprocessing(
            self.info, self.info_source, image_size or self.fixed_size, crop_pct,
            flags=("--image_size", "--crop_pct", "--labels FILE (or --class_dir DIR)"))
        if self.fixed_size is None and size < self.min_input_size:
            raise InferError(f"--image_size {size} is below the network's minimum "
                             f"{self.min_input_size}")
        return size, crop, messages

    def class_names(self):
        """The recorded class names (None when none are recorded)."""
        return recorded_class_names(self.info, self.num_classes)

    def logits(self, images):
        return self.run(pad_batch(images, self.batch_size))[:len(images)]


def predict(classifier, paths, class_names=None, image_size=224, crop_pct=0.875):
    """[{image, top5: [[class, probability], ...]}] per readable image (unreadable ones warned)."""
    names = class_names or [str(i) for i in range(classifier.num_classes)]
    if len(names) != classifier.num_classes:
        raise InferError(f"{len(names)} class names for a model with {classifier.num_classes} "
                         f"classes: pass the labels or training folder the model was trained on")
    predictions = []
    for start in range(0, len(paths), classifier.batch_size):
        batch, chunk = [], []
        for path in paths[start:start + classifier.batch_size]:
            try:
                batch.append(eval_image(path, image_size, crop_pct))
                chunk.append(path)
            except BadImageError as err:
                print(f"warning: skipping unreadable image {err}", file=sys.stderr)
        if not batch:
            continue
        for path, top in zip(chunk, top_classes(classifier.logits(np.stack(batch)), names, TOP_K)):
            predictions.append({"image": path, "top5": top})
    return predictions


def main(argv=None):
    args = parse_args(argv)
    try:
        class_names = read_class_names(args.labels, args.class_dir)
        paths = list_images(args.image_path)
        classifier = Classifier(args.checkpoint_path, args.mindir_path, args.model,
                                args.image_size, args.fuse_bn, args.onnx_path)
        print(classifier.summary, flush=True)
        image_size, crop_pct, messages = classifier.preprocessing(args.image_size, args.crop_pct)
        print_messages(messages)
        if class_names is None and classifier.info is not None:
            class_names = classifier.class_names()
            if class_names is None:
                print_messages([("warning", f"no class names recorded in {classifier.info_source}: "
                                  "classes are numbered; pass --labels FILE or --class_dir DIR")])
        predictions = predict(classifier, paths, class_names, image_size, crop_pct)
    except (InferError, MindirError, WeightsError, DatasetError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 1
    for prediction in predictions:
        print(prediction["image"])
        for rank, (name, prob) in enumerate(prediction["top5"], 1):
            print(f"  {rank}. {name:<30s} {prob:.4f}")
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps(predictions, indent=1))
    print(f"classified {len(predictions)} of {len(paths)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
