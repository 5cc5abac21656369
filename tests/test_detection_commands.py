"""GhostNetV2-YOLOv3 through the commands, end to end on a tiny digit
detection set (COCO layout, category ids 2..29): train.py (one epoch, COCO
validation) -> eval.py (pycocotools table, AP line, COCO results file) ->
export.py ONNX -> infer.py on the ONNX file and on the checkpoint (same
decoded outputs, pictures and JSON written); export.py MINDIR ->
scripts/run_infer_cpu.sh (preprocess.py, the MINDIR on MindSpore's runtime,
postprocess.py) gives eval.py's AP and detections."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pycocotools")

import eval as eval_cmd  # noqa: E402
import export  # noqa: E402
import infer  # noqa: E402
import train  # noqa: E402
from src.data.digits_detection import CATEGORY_IDS, write_digit_detection  # noqa: E402
from src.model_info import read_info  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "config", "yolov3_ghostnetv2_100_digits.yaml")


# Sizes (width, height) of the val images: the network's input is 64x64, so
# each is resized keeping its ratio and padded, and its boxes must be mapped
# back with the factors (eval.py, postprocess.py).
# (Near 64, so the digits keep about the size the one-epoch model saw.)
VAL_SIZES = ((80, 64), (64, 48), (72, 72), (48, 64), (96, 80), (64, 64))


def resize_val_images(root):
    """The val split's images at VAL_SIZES, their boxes scaled with them."""
    from PIL import Image
    ann_file = root / "annotations" / "instances_val.json"
    with open(ann_file, encoding="utf-8") as f:
        data = json.load(f)
    scales = {}
    for record, (width, height) in zip(data["images"], VAL_SIZES):
        path = root / "val" / record["file_name"]
        with Image.open(path) as image:
            image.convert("RGB").resize((width, height), Image.BILINEAR).save(path)
        scales[record["id"]] = (width / record["width"], height / record["height"])
        record["width"], record["height"] = width, height
    for ann in data["annotations"]:
        sx, sy = scales[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        ann["area"] = w * sx * h * sy
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump(data, f)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    write_digit_detection(str(root / "coco"), num_train=16, num_val=6, size=64,
                          digit_sizes=(16, 32), seed=1)
    resize_val_images(root / "coco")
    out = root / "run"
    code = train.main(["--config_path", RECIPE, "--data_path", str(root / "coco"),
                       "--image_size", "64", "--batch_size", "4", "--epoch_size", "1",
                       "--warmup_iters", "2", "--lr_steps", "[]", "--num_workers", "1",
                       "--log_interval", "1", "--output_dir", str(out),
                       # keep every box: one epoch scores below the recipe's 0.05
                       "--score_thr", "0", "--conf_thr", "0"])
    assert code == 0
    return root


def test_train_writes_a_detector(run):
    with open(run / "run" / "metrics.jsonl", encoding="utf-8") as f:
        record = json.loads(f.readline())
    assert set(record) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "train_loss"}
    info, _ = read_info(str(run / "run" / "best.ckpt"))
    assert info["task"] == "detection" and info["category_ids"] == list(CATEGORY_IDS)
    assert info["input_size"] == [3, 64, 64] and len(info["anchors"]) == 3
    with open(run / "run" / "train.log", encoding="utf-8") as f:
        log = f.read()
    # the schedule the detector trains with, not the common lr_scheduler key's
    assert ("schedule: linear warmup over 2 iterations from 0.001 x lr, then x0.1 after "
            "epochs none,") in log


@pytest.fixture(scope="module")
def evaluated(run):
    """eval.py on the val split: (stdout, its JSON line, the COCO results file)."""
    predictions = run / "predictions.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert eval_cmd.main(["--checkpoint_path", str(run / "run" / "best.ckpt"),
                              "--data_path", str(run / "coco"), "--val_split", "val",
                              "--batch_size", "4", "--device_target", "CPU",
                              "--predictions_file", str(predictions)]) == 0
    out = out.getvalue()
    return out, json.loads(out.strip().splitlines()[-1]), predictions


def test_eval_prints_coco_metrics_and_writes_results(run, evaluated):
    out, result, predictions = evaluated
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in out
    with open(run / "run" / "metrics.jsonl", encoding="utf-8") as f:
        trained = json.loads(f.readline())
    # the same weights on the same images: the AP validation logged
    for key in ("AP", "AP50", "AP75"):
        assert result[key] == pytest.approx(trained[key], abs=1e-6)
    assert result["val_images"] == 6
    with open(predictions, encoding="utf-8") as f:
        results = json.load(f)
    assert len(results) == result["detections"] > 0
    sizes = dict(zip(range(1000, 1006), VAL_SIZES))
    for det in results:  # in each image's own pixels
        assert det["category_id"] in CATEGORY_IDS
        width, height = sizes[det["image_id"]]
        x, y, w, h = det["bbox"]
        assert 0 <= x <= x + w <= width + 1e-3 and 0 <= y <= y + h <= height + 1e-3
    # boxes reach past the 64x64 input on the larger images: mapped back, not clipped to it
    assert max(d["bbox"][0] + d["bbox"][2] for d in results if d["image_id"] == 1004) > 64


