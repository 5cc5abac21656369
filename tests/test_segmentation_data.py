"""Segmentation data: ADE20K's layout and conventions, a data set with its
own classes, the bad inputs (wrong mask size, values past the classes,
missing masks, colour masks), palette PNGs, and the transforms."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from src.data.ade20k import (ADE20K_CLASSES, create_eval_dataset, read_dataset_info, read_pair,
                             scan_split, write_prediction_png)
from src.data.seg_transforms import TrainTransform, eval_image, keep_ratio_size
from src.dataset import DatasetError
from src.models.losses.segmentation_loss import IGNORE_LABEL


def write_pair(root, split, name, image, label, label_mode=None):
    for folder in ("images", "annotations"):
        os.makedirs(os.path.join(root, folder, split), exist_ok=True)
    Image.fromarray(image).save(os.path.join(root, "images", split, name + ".jpg"))
    png = Image.fromarray(label, label_mode) if label_mode else Image.fromarray(label)
    path = os.path.join(root, "annotations", split, name + ".png")
    png.save(path)
    return path


def photo(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_ade20k_conventions(tmp_path):
    root = str(tmp_path / "ADEChallengeData2016")
    label = np.array([[0, 1, 150], [2, 0, 1]], np.uint8)
    write_pair(root, "validation", "ADE_val_00000001", photo(2, 3), label)
    info = read_dataset_info(root)  # no dataset.json: ADE20K's
    assert info["classes"] == list(ADE20K_CLASSES) and len(info["classes"]) == 150
    assert info["reduce_zero_label"] and info["ignore_index"] == 255
    image, values = read_pair(*scan_split(root, "validation")[0], info)
    np.testing.assert_array_equal(values, [[IGNORE_LABEL, 0, 149], [1, IGNORE_LABEL, 0]])
    # predictions go back to the stored values (k -> k + 1)
    out = str(tmp_path / "pred.png")
    write_prediction_png(out, np.array([[0, 149]]), info)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), [[1, 150]])
    # 151 is no ADE20K class
    path = write_pair(root, "validation", "ADE_val_00000002", photo(2, 3),
                      np.array([[151, 1, 1], [1, 1, 1]], np.uint8))
    with pytest.raises(DatasetError, match=f"{path}: label values \\[151\\]"):
        read_pair(*scan_split(root, "validation")[1], info)


def test_own_classes_palette_and_bad_masks(tmp_path):
    root = str(tmp_path)
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"classes": ["sky", "sea", "boat"], "ignore_index": 255}, f)
    info = read_dataset_info(root)
    assert not info["reduce_zero_label"] and len(info["palette"]) == 3
    # a palette PNG is read as its indices, not its colours
    palette_label = Image.fromarray(np.array([[0, 1], [2, 255]], np.uint8), "P")
    palette_label.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 759)
    write_pair(root, "training", "a", photo(2, 2), np.zeros((2, 2), np.uint8))
    palette_label.save(os.path.join(root, "annotations", "training", "a.png"))
    pairs = scan_split(root, "training")
    np.testing.assert_array_equal(read_pair(*pairs[0], info)[1], [[0, 1], [2, IGNORE_LABEL]])
    # every pixel ignored: allowed
    write_pair(root, "training", "b", photo(2, 2), np.full((2, 2), 255, np.uint8))
    assert (read_pair(*scan_split(root, "training")[1], info)[1] == IGNORE_LABEL).all()
    # label 3 with 3 classes (not the ignore value)
    bad_value = write_pair(root, "training", "c", photo(2, 2), np.full((2, 2), 3, np.uint8))
    with pytest.raises(DatasetError, match=f"{bad_value}: label values \\[3\\]"):
        read_pair(*scan_split(root, "training")[2], info)
    # the mask's size differs from its image's
    wrong_size = write_pair(root, "training", "d", photo(4, 5), np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=f"{wrong_size}: label is 4x4 but its image .*d.jpg "
                                           "is 5x4"):
        read_pair(*scan_split(root, "training")[3], info)
    # a colour-coded mask
    rgb = write_pair(root, "training", "e", photo(2, 2), photo(2, 2))
    with pytest.raises(DatasetError, match=f"{rgb}: a RGB label image"):
        read_pair(*scan_split(root, "training")[4], info)
    # an image without a mask stops the scan, naming it
    Image.fromarray(photo(2, 2)).save(os.path.join(root, "images", "training", "f.jpg"))
    with pytest.raises(DatasetError, match="1 images of .* have no label PNG .*f.jpg"):
        scan_split(root, "training")
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"classes": ["sky", "sea"], "ignore_index": 1}, f)
    with pytest.raises(DatasetError, match="ignore_index must be an integer outside"):
        read_dataset_info(root)


def test_train_and_eval_transforms(tmp_path):
    rng = np.random.default_rng(0)
    image = photo(60, 90)
    label = rng.integers(0, 4, (60, 90)).astype(np.int32)
    label[:10] = IGNORE_LABEL
    transform = TrainTransform(scale=(180, 60), ratio_range=(0.5, 2.0), crop_size=(64, 64),
                               cat_max_ratio=0.75, seed=0)
    for _ in range(5):
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 64, 64) and out_image.dtype == np.float32
        assert out_label.shape == (64, 64) and out_label.dtype == np.int32
        assert set(np.unique(out_label)) <= {IGNORE_LABEL, 0, 1, 2, 3}
    # smaller than the crop at ratio 0.5 (90x30 scaled to 90x60 max): padded with ignore
    small = TrainTransform((90, 30), (1.0, 1.0), (64, 64), 1.0, hflip=0.0, photometric=False)
    out_image, out_label = small(image, label)
    assert (out_label[30:] == IGNORE_LABEL).all() and (out_image[:, 30:] == 0).all()
    # test resize: 2048x512 keeping the ratio (mmcv's rescale)
    assert keep_ratio_size(375, 500, (2048, 512)) == (512, 683)
    assert keep_ratio_size(300, 2000, (2048, 512)) == (307, 2048)
    assert eval_image(image, (2048, 512)).shape == (3, 512, 768)
    root = str(tmp_path)
    write_pair(root, "validation", "x", photo(30, 40), np.ones((30, 40), np.uint8))
    dataset = create_eval_dataset(root, read_dataset_info(root) | {"classes": ["a", "b"],
                                                                     "reduce_zero_label": False},
                                  (128, 64))
    images, labels, index = next(dataset.create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert images.shape == (1, 3, 64, 85) and labels.shape == (1, 30, 40) and index[0] == 0


def test_digit_scenes_draw_digits_as_the_classifier_saw_them():
    """The digit scenes draw each scan as the classification quick start
    draws it (src/digits.py's digit_image, opaque on the photo) and label its
    strokes: blended into the photo in colour, the classifier's features did
    not tell the digits apart and no run got past "background" (README)."""
    from sklearn.datasets import load_digits
    from src.data.digit_scenes import IGNORE_INDEX, make_scene
    from src.digits import digit_image
    digits = load_digits()
    scan, digit = digits.images[7], int(digits.target[7])
    dark_photo = np.full((90, 120, 3), 20, np.uint8)  # darker than the rim, lighter than 0
    image, label = make_scene(dark_photo, [scan], [digit], np.random.default_rng(3), 64,
                              (32, 32), 1)
    ys, xs = np.nonzero((image != 20).any(-1))  # the digit's square: 0 (black) to 255 (ink)
    top, left = ys.min(), xs.min()
    assert (ys.max() - top, xs.max() - left) == (31, 31)
    square = (slice(top, top + 32), slice(left, left + 32))
    np.testing.assert_array_equal(image[square], np.asarray(digit_image(scan, 32)))
    outside = np.ones(label.shape, bool)
    outside[square] = False
    assert (label[outside] == 0).all() and (image[outside] == 20).all()
    ink = image[square][..., 0].astype(np.float32) / 255
    # strokes (ink >= half) are the digit's class, the faint rim is ignored,
    # the black square around them is background
    np.testing.assert_array_equal(label[square] == digit + 1, ink >= 0.5)
    np.testing.assert_array_equal(label[square] == IGNORE_INDEX, (ink >= 0.15) & (ink < 0.5))
    np.testing.assert_array_equal(label[square] == 0, ink < 0.15)
    assert (label[square] == digit + 1).sum() > 100


def test_make_digit_scenes_refuses_bad_digit_sizes(tmp_path, capsys):
    """make_digit_scenes.py: digits larger than the image, or none per
    image, are a clear error naming the flags, before anything is written."""
    from scripts.make_digit_scenes import main
    for argv, message in ((["--image_size", "60"], "--max_digit <= --image_size"),
                          (["--min_digit", "40", "--max_digit", "30"],
                           "--min_digit <= --max_digit"),
                          (["--max_digits", "0"], "--max_digits must be at least 1")):
        with pytest.raises(SystemExit):
            main(["--output", str(tmp_path / "scenes")] + argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "scenes").exists()
