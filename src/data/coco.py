"""COCO detection data as published: ``ROOT/annotations/instances_<split>.json``
and the images in ``ROOT/<split>/`` (another annotation file or image folder
is a flag away).

Category ids stay as the file gives them (COCO's are 1-90 with gaps): the
network's class index i is the i-th category by id, and ``category_ids[i]``
maps back. What the file may hold and what happens to it (mmdetection's
CocoDataset rules where it has one):
- a box reaching outside its image: clipped to the image (counted);
- a box less than 1 pixel wide or high (after clipping): skipped (counted);
- ``iscrowd: 1``: kept, flagged crowd (never a positive, not counted by AP);
- an image without annotations: kept (evaluation; training keeps it unless
  ``filter_empty_gt``); a file with no box at all (an empty or missing
  annotation list): an error naming the file (``require_boxes``: nothing to
  train on, and COCO AP is undefined without ground truth);
- an annotation whose category id is not in ``categories``, or whose image
  id is not in ``images``: an error naming the file and the id;
- an image file missing or undecodable: skipped when read (counted, named
  once in a warning), as the classification pipeline does.
"""
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from src.dataset import DatasetError

_logger = logging.getLogger(__name__)


@dataclass
class CocoImage:
    image_id: int
    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # x1y1x2y2
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


@dataclass
class CocoSet:
    ann_file: str
    image_dir: str
    images: list
    category_ids: list
    class_names: list
    clipped_boxes: int = 0
    skipped_boxes: int = 0


def split_paths(root, split, ann_file=None, image_dir=None):
    """(annotation file, image folder) of a split of a COCO root; either can be
    given instead (a relative path is taken under ROOT)."""
    ann_file = ann_file or os.path.join("annotations", f"instances_{split}.json")
    image_dir = image_dir or split
    ann_file = ann_file if os.path.isabs(ann_file) else os.path.join(root, ann_file)
    image_dir = image_dir if os.path.isabs(image_dir) else os.path.join(root, image_dir)
    if not os.path.isfile(ann_file):
        raise DatasetError(f"{ann_file}: annotation file not found; --data_path must be a COCO "
                           f"root holding annotations/instances_{split}.json and {split}/ "
                           "(or name the file with --train_ann_file / --val_ann_file)")
    if not os.path.isdir(image_dir):
        raise DatasetError(f"{image_dir}: image folder not found (expected the images of "
                           f"{os.path.basename(ann_file)} there; or name it with "
                           "--train_image_dir / --val_image_dir)")
    return ann_file, image_dir


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable JSON file ({err})") from None


def _require(record, keys, ann_file, what):
    missing = [k for k in keys if k not in record]
    if missing:
        raise DatasetError(f"{ann_file}: {what} {record.get('id', '?')} lacks {missing}; "
                           "expected the COCO instances format")


def categories(data, ann_file):
    """(category ids sorted, names) of a COCO annotation dict."""
    cats = data.get("categories")
    if not cats:
        raise DatasetError(f"{ann_file}: no 'categories' list; expected the COCO instances "
                           "format")
    for cat in cats:
        _require(cat, ("id", "name"), ann_file, "category")
    cats = sorted(cats, key=lambda c: c["id"])
    return [int(c["id"]) for c in cats], [str(c["name"]) for c in cats]


def load_coco(ann_file, image_dir, category_ids=None):
    """Read a COCO instances file into a CocoSet (images sorted by id).

    category_ids: the training set's ids (a checkpoint's), checked against the
    file's: every id of the file must be one the network predicts."""
    data = read_json(ann_file)
    file_ids, names = categories(data, ann_file)
    if category_ids is not None:
        unknown = sorted(set(file_ids) - set(category_ids))
        if unknown:
            raise DatasetError(f"{ann_file}: category ids {unknown[:10]} are not among the "
                               f"network's {len(category_ids)} classes; evaluate with the "
                               "annotation file it was trained for")
        names_by_id = dict(zip(file_ids, names))
        names = [names_by_id.get(i, str(i)) for i in category_ids]
        file_ids = list(category_ids)
    index_of = {cid: i for i, cid in enumerate(file_ids)}
    images = {}
    for record in data.get("images", []):
        _require(record, ("id", "file_name", "width", "height"), ann_file, "image")
        images[int(record["id"])] = CocoImage(int(record["id"]),
                                              os.path.join(image_dir, record["file_name"]),
                                              int(record["width"]), int(record["height"]))
    coco = CocoSet(ann_file, image_dir, [], file_ids, names)
    per_image = {image_id: ([], [], []) for image_id in images}
    for ann in data.get("annotations", []):
        _require(ann, ("image_id", "category_id", "bbox"), ann_file, "annotation")
        if ann["category_id"] not in index_of:
            raise DatasetError(f"{ann_file}: annotation {ann.get('id', '?')} has category_id "
                               f"{ann['category_id']}, which 'categories' does not list "
                               f"(ids: {file_ids[:20]}...); fix the file or add the category")
        if ann["image_id"] not in images:
            raise DatasetError(f"{ann_file}: annotation {ann.get('id', '?')} refers to image_id "
                               f"{ann['image_id']}, which 'images' does not list")
        image = images[ann["image_id"]]
        box = _clipped_box(ann["bbox"], image, coco)
        if box is None:
            continue
        boxes, classes, crowd = per_image[image.image_id]
        boxes.append(box)
        classes.append(index_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
    for image_id in sorted(images):
        boxes, classes, crowd = per_image[image_id]
        image = images[image_id]
        if boxes:
            image.boxes = np.asarray(boxes, np.float32)
            image.classes = np.asarray(classes, np.int32)
            image.crowd = np.asarray(crowd, bool)
        coco.images.append(image)
    if coco.clipped_boxes or coco.skipped_boxes:
        _logger.warning("%s: %d boxes reaching outside their image clipped, %d boxes under 1 "
                        "pixel wide or high skipped", ann_file, coco.clipped_boxes,
                        coco.skipped_boxes)
    return coco


def require_boxes(coco, fix):
    """A DatasetError naming the file unless some image has a box that is not
    a crowd box (training needs one; pycocotools' AP is -1, undefined, without)."""
    if any(len(im.boxes) and not im.crowd.all() for im in coco.images):
        return coco
    skipped = f", {coco.skipped_boxes} skipped as under 1 pixel" if coco.skipped_boxes else ""
    raise DatasetError(f"{coco.ann_file}: no box (other than crowd boxes) in its "
                       f"{len(coco.images)} images{skipped}: {fix}")


def _clipped_box(bbox, image, coco):
    """COCO [x, y, w, h] -> [x1, y1, x2, y2] inside the image, or None (counted)
    when less than 1 pixel remains on a side."""
    x, y, w, h = (float(v) for v in bbox)
    box = [x, y, x + w, y + h]
    clipped = [min(max(box[0], 0.0), image.width), min(max(box[1], 0.0), image.height),
               min(max(box[2], 0.0), image.width), min(max(box[3], 0.0), image.height)]
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        coco.skipped_boxes += 1
        return None
    if clipped != box:
        coco.clipped_boxes += 1
    return clipped
