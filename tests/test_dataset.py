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


def gradient_image(height, width):
    """Red = 0.8 x the column, green = 0.8 x the row: a resize by 0.8 keeps
    these linear ramps, so every output pixel says where it came from."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([0.8 * cols, 0.8 * rows, np.full_like(rows, 128)], axis=-1)
    return Image.fromarray(np.round(pixels).astype(np.uint8))


@pytest.mark.parametrize("height, width, top, left", [
    (100, 300, 8, 88),    # shorter side 100 -> 80: 80x240, crop rows 8.., columns 88..
    (300, 100, 88, 8),    # the same, standing
])
def test_resize_center_crop_keeps_aspect_and_centers(height, width, top, left):
    """Both sides scaled by the same factor (0.8 = 80 / 100) and the crop
    taken from the middle: each output pixel holds the ramp value of the
    source pixel it maps to (away from the resized image's borders, where
    bicubic bends the ramp)."""
    out = resize_center_crop(gradient_image(height, width), 64, 0.8)
    assert out.size == (64, 64)
    pixels = np.asarray(out, np.float64)
    # output pixel i of the crop is pixel (offset + i) of the resized image,
    # whose centre maps back to source coordinate (offset + i + 0.5) / 0.8 - 0.5
    source_rows = (top + np.arange(64) + 0.5) / 0.8 - 0.5
    source_cols = (left + np.arange(64) + 0.5) / 0.8 - 0.5
    # the ramp rises 1.0 per output pixel: a crop one pixel off is 1.1 away
    # (measured), the right one 0.1 (uint8 rounding)
    np.testing.assert_allclose(pixels[:, :, 0], np.tile(0.8 * source_cols, (64, 1)), atol=0.5)
    np.testing.assert_allclose(pixels[:, :, 1], np.tile(0.8 * source_rows[:, None], (1, 64)),
                               atol=0.5)


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


def test_train_batches_full_and_labelled(tmp_path):
    """Full batches only, and every image carries its own folder's label:
    class x is red, class y blue, and random crops and flips keep them so."""
    rng = np.random.RandomState(3)
    for name, channel in (("x", 0), ("y", 2)):
        for i in range(5):
            pixels = rng.randint(0, 60, (80, 90, 3)).astype(np.uint8)
            pixels[:, :, channel] += 190
            write_png(str(tmp_path / name / f"{i}.png"), pixels)
    augment = dict(color_jitter=0.0)  # geometry only: random resized crops, flips
    dataset, classes = create_train_dataset(str(tmp_path), 64, 4, num_workers=2, augment=augment)
    images, labels = collect(dataset)
    assert classes == ["x", "y"]
    assert [b.shape for b in images] == [(4, 3, 64, 64)] * 2  # 10 images: the remainder dropped
    assert all(b.dtype == np.float32 for b in images)
    assert all(b.dtype == np.int32 for b in labels)
    images, labels = np.concatenate(images), np.concatenate(labels)
    red_minus_blue = (images[:, 0] * 0.229 + 0.485 - images[:, 2] * 0.225 - 0.406).mean((1, 2))
    assert ((red_minus_blue > 0.5) == (labels == 0)).all(), (red_minus_blue, labels)
    assert ((red_minus_blue < -0.5) == (labels == 1)).all(), (red_minus_blue, labels)
    with pytest.raises(DatasetError, match="lower --batch_size"):
        create_train_dataset(str(tmp_path), 64, 32)


# Every augmentation off, and a crop of the whole (square) image: the identity.
AUGMENT_OFF = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, color_jitter=0.0,
                   auto_augment=None, re_prob=0.0)
NUM_PHOTOS = 16


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """NUM_PHOTOS 64x64 photographs in one class folder; and the same, as the
    normalised CHW arrays the identity pipeline must give."""
    from reference import photos
    root = tmp_path_factory.mktemp("photos")
    normalised = photos(NUM_PHOTOS, (64, 64))
    pixels = normalised.transpose(0, 2, 3, 1) * np.array([0.229, 0.224, 0.225]) \
        + np.array([0.485, 0.456, 0.406])
    pixels = np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        write_png(str(root / "photo" / f"{i:02d}.png"), image)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    return root, ((pixels - mean) / std).transpose(0, 3, 1, 2)


def augmented(folder, **augment):
    """The training pipeline's images of ``folder`` in file order, AUGMENT_OFF
    but for ``augment``; (NUM_PHOTOS, 3, 64, 64)."""
    import mindspore.dataset as ds
    ds.config.set_seed(0)
    dataset, _ = create_train_dataset(str(folder), 64, NUM_PHOTOS, num_workers=1, shuffle=False,
                                      augment=dict(AUGMENT_OFF, **augment))
    (images,), _ = collect(dataset)
    return images


def changed(images, plain):
    """Per image: does it differ from the un-augmented one?"""
    return np.abs(images - plain).reshape(len(images), -1).max(axis=1) > 1e-3


def test_augmentations_change_the_images_as_configured(photo_folder):
    """With every augmentation off the pipeline gives the files' pixels; colour
    jitter then changes every image (brightness, contrast, saturation by up to
    +-40%, the geometry kept), RandAugment (2 ops, each with probability 0.5)
    most of them, and random erasing (probability 1 here) one rectangle per
    image, filled with per-pixel normal noise (timm's "pixel" mode)."""
    folder, expected = photo_folder
    plain = augmented(folder)
    np.testing.assert_allclose(plain, expected, atol=1e-4)

    jittered = augmented(folder, color_jitter=0.4)
    assert changed(jittered, plain).all()
    for image, source in zip(jittered, plain):  # a colour change: the picture stays in place
        assert np.corrcoef(image.mean(0).ravel(), source.mean(0).ravel())[0, 1] > 0.8

    randaugmented = augmented(folder, auto_augment="randaug-m9-mstd0.5")
    assert changed(randaugmented, plain).sum() >= NUM_PHOTOS // 2

    erased = augmented(folder, re_prob=1.0, re_value="random")
    for image, source in zip(erased, plain):
        mask = np.abs(image - source).max(axis=0) > 1e-6
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        area = len(rows) * len(cols) / mask.size
        assert mask[box].mean() > 0.99 and mask.sum() == mask[box].sum()  # one rectangle
        assert 0.02 * 0.9 <= area <= 1 / 3 * 1.1, area  # timm's erasing area range
        noise = image[:, box[0], box[1]]
        assert abs(noise.mean()) < 0.3 and 0.7 < noise.std() < 1.3  # N(0, 1) per pixel


def test_the_recipes_augmentation_reaches_the_transforms():
    """The ImageNet recipe's keys as the pipeline's operations: RandAugment
    m9 mstd0.5 (2 ops), no colour jitter beside it, random erasing 0.2 with
    per-pixel noise, the random resized crop and flip of timm's defaults."""
    from mindcv.data.auto_augment import RandAugment
    from mindspore.dataset import vision
    import train
    from src.dataset import train_transforms
    from src.train_utils import augment_args
    config = train.parse_config(["--config_path", "config/ghostnetv2_100_imagenet.yaml",
                                 "--data_path", "unused"])
    ops = train_transforms(config.image_size, **augment_args(config))
    by_type = {type(op): op for op in ops}
    crop = by_type[vision.RandomResizedCrop]
    assert (crop.scale, crop.ratio, crop.interpolation) == \
        ((0.08, 1.0), (0.75, 1.333), vision.Inter.BICUBIC)
    assert by_type[vision.RandomHorizontalFlip].prob == 0.5
    assert vision.RandomVerticalFlip not in by_type and vision.RandomColorAdjust not in by_type
    randaug = by_type[RandAugment]
    assert randaug.num_layers == 2 and len(randaug.ops) > 10
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in randaug.ops} == {(0.5, 9, 0.5)}
    erasing = by_type[vision.RandomErasing]
    assert (erasing.prob, erasing.value) == (0.2, "random")


def test_digits_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 20)
    train, val = split_indices(labels, 0.2, seed=0)
    assert len(val) == 40 and len(train) == 160 and not set(train) & set(val)
    assert np.bincount(labels[val]).tolist() == [4] * 10
    assert (train, val) == split_indices(labels, 0.2, seed=0)
    img = digit_image(np.eye(8) * 16, 64)
    assert img.size == (64, 64) and img.mode == "RGB"
