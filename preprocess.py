"""Turn an image folder into the binary inputs of the exported MINDIR (edge inference).

    python preprocess.py --data_path /data/imagenet/val --output_path ./preprocess_Result \
        --mindir_path ghostnetv2_100.mindir

DATA_PATH holds one sub-folder per class (the layout eval.py reads). Every
image goes through exactly eval.py's pipeline (``src.dataset.create_eval_dataset``:
shorter side to image_size / crop_pct, bicubic, center crop, ImageNet
mean/std) and is written as one raw float32 file of shape 1 x 3 x S x S
(NCHW, little-endian), the input of a batch-1 MINDIR:

    OUTPUT_PATH/images/image_000000.bin, image_000001.bin, ...
    OUTPUT_PATH/labels.json

With --mindir_path the image size and crop are the MINDIR's: its input size,
and the crop recorded in the model info export.py wrote beside it
(<file>.json); the class folders must then be the recorded training classes.
Without it: --image_size (224) and --crop_pct (0.875).

labels.json: {"labels": {file name: class index}, "class_names": [...],
"sources": {file name: image path relative to DATA_PATH}, "image_size": S,
"crop_pct": ..., "model_class_names": the MINDIR's recorded class names or
null}. ``ascend310_infer`` and ``src/mindir_infer.py`` read the images folder;
``postprocess.py`` scores their results against labels.json. Undecodable files
are skipped with a warning, as eval.py skips them.
"""
import argparse
import glob
import json
import os
import sys
import time

from src.dataset import DatasetError, check_trained_classes, create_eval_dataset, find_classes, \
    scan_image_folder
from src.mindir_infer import MindirError, square_image_size
from src.model_info import IMAGENET_CROP_PCT, IMAGENET_IMAGE_SIZE, choose_preprocessing, \
    print_messages, read_info, recorded_class_names
from src.weights import WeightsError, write_text_atomic

IMAGES_DIR = "images"
LABEL_FILE = "labels.json"
PROGRESS_EVERY = 1000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--data_path", required=True, help="image folder, one sub-folder per class")
    parser.add_argument("--output_path", default="./preprocess_Result")
    parser.add_argument("--mindir_path", default=None,
                        help="the exported MINDIR the inputs are for: image size and crop from "
                             "it and its model info (<file>.json)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="side of the square input (default: the MINDIR's, else 224)")
    parser.add_argument("--crop_pct", type=float, default=None,
                        help="center crop of eval.py: shorter side -> image_size / crop_pct "
                             "(default: the MINDIR's recorded one, else 0.875)")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="decoding processes (0: one per core, at most 8)")
    return parser.parse_args(argv)


def image_file_name(index):
    return f"image_{index:06d}.bin"


def mindir_settings(mindir_path, image_size=None, crop_pct=None):
    """(image size, crop_pct, model class names) for a MINDIR's inputs."""
    size = square_image_size(mindir_path)
    if image_size not in (None, size):
        raise MindirError(f"{mindir_path} takes {size}x{size} images, not --image_size "
                          f"{image_size}; drop --image_size or export at that size")
    info, where = read_info(mindir_path)
    _, crop, messages = choose_preprocessing(info, where, size, crop_pct,
                                             flags=("--crop_pct",))
    print_messages(messages)
    return size, crop, recorded_class_names(info, (info or {}).get("num_classes", 0))


def write_inputs(data_path, output_path, image_size, crop_pct=0.875, num_workers=0,
                 model_class_names=None):
    """Write one .bin per readable image and labels.json; returns the label record.
    model_class_names: the model's classes, which the class folders must be."""
    if model_class_names:
        check_trained_classes(data_path, find_classes(data_path), model_class_names)
    dataset, class_names = create_eval_dataset(data_path, image_size, batch_size=1,
                                               num_workers=num_workers or None, crop_pct=crop_pct)
    images_dir = os.path.join(output_path, IMAGES_DIR)
    os.makedirs(images_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(images_dir, "image_*.bin")):  # from an earlier run
        os.remove(stale)
    labels, start = [], time.time()
    for image, label in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        name = image_file_name(len(labels))
        image.tofile(os.path.join(images_dir, name))
        labels.append((name, int(label[0])))
        if len(labels) % PROGRESS_EVERY == 0:
            print(f"  {len(labels)}/{dataset.num_files} images "
                  f"({len(labels) / (time.time() - start):.0f}/s)", flush=True)
    record = {
        "labels": dict(labels),
        "class_names": class_names,
        "sources": source_names(data_path, labels, dataset.bad_images.paths),
        "image_size": image_size,
        "crop_pct": crop_pct,
        "model_class_names": model_class_names,
        "skipped": [os.path.relpath(p, data_path) for p in dataset.bad_images.paths],
    }
    write_text_atomic(os.path.join(output_path, LABEL_FILE), json.dumps(record, indent=1))
    return record


def source_names(data_path, labels, skipped):
    """{bin name: source image} in the dataset's order (sorted, undecodable files left out)."""
    skipped = set(skipped)
    samples = [(path, label) for path, label in scan_image_folder(data_path)[0]
               if path not in skipped]
    if [label for _, label in samples] != [label for _, label in labels]:
        raise RuntimeError("the eval dataset's order differs from the sorted image folder; "
                           "cannot name the source of each input")
    return {name: os.path.relpath(path, data_path) for (name, _), (path, _) in zip(labels, samples)}


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        size, crop, names = (args.image_size or IMAGENET_IMAGE_SIZE,
                             args.crop_pct or IMAGENET_CROP_PCT, None)
        if args.mindir_path:
            size, crop, names = mindir_settings(args.mindir_path, args.image_size, args.crop_pct)
        record = write_inputs(args.data_path, args.output_path, size, crop, args.num_workers,
                              names)
    except (DatasetError, MindirError, WeightsError) as err:
        print(f"preprocess.py: error: {err}", file=sys.stderr)
        return 1
    skipped = f", {len(record['skipped'])} unreadable skipped" if record["skipped"] else ""
    print(f"wrote {len(record['labels'])} inputs (1x3x{size}x{size} float32, crop_pct {crop:g}"
          f"{skipped}) of {len(record['class_names'])} classes to "
          f"{os.path.join(args.output_path, IMAGES_DIR)} and {LABEL_FILE} in "
          f"{time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
