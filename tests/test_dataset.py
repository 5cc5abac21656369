"""Data pipeline: timm's eval transform, every image once, robust decoding,
clear errors for unusable folders, training batches."""
import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from src.dataset import (DatasetError, create_eval_dataset, create_train_dataset, load_rgb,
                         resize_center_crop, scan_image_folder)
from src.digits import digit_image, split_indices


def write_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def noise(rng, height=50, width=70):
    return rng.randint(0, 256, (height, width, 3)).astype(np.uint8)


def collect(dataset):
    images, labels = [], []
    for image, label in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1):
        images.append(image)
        labels.append(label)
    return images, labels


@pytest.fixture
def odd_folder(tmp_path):
    """Two classes with every kind of file: 6 decodable, 4 not."""
    rng = np.random.RandomState(0)
    root = tmp_path / "data"
    rgb = Image.fromarray(noise(rng))
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rgb.save(root / "a" / "rgb.jpg")
    rgb.convert("L").save(root / "a" / "gray.png")
    rgb.convert("RGBA").save(root / "a" / "rgba.png")
    rgb.convert("CMYK").save(root / "a" / "cmyk.jpg")
    rgb.convert("P").save(root / "b" / "palette.gif")
    Image.fromarray(rng.randint(0, 65536, (40, 40)).astype(np.uint16)).save(root / "b" / "g16.png")
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("not an image")
    jpeg = (root / "a" / "rgb.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    png = io.BytesIO()
    rgb.save(png, "PNG")
    (root / "b" / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (root / "b" / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_eval_transform_equals_timm(tmp_path):
    """The eval inputs are timm's for these weights (bicubic resize to 256, crop 224)."""
    timm_data = pytest.importorskip("timm.data")
    skimage_data = pytest.importorskip("skimage.data")
    photo = skimage_data.coffee()  # 400x600, a real photograph
    write_png(str(tmp_path / "data" / "cup" / "coffee.png"), photo)
    dataset, _ = create_eval_dataset(str(tmp_path / "data"), 224, 1, num_workers=1)
    (ours,), _ = collect(dataset)
    transform = timm_data.create_transform(input_size=(3, 224, 224), interpolation="bicubic",
                                           crop_pct=0.875, mean=timm_data.IMAGENET_DEFAULT_MEAN,
                                           std=timm_data.IMAGENET_DEFAULT_STD)
    theirs = transform(Image.fromarray(photo)).numpy()
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[0], theirs, atol=1e-5)


def test_resize_center_crop_keeps_aspect_and_centers():
    img = Image.fromarray(np.zeros((100, 300, 3), np.uint8))
    out = resize_center_crop(img, 64, 0.8)  # shorter side 80 -> 80x240, crop 64 centered
    assert out.size == (64, 64)


def test_eval_scores_every_image_once_in_order(tmp_path):
    rng = np.random.RandomState(1)
    counts = {"cat": 3, "dog": 4}  # 7 images, batch 3 -> 3 + 3 + 1
    for name, count in counts.items():
        for i in range(count):
            write_png(str(tmp_path / name / f"{i}.png"), noise(rng, 64, 64))
    dataset, classes = create_eval_dataset(str(tmp_path), 64, 3, num_workers=2, crop_pct=1.0)
    images, labels = collect(dataset)
    assert classes == ["cat", "dog"]
    assert [len(b) for b in labels] == [3, 3, 1]
    assert np.concatenate(labels).tolist() == [0, 0, 0, 1, 1, 1, 1]
    # crop_pct 1.0 on a 64x64 file: the pixels themselves, normalised
    first = np.asarray(Image.open(tmp_path / "cat" / "0.png"), np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(images[0][0], ((first - mean) / std).transpose(2, 0, 1), atol=1e-4)
    # ranks share the images without padding: together exactly the whole set
    shares = [np.concatenate(collect(create_eval_dataset(str(tmp_path), 64, 2, 1, rank, 2,
                                                         1.0)[0])[1]) for rank in range(2)]
    assert sorted(np.concatenate(shares).tolist()) == [0, 0, 0, 1, 1, 1, 1]
    assert [len(s) for s in shares] == [4, 3]


def test_unreadable_files_are_skipped_named_once_and_counted(odd_folder, caplog):
    dataset, classes = create_eval_dataset(str(odd_folder), 64, 4, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="src.dataset"):
        for _ in range(2):  # a second pass warns no more
            images, labels = collect(dataset)
            assert sum(len(b) for b in labels) == 6
    assert dataset.num_files == 10
    assert dataset.bad_images.count == 4
    warned = [r.getMessage() for r in caplog.records
              if "skipping unreadable image" in r.getMessage()]
    assert len(warned) == 4
    for name in ("empty.jpg", "text.jpg", "truncated.jpg", "truncated.png"):
        assert sum(name in message for message in warned) == 1, name
    assert any("empty file" in m for m in warned)
    assert all(np.isfinite(b).all() for b in images)


def test_odd_formats_decode_to_8bit_rgb(odd_folder):
    for name in ("a/gray.png", "a/rgba.png", "a/cmyk.jpg", "b/palette.gif", "b/g16.png"):
        img = load_rgb(str(odd_folder / name))
        assert img.mode == "RGB", name
    # 16-bit samples are scaled to 8 bits, not clipped
    path = str(odd_folder / "wide.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(path)
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(path + ".png")
    assert np.asarray(load_rgb(path)).max() == 255
    assert np.asarray(load_rgb(path + ".png")).max() == 128


@pytest.mark.parametrize("layout, message", [
    ("missing", "data folder not found"),
    ("file", "is not a folder"),
    ("empty", "no class sub-folders"),
    ("no_images", "no image files"),
])
def test_unusable_folders_say_what_is_expected(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout == "empty":
        root.mkdir()
    elif layout == "no_images":
        (root / "cls").mkdir(parents=True)
        (root / "cls" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=message) as err:
        scan_image_folder(str(root))
    assert str(root) in str(err.value)
    assert "one sub-folder per class" in str(err.value)


def test_validation_classes_must_match_training(tmp_path):
    rng = np.random.RandomState(2)
    for name in ("a", "b", "c"):
        write_png(str(tmp_path / "val" / name / "0.png"), noise(rng, 8, 8))
    with pytest.raises(DatasetError, match="differ from the training classes"):
        create_eval_dataset(str(tmp_path / "val"), 64, 2, class_names=["a", "b"])


def test_train_batches_full_and_augmented(tmp_path):
    rng = np.random.RandomState(3)
    for name in ("x", "y"):
        for i in range(5):
            write_png(str(tmp_path / name / f"{i}.png"), noise(rng, 80, 90))
    augment = dict(auto_augment="randaug-m9-mstd0.5", re_prob=0.5, re_value="random")
    dataset, classes = create_train_dataset(str(tmp_path), 64, 4, num_workers=2, augment=augment)
    images, labels = collect(dataset)
    assert [b.shape for b in images] == [(4, 3, 64, 64)] * 2  # 10 images: the remainder dropped
    assert all(b.dtype == np.float32 for b in images)
    assert all(b.dtype == np.int32 for b in labels)
    with pytest.raises(DatasetError, match="lower --batch_size"):
        create_train_dataset(str(tmp_path), 64, 32)


def test_digits_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 20)
    train, val = split_indices(labels, 0.2, seed=0)
    assert len(val) == 40 and len(train) == 160 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [4] * 10
    assert (train, val) == split_indices(labels, 0.2, seed=0)
    img = digit_image(np.eye(8) * 16, 64)
    assert img.size == (64, 64) and img.mode == "RGB"