def test_onnx_export_gives_the_checkpoint_outputs(run, tmp_path):
    from src.tasks.detection import prepare_image
    checkpoint = str(run / "run" / "best.ckpt")
    onnx_path = str(tmp_path / "det.onnx")
    assert export.main(["--checkpoint_path", checkpoint, "--file_format", "ONNX",
                        "--file_name", onnx_path]) == 0
    images = sorted(str(p) for p in (run / "coco" / "val").iterdir())
    info, _ = read_info(onnx_path)
    batch = np.stack([prepare_image(p, info)[0] for p in images[:3]])
    from_onnx = infer.Runner(onnx_path=onnx_path).run(batch)[0]
    runner = infer.Runner(checkpoint_path=checkpoint)  # batch 1
    # the runner holds the checkpoint's weights (two unloaded networks would
    # agree with each other too: MindSpore's initialisation is seeded)
    from src.weights import read_weights
    saved, _ = read_weights(checkpoint)
    for param in runner.net.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), saved[param.name])
    from_ckpt = np.concatenate([runner.run(batch[i:i + 1])[0] for i in range(len(batch))])
    assert from_onnx.shape == (3, 3 * (4 + 16 + 64), 5 + 10)
    assert np.abs(from_onnx - from_ckpt).max() <= 1e-4 * np.abs(from_ckpt).max()
    # infer.py on the ONNX file: a picture and a JSON entry per image
    output_json = tmp_path / "det.json"
    assert infer.main(["--onnx_path", onnx_path, "--image_path", str(run / "coco" / "val"),
                       "--output_dir", str(tmp_path / "pictures"), "--score_thr", "0",
                       "--output_json", str(output_json)]) == 0
    with open(output_json, encoding="utf-8") as f:
        predictions = json.load(f)
    assert len(predictions) == 6
    assert all(os.path.isfile(p["picture"]) for p in predictions)


def test_class_count_contradicting_the_checkpoint(run, capsys):
    code = export.main(["--checkpoint_path", str(run / "run" / "best.ckpt"), "--file_format",
                        "ONNX", "--num_classes", "80", "--file_name", str(run / "x.onnx")])
    assert code == 1
    assert "--num_classes 80 contradicts" in capsys.readouterr().err


def test_edge_flow_scores_like_eval(run, evaluated, tmp_path):
    """export.py MINDIR -> run_infer_cpu.sh (preprocess.py, src/mindir_infer.py,
    postprocess.py): eval.py's AP line and its detections, box for box."""
    _, result, eval_predictions = evaluated
    mindir = str(tmp_path / "det.mindir")
    assert export.main(["--checkpoint_path", str(run / "run" / "best.ckpt"),
                        "--file_format", "MINDIR", "--file_name", mindir]) == 0
    output = tmp_path / "infer_cpu"
    env = dict(os.environ, GLOG_v="3", INFER_OUTPUT_DIR=str(output), PYTHON=sys.executable)
    flow = subprocess.run(["bash", "scripts/run_infer_cpu.sh", mindir, str(run / "coco"),
                           "--val_split", "val"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert flow.returncode == 0, flow.stdout + flow.stderr
    with open(output / "acc.log", encoding="utf-8") as f:
        edge = json.loads(f.read().strip().splitlines()[-1])
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "val_images", "detections"):
        assert edge[key] == result[key], key
    # each input carries its image id and resize factors to postprocess.py
    with open(output / "preprocess_Result" / "labels.json", encoding="utf-8") as f:
        record = json.load(f)
    assert sorted(record["image_ids"].values()) == list(range(1000, 1006))
    factors = {record["image_ids"][n]: f for n, f in record["factors"].items()}
    for image_id, (width, height) in zip(range(1000, 1006), VAL_SIZES):
        scale = 64 / max(width, height)
        np.testing.assert_allclose(factors[image_id], [round(width * scale) / width,
                                                       round(height * scale) / height], 1e-6)
    with open(eval_predictions, encoding="utf-8") as f:
        expected = json.load(f)
    with open(output / "predictions.json", encoding="utf-8") as f:
        got = json.load(f)
    key = lambda d: (d["image_id"], -d["score"], d["category_id"])  # noqa: E731
    # the one-epoch model's AP is about 0 on these images: the detections
    # themselves, every box of every image, are what shows the flow is eval.py's
    assert len(got) == len(expected) >= 6 * 50
    for a, b in zip(sorted(got, key=key), sorted(expected, key=key)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-2)
