"""COCO reading (ids kept, crowd, clipping and skipping counted, bad files),
the detection transforms and the train / eval pipelines on a tiny COCO root."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from src.data.coco import load_coco, split_paths
from src.data.detection_transforms import (expand, hflip, min_iou_random_crop,
                                           resize_keep_ratio, train_transform)
from src.dataset import DatasetError


def write_coco(root, annotations, images=None, categories=None, split="val2017"):
    """A COCO root with 64x48 images 1-3 (image 3 has no boxes), a missing
    file (id 4) and a corrupt one (id 5). annotations None: an empty list."""
    os.makedirs(os.path.join(root, split), exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    rng = np.random.default_rng(0)
    images = images or [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48}
                        for i in range(1, 6)]
    for image in images[:3]:
        pixels = rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, split, image["file_name"]))
    with open(os.path.join(root, split, "5.png"), "wb") as f:
        f.write(b"not a png")
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations or [], "categories": categories},
                  f)
    return split_paths(root, split)


ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 40, 30, 20], "iscrowd": 0},  # clipped
    {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 0.5, 10], "iscrowd": 0},  # skipped
    {"id": 4, "image_id": 2, "category_id": 7, "bbox": [0, 0, 30, 30], "iscrowd": 1},
]


def test_read_coco(tmp_path, caplog):
    coco = load_coco(*write_coco(str(tmp_path), ANNOTATIONS))
    # a box outside the image clipped, one under a pixel skipped: counted, the file named
    assert (f"{tmp_path}/annotations/instances_val2017.json: 1 boxes reaching outside their "
            "image clipped, 1 boxes under 1 pixel wide or high skipped") in caplog.text
    assert coco.category_ids == [3, 7] and coco.class_names == ["cat", "dog"]
    assert [im.image_id for im in coco.images] == [1, 2, 3, 4, 5]
    first, second, third = coco.images[:3]
    np.testing.assert_allclose(first.boxes, [[10, 5, 30, 15], [50, 40, 64, 48]])
    np.testing.assert_array_equal(first.classes, [1, 0])  # dog = index 1, cat = index 0
    assert coco.clipped_boxes == 1 and coco.skipped_boxes == 1
    assert second.crowd.tolist() == [True] and len(third.boxes) == 0


def test_unknown_category_names_the_file(tmp_path):
    bad = ANNOTATIONS + [{"id": 9, "image_id": 1, "category_id": 5, "bbox": [0, 0, 5, 5]}]
    paths = write_coco(str(tmp_path), bad)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: annotation 9 has "
                                           r"category_id 5"):
        load_coco(*paths)


def test_categories_not_the_networks_name_the_file(tmp_path):
    """Scoring a file against a checkpoint trained on other categories."""
    paths = write_coco(str(tmp_path), ANNOTATIONS)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: category ids \[7\] are not "
                                           r"among the network's 2 classes; evaluate with the "
                                           r"annotation file it was trained for"):
        load_coco(*paths, category_ids=[3, 4])


def recipe(root, **overrides):
    from types import SimpleNamespace
    keys = dict(data_path=root, train_split="val2017", train_ann_file="", train_image_dir="",
                num_classes=2)
    return SimpleNamespace(**dict(keys, **overrides))


def test_class_count_contradicting_the_annotations(tmp_path):
    from src.tasks.detection import create_train_data
    from src.train_utils import ConfigError
    write_coco(str(tmp_path), ANNOTATIONS)
    with pytest.raises(ConfigError, match=r"instances_val2017\.json has 2 categories but "
                                          r"--num_classes is 80; pass --num_classes 2"):
        create_train_data(recipe(str(tmp_path), num_classes=80))


@pytest.mark.parametrize("annotations", [[], None, ANNOTATIONS[2:]],
                         ids=["empty", "missing", "only-tiny-and-crowd"])
def test_no_boxes_is_an_error_naming_the_file(tmp_path, annotations):
    """Nothing to train on, and pycocotools' AP would be -1 (undefined): an
    error naming the file and the flags, for training and for scoring."""
    from src.tasks.detection import create_train_data, load_scored_coco
    paths = write_coco(str(tmp_path), annotations)
    if annotations is None:  # no "annotations" key at all
        with open(paths[0], encoding="utf-8") as f:
            data = json.load(f)
        del data["annotations"]
        with open(paths[0], "w", encoding="utf-8") as f:
            json.dump(data, f)
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: no box .* in its 5 "
                                           r"images.*nothing to train on; name the annotated "
                                           r"split \(--train_split / --train_ann_file\)"):
        create_train_data(recipe(str(tmp_path)))
    with pytest.raises(DatasetError, match=r"instances_val2017\.json: no box .*COCO AP is "
                                           r"undefined .*--val_split / --val_ann_file"):
        load_scored_coco(*paths, [3, 7])


def test_no_readable_image_is_an_error(tmp_path):
    """Every image file missing or corrupt: no AP at all, rather than one of 0."""
    from src.tasks.detection import score, test_settings
    coco = load_coco(*write_coco(str(tmp_path), ANNOTATIONS))
    with pytest.raises(DatasetError, match=f"no image of {tmp_path}/val2017 could be read"):
        score({}, coco, test_settings({}))


def test_missing_layout_says_what_is_expected(tmp_path):
    with pytest.raises(DatasetError, match="annotations/instances_train2017.json"):
        split_paths(str(tmp_path), "train2017")


def test_eval_pipeline_skips_and_counts_bad_images(tmp_path):
    from src.data.detection import create_eval_dataset
    coco = load_coco(*write_coco(str(tmp_path), ANNOTATIONS))
    dataset = create_eval_dataset(coco, 2, 64, num_workers=1)
    ids, factors = [], []
    for images, image_ids, batch_factors in dataset.create_tuple_iterator(output_numpy=True,
                                                                         num_epochs=1):
        assert images.shape[1:] == (3, 64, 64)
        ids += image_ids.tolist()
        factors += batch_factors.tolist()
    assert ids == [1, 2, 3] and dataset.bad_images.count == 2
    np.testing.assert_allclose(factors[0], [1.0, 1.0])  # 64x48: the long side is already 64


def test_train_pipeline_targets(tmp_path):
    from src.data.detection import create_train_dataset
    from src.models.heads.yolov3_head import ANCHORS_320, STRIDES
    coco = load_coco(*write_coco(str(tmp_path), ANNOTATIONS))
    dataset = create_train_dataset(coco, 2, ANCHORS_320, STRIDES, (64, 64), augment=False,
                                   num_workers=1, seed=0)
    assert dataset.num_files == 2  # images 1 and 2 have annotations (filter_empty_gt)
    images, box_targets, labels = next(dataset.create_tuple_iterator(output_numpy=True))
    anchors = 3 * (2 * 2 + 4 * 4 + 8 * 8)
    assert images.shape == (2, 3, 64, 64) and box_targets.shape == (2, anchors, 4)
    assert labels.shape == (2, anchors)
    # two boxes in image 1, none but a crowd box in image 2
    assert sorted(((labels >= 0).sum(1)).tolist()) == [0, 2]


def test_resize_and_flip_move_boxes():
    img = np.zeros((50, 100, 3), np.float32)
    anns = np.array([[10, 20, 30, 40, 1, 0]], np.float32)
    out, moved, factors = resize_keep_ratio(img, anns, 64)
    assert out.shape == (32, 64, 3)  # 50 * 0.64 = 32
    np.testing.assert_allclose(factors, [0.64, 0.64])
    np.testing.assert_allclose(moved[0, :4], [6.4, 12.8, 19.2, 25.6], rtol=1e-6)
    flipped_img, flipped = hflip(img, anns)
    np.testing.assert_allclose(flipped[0, :4], [70, 20, 90, 40])
    assert flipped[0, 4] == 1


def test_expand_and_crop_keep_boxes_on_their_pixels():
    rng = np.random.default_rng(3)
    img = np.zeros((60, 80, 3), np.float32)
    img[10:30, 20:50] = 200  # the object's pixels
    anns = np.array([[20, 10, 50, 30, 0, 0]], np.float32)
    for _ in range(20):
        big, moved = expand(img, anns, rng, prob=1.0)
        x1, y1, x2, y2 = moved[0, :4].astype(int)
        assert (big[y1:y2, x1:x2] == 200).all()
        crop, kept = min_iou_random_crop(big, moved, rng)
        if len(kept):
            x1, y1, x2, y2 = np.round(kept[0, :4]).astype(int)
            assert (crop[y1:y2, x1:x2] == 200).all()
            assert 0 <= x1 < x2 <= crop.shape[1] and 0 <= y1 < y2 <= crop.shape[0]


def test_train_transform_pads_to_the_largest_scale():
    rng = np.random.default_rng(0)
    img = np.full((40, 80, 3), 128, np.uint8)
    anns = np.array([[10, 10, 30, 30, 0, 0]], np.float32)
    for _ in range(5):  # resize (long side 64-96, ratio kept), flip, pad
        out, moved = train_transform(img, anns, rng, (64, 96), augment=False)
        assert out.shape == (3, 96, 96)
        assert (out[:, 48:, :] == 0).all()  # height <= 96 / 2: rows from 48 on are padding
        side = moved[0, 2] - moved[0, 0]
        # the long side scaled 64-96 / 80 (x0.8-1.2); each axis rounded to whole pixels
        assert 16 <= side <= 24 and moved[0, 3] - moved[0, 1] == pytest.approx(side, rel=0.05)
    for _ in range(5):  # with distortion, expand and crop: still the one padded square
        assert train_transform(img, anns, rng, (64, 96))[0].shape == (3, 96, 96)


def test_detection_digits_are_drawn_as_the_classifier_saw_them():
    """The digit set pastes each scan as the classification quick start draws
    it (src/digits.py's digit_image, opaque): ink blended into the photo was
    read right by the classification checkpoint only 32-40% of the time and
    the detector fine-tuned from it hardly learnt the classes (AP50 0.085)."""
    from sklearn.datasets import load_digits
    from src.data.digit_drawing import paste_digit
    from src.data.digits_detection import ink_box
    from src.digits import digit_image
    scan = load_digits().images[7]
    canvas = np.full((64, 64, 3), 200.0, np.float32)
    box = ink_box(paste_digit(canvas, scan, 10, 20, 30), 10, 20)
    expected = np.asarray(digit_image(scan, 30), np.float32)
    np.testing.assert_array_equal(canvas[20:50, 10:40], expected)
    assert canvas[:20].min() == 200.0 and canvas[50:].min() == 200.0  # the rest untouched
    ink = np.nonzero(expected[..., 0] / 255 > 0.25)
    assert box == [10.0 + ink[1].min(), 20.0 + ink[0].min(), float(np.ptp(ink[1]) + 1),
                   float(np.ptp(ink[0]) + 1)]


def test_postprocess_checks_the_results_against_the_record(tmp_path):
    """postprocess.py on results of another model, or for images the
    annotation file does not have: errors naming the files."""
    from types import SimpleNamespace
    from src.edge import ResultsError
    from src.tasks.detection import postprocess, test_settings
    ann_file, _ = write_coco(str(tmp_path), ANNOTATIONS)
    record = {"task": "detection", "image_ids": {"image_000000.bin": 1},
              "factors": {"image_000000.bin": [1.0, 1.0]}, "annotations": ann_file,
              "image_dir": str(tmp_path / "val2017"), "image_size": 64, "num_classes": 2,
              "num_predictions": 10, "category_ids": [3, 7], "test_settings": test_settings({})}
    results = tmp_path / "result_Files"
    results.mkdir()
    np.zeros(3, np.float32).tofile(results / "image_000000_0.bin")
    args = SimpleNamespace(result_path=str(results), label_file="labels.json", ann_file=None,
                           predictions_file=None)
    with pytest.raises(ResultsError, match=r"hold 3 values per input, a detector of 2 classes "
                                           r"at 64 gives 10 x 7 = 70: results of another model"):
        postprocess(record, args)
    with pytest.raises(ResultsError, match=r"instances_val2017\.json has no image ids \[99\] of "
                                           r"labels\.json"):
        postprocess(dict(record, image_ids={"image_000000.bin": 99}), args)
    # the right size: scored (nothing above the thresholds here, so AP 0 on one image)
    np.zeros(70, np.float32).tofile(results / "image_000000_0.bin")
    metrics = postprocess(record, args)
    assert metrics["val_images"] == 1 and metrics["skipped"] == 4 and metrics["AP"] == 0.0
