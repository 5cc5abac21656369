"""Segmentation through the commands, end to end on a tiny digit-scenes set:
train.py (a segmentation recipe counted in iterations) -> eval.py (per-class
table, JSON metrics, --predictions_dir label PNGs) -> export.py (MINDIR,
ONNX) -> infer.py on the checkpoint and both exports (the same masks),
plus the recipe checks and the poly schedule."""
import contextlib
import io
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

import eval as eval_script
import export
import infer
import train
from src.data.ade20k import read_dataset_info, read_pair, scan_split
from src.data.digit_scenes import write_digit_scenes
from src.data.seg_transforms import eval_image
from src.evaluation.segmentation import SegmentationScore
from src.model_info import read_info
from src.models.losses.segmentation_loss import IGNORE_LABEL
from src.tasks import InferError, segmentation
from src.train_utils import ConfigError, lr_schedule

SIZE = 64
WIDE = 96  # a non-square export's width
RECIPE = dict(task="segmentation", model="ghostnetv2_100", num_classes=11, pretrained="",
              output_stride=8, aspp_channels=16, aspp_dilations=[1, 2, 3], aux_channels=8,
              image_size=SIZE, train_scale=[SIZE, SIZE], ratio_range=[0.75, 1.5],
              test_scale=[SIZE, SIZE], hflip=0.0, num_workers=1, batch_size=2, iterations=4,
              iterations_per_epoch=2, lr=0.01, device_target="CPU", log_interval=1,
              keep_checkpoint_max=2)


def run(main, *argv):
    """main(argv) in this process: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data = str(root / "scenes")
    write_digit_scenes(data, num_train=8, num_val=3, image_size=SIZE, digit_size=(24, 40))
    recipe = dict(RECIPE, data_path=data, output_dir=str(root / "run"))
    (root / "seg.yaml").write_text(yaml.safe_dump(recipe))
    assert train.main(["--config_path", str(root / "seg.yaml")]) == 0
    return SimpleNamespace(root=root, data=data, run=str(root / "run"),
                           ckpt=str(root / "run" / "best.ckpt"))


def test_train_counts_iterations_and_records_the_segmenter(trained):
    with open(os.path.join(trained.run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # 4 iterations = 2 epochs of 2, validated after each
    assert [r["global_step"] for r in records] == [2, 4]
    assert all(0 <= r["mIoU"] <= 1 and 0 <= r["aAcc"] <= 1 for r in records)
    info, _ = read_info(trained.ckpt)
    assert info["task"] == "segmentation" and info["class_names"][:2] == ["background", "0"]
    assert (info["ignore_index"], info["output_stride"], info["aspp_channels"]) == (255, 8, 16)


def test_eval_scores_and_writes_label_pngs(trained, tmp_path):
    predictions = tmp_path / "pred"
    code, out = run(eval_script.main, "--checkpoint_path", trained.ckpt, "--data_path",
                    trained.data, "--predictions_dir", str(predictions), "--device_target", "CPU")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) >= {"mIoU", "mAcc", "aAcc"} and result["num_images"] == 3
    assert "background" in out and "IoU" in out  # the per-class table
    # The PNGs, scored independently, give eval.py's figures.
    info = read_dataset_info(trained.data)
    score = SegmentationScore(11, IGNORE_LABEL)
    for image_path, label_path in scan_split(trained.data, "validation"):
        _, label = read_pair(image_path, label_path, info)
        name = os.path.splitext(os.path.basename(image_path))[0] + ".png"
        predicted = np.asarray(Image.open(predictions / name))
        assert predicted.shape == label.shape and predicted.max() < 11
        score.update(predicted, label)
    for key, value in score.scores().items():
        assert result[key] == pytest.approx(value, abs=1e-4)


def test_exports_give_the_checkpoints_masks(trained, tmp_path):
    image = os.path.join(trained.data, "images", "validation", "00000.png")
    masks = {}
    for source, flag in (("ckpt", "--checkpoint_path"), ("MINDIR", "--mindir_path"),
                         ("ONNX", "--onnx_path")):
        path = trained.ckpt
        if source != "ckpt":
            path = str(tmp_path / f"seg.{source.lower()}")
            assert run(export.main, "--checkpoint_path", trained.ckpt, "--file_format", source,
                       "--file_name", path)[0] == 0
        out_dir = tmp_path / source
        code, out = run(infer.main, "--image_path", image, flag, path, "--output_dir",
                        str(out_dir))
        assert code == 0, out
        masks[source] = np.asarray(Image.open(out_dir / "00000.png"))
        overlay = Image.open(out_dir / "00000_overlay.png")
        assert overlay.width == SIZE and overlay.height > SIZE  # image + legend
    assert masks["ckpt"].shape == (SIZE, SIZE)
    np.testing.assert_array_equal(masks["MINDIR"], masks["ckpt"])
    np.testing.assert_array_equal(masks["ONNX"], masks["ckpt"])


def test_non_square_exports_segment_at_their_input_size(trained, tmp_path):
    """Exports taking 64x96 (height x width) images: infer.py resizes each
    image to that and the mask back to the image's size, the checkpoint's
    mask for the same input; a square-only consumer gets an error naming the fix."""
    image_path = os.path.join(trained.data, "images", "validation", "00001.png")
    image = np.asarray(Image.open(image_path).convert("RGB"))
    net, _, _ = segmentation.load_network(trained.ckpt, read_info(trained.ckpt)[0])
    with segmentation.pynative():
        expected = segmentation.predict_classes(
            net, eval_image(image, (SIZE, WIDE), keep_ratio=False), image.shape[:2])
    for source, flag in (("MINDIR", "--mindir_path"), ("ONNX", "--onnx_path")):
        path = str(tmp_path / f"wide.{source.lower()}")
        assert run(export.main, "--checkpoint_path", trained.ckpt, "--file_format", source,
                   "--file_name", path, "--image_height", str(SIZE),
                   "--image_width", str(WIDE))[0] == 0
        code, out = run(infer.main, "--image_path", image_path, flag, path, "--output_dir",
                        str(tmp_path / source))
        assert code == 0, out
        mask = np.asarray(Image.open(tmp_path / source / "00001.png"))
        np.testing.assert_array_equal(mask, expected)
    runner = infer.Runner(onnx_path=path)
    assert runner.fixed_shape == (SIZE, WIDE)
    with pytest.raises(InferError, match="--image_height S --image_width S"):
        _ = runner.fixed_size


def test_recipe_checks_and_poly_schedule(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(dict(RECIPE, data_path=str(tmp_path), iterations=5)))
    with pytest.raises(ConfigError, match="--iterations 5 needs --iterations_per_epoch, a "
                                          "divisor"):
        train.parse_config(["--config_path", str(recipe)])
    config = train.parse_config(["--config_path", str(recipe), "--iterations", "6"])
    assert config.epoch_size == 3 and config.lr_scheduler == "polynomial_decay"
    # mmsegmentation's PolyLR: (lr - eta_min) * (1 - t / T) ** 0.9 + eta_min, every step
    lrs = lr_schedule(config, 2)
    expected = [(0.01 - 1e-4) * (1 - t / 6) ** 0.9 + 1e-4 for t in range(6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
