"""Classify images: the top-5 classes and their probabilities for each image.

    python infer.py --image_path photo.jpg --checkpoint_path ghostnetv2_100.ckpt \\
        --labels imagenet_classes.txt
    python infer.py --image_path photos/ --mindir_path ghostnetv2_100.mindir --class_dir /data/train

IMAGE_PATH is one image or a folder (searched recursively). The weights are a
checkpoint (.ckpt / .pth / .safetensors, model inferred from them) or an
exported MINDIR. Images go through eval.py's transform (src/dataset.py).
Class names come from --labels (a JSON list, preprocess.py's labels.json, or
one name per line), else from --class_dir (a training folder: its sorted
sub-folder names, the training label order), else classes are numbered.
"""
import argparse
import json
import os
import sys

import numpy as np

from src.dataset import IMG_EXTENSIONS, BadImageError, DatasetError, _normalize_ops, find_classes, \
    load_rgb, resize_center_crop
from src.evaluation import pad_batch
from src.ghostnetv2 import list_models
from src.mindir_infer import MindirError
from src.weights import WeightsError

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
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="network of the checkpoint (default: inferred from it)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="square input side (default: 224, or the MINDIR's input size)")
    parser.add_argument("--crop_pct", type=float, default=0.875)
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
    if (args.checkpoint_path is None) == (args.mindir_path is None):
        parser.error("pass exactly one of --checkpoint_path and --mindir_path")
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
    if not labels:
        return None
    if not os.path.isfile(labels):
        raise InferError(f"labels file not found: {labels}")
    with open(labels, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, dict) and "class_names" in data:
        data = data["class_names"]
    if not isinstance(data, list):
        raise InferError(f"{labels}: expected a JSON list of class names (or one name per line)")
    return [str(name) for name in data]


class Classifier:
    """A checkpoint's network or a MINDIR, called on batches of preprocessed images."""

    def __init__(self, checkpoint_path=None, mindir_path=None, model=None, image_size=None,
                 fuse=False):
        import mindspore as ms
        ms.set_context(mode=ms.GRAPH_MODE)
        if mindir_path:
            from src.mindir_infer import load_mindir, mindir_io_shapes, square_image_size
            mindir_size = square_image_size(mindir_path)
            if image_size not in (None, mindir_size):
                raise InferError(f"{mindir_path} takes {mindir_size}x{mindir_size} images, not "
                                 f"--image_size {image_size}; drop --image_size or re-export")
            shape, (_, self.num_classes) = mindir_io_shapes(mindir_path)
            self.net, self.batch_size, self.image_size = load_mindir(mindir_path), shape[0], \
                mindir_size
            self.summary = f"loaded {mindir_path} (MINDIR, input {'x'.join(map(str, shape))})"
        else:
            from export import build_network
            self.net, name, self.summary = build_network(checkpoint_path, model, fuse=fuse)
            self.num_classes = self.net.num_classes
            self.batch_size, self.image_size = 1, image_size or 224
            if self.image_size < self.net.min_input_size:
                raise InferError(f"--image_size {self.image_size} is below the network's minimum "
                                 f"{self.net.min_input_size}")
            self.summary += f" into {name}"

    def probabilities(self, images):
        import mindspore as ms
        logits = self.net(ms.Tensor(pad_batch(images, self.batch_size))).asnumpy()
        logits = logits[:len(images)].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def predict(classifier, paths, class_names=None, crop_pct=0.875):
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
                batch.append(eval_image(path, classifier.image_size, crop_pct))
                chunk.append(path)
            except BadImageError as err:
                print(f"warning: skipping unreadable image {err}", file=sys.stderr)
        if not batch:
            continue
        for path, probs in zip(chunk, classifier.probabilities(np.stack(batch))):
            top = np.argsort(-probs, kind="stable")[:TOP_K]
            predictions.append({"image": path,
                                "top5": [[names[i], float(probs[i])] for i in top]})
    return predictions


def main(argv=None):
    args = parse_args(argv)
    try:
        class_names = read_class_names(args.labels, args.class_dir)
        paths = list_images(args.image_path)
        classifier = Classifier(args.checkpoint_path, args.mindir_path, args.model,
                                args.image_size, args.fuse_bn)
        print(classifier.summary, flush=True)
        predictions = predict(classifier, paths, class_names, args.crop_pct)
    except (InferError, MindirError, WeightsError, DatasetError) as err:
        print(f"infer.py: error: {err}", file=sys.stderr)
        return 1
    for prediction in predictions:
        print(prediction["image"])
        for rank, (name, prob) in enumerate(prediction["top5"], 1):
            print(f"  {rank}. {name:<30s} {prob:.4f}")
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump(predictions, f, indent=1)
    print(f"classified {len(predictions)} of {len(paths)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
