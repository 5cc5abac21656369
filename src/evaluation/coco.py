"""COCO box AP with pycocotools (COCOeval 'bbox', as mmdetection's
CocoMetric), and the detections in the COCO results format: one
``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per box, in
original-image pixels with the dataset's own category ids.

Several ranks: each rank holds the detections of its share of the images;
they are put into one fixed-size array per rank (zero rows elsewhere) and
summed across ranks, so every rank scores the whole set with only the
all-reduce the classification evaluation uses.
"""
import contextlib
import io
import json
import logging

import numpy as np

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_logger = logging.getLogger(__name__)


def to_results(image_id, detections, category_ids):
    """COCO results of one image from (K, 6) rows x1, y1, x2, y2, score, class."""
    return [{"image_id": int(image_id), "category_id": int(category_ids[int(d[5])]),
             "bbox": [round(float(d[0]), 3), round(float(d[1]), 3),
                      round(float(d[2] - d[0]), 3), round(float(d[3] - d[1]), 3)],
             "score": round(float(d[4]), 5)} for d in detections]


def gather_results(results_by_index, num_images, max_per_img, category_ids, image_ids,
                   reduce_sum=None):
    """All ranks' results: results_by_index maps a global image position to
    its (K, 6) detections (K <= max_per_img) on this rank. Returns the
    COCO results list (every image, in order)."""
    table = np.zeros((num_images, max_per_img, 7), np.float64)  # 6 columns + 'present'
    for index, dets in results_by_index.items():
        table[index, :len(dets), :6] = dets
        table[index, :len(dets), 6] = 1
    if reduce_sum is not None:
        table = reduce_sum(table)
    results = []
    for index in range(num_images):
        rows = table[index][table[index, :, 6] > 0.5]
        results += to_results(image_ids[index], rows[:, :6], category_ids)
    return results


def evaluate(ann_file, results, image_ids=None, print_table=True):
    """COCOeval bbox of ``results`` against ``ann_file``: dict of METRIC_KEYS
    (fractions; -1 where COCO has no box of that size) and the printed table.
    image_ids: score only these images (those evaluated)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
    if not results:  # COCO.loadRes refuses an empty list
        table = "no detections above the score threshold: every AP is 0\n"
        if print_table:
            print(table, end="")
        return dict.fromkeys(METRIC_KEYS, 0.0), table
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    coco_eval = COCOeval(gt, dt, "bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(int(i) for i in image_ids)
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    if print_table:
        print(table.getvalue(), end="")
    return {key: float(v) for key, v in zip(METRIC_KEYS, coco_eval.stats[:6])}, table.getvalue()


def write_results(path, results):
    from src.weights import write_text_atomic
    write_text_atomic(path, json.dumps(results))
