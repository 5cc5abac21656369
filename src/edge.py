"""The files of the edge flow (ModelZoo's preprocess -> ascend310_infer -> postprocess).

    OUTPUT/images/image_000000.bin ...  one raw float32 1 x 3 x H x W input per image
                                        (NCHW, little-endian), written by preprocess.py
    OUTPUT/labels.json                  what postprocess.py needs: the task, each
                                        input's source image and original size, the
                                        task's own entries (classification: labels)
    result_Files/image_000000_<i>.bin   output i of the model for that input, raw float32
                                        (ascend310_infer/ and src/mindir_infer.py)

The record (labels.json) holds at least ``task``, ``sources`` ({input name:
image path relative to the data folder}) and ``original_sizes`` ({input
name: [height, width] of the image before preprocessing}).
"""
import glob
import json
import os

import numpy as np
from PIL import Image

from .weights import write_text_atomic

IMAGES_DIR = "images"
RECORD_FILE = "labels.json"


class ResultsError(ValueError):
    """Edge-flow files that cannot be used; the message says why."""


def image_file_name(index):
    return f"image_{index:06d}.bin"


def result_name(input_file, output_index=0):
    """ascend310_infer's naming: <input name without .bin>_<output index>.bin."""
    return f"{os.path.splitext(os.path.basename(input_file))[0]}_{output_index}.bin"


def clear_images_dir(output_path):
    """OUTPUT/images, created, without the inputs of an earlier run."""
    images_dir = os.path.join(output_path, IMAGES_DIR)
    os.makedirs(images_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(images_dir, "image_*.bin")):
        os.remove(stale)
    return images_dir


def original_size(path):
    """[height, width] of an image file (its header only is read)."""
    with Image.open(path) as image:
        return [image.height, image.width]


def write_record(output_path, record):
    write_text_atomic(os.path.join(output_path, RECORD_FILE), json.dumps(record, indent=1))


def read_record(label_file):
    """preprocess.py's record (labels.json)."""
    if not os.path.isfile(label_file):
        raise ResultsError(f"label file not found: {label_file} (preprocess.py writes "
                           f"labels.json next to its images folder)")
    with open(label_file, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{label_file} is not JSON ({err}): not written by "
                               "preprocess.py?") from None
    if not isinstance(record, dict):
        raise ResultsError(f"{label_file} is not a preprocess.py record")
    return record


def read_results(result_path, input_names, output_index=0):
    """(N, values) float32: output ``output_index`` of every input, in input_names'
    order; every input must have one, all of one size."""
    paths = [os.path.join(result_path, result_name(name, output_index)) for name in input_names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ResultsError(f"{len(missing)} of {len(paths)} inputs have no result in {result_path} "
                           f"(first: {os.path.basename(missing[0])}); did inference finish?")
    sizes = {os.path.getsize(p) for p in paths}
    if len(sizes) != 1 or 0 in sizes:
        raise ResultsError(f"result files in {result_path} differ in size or are empty "
                           f"({sorted(sizes)[:5]} bytes): results of different models mixed?")
    return np.stack([np.fromfile(p, np.float32) for p in paths])
