"""Edge inference: preprocess.py -> MINDIR on the Python runtime -> postprocess.py
scores exactly like eval.py; infer.py agrees with it image by image.

The Ascend 310 program itself cannot run here (no Ascend, no libmindspore.so);
run_infer_cpu.sh runs the same MINDIR on the same preprocessed files and
writes the same result layout, so everything around the C++ program is tested.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from reference import convert_with_cli, official_checkpoint, realistic_timm_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = 96          # small: fast compiles; the flow is size-independent
EVAL_BATCH = 4           # 11 images: two full batches and a remainder of 3
NUM_CLASSES = 6
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "retina", "colorwheel",
          "immunohistochemistry", "hubble_deep_field", "astronaut")
ENV = dict(os.environ, GLOG_v="3")


def run(*command, env=None):
    """Run a command from the repository root; returns its stdout, fails with its output."""
    result = subprocess.run(command, cwd=ROOT, env=env or ENV, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """11 photographs in 6 class folders: JPEG and PNG, grayscale and RGBA, varied sizes."""
    import skimage.data
    root = tmp_path_factory.mktemp("images")
    for i, name in enumerate(PHOTOS):
        image = Image.fromarray(getattr(skimage.data, name)())
        image = image.resize((80 + 23 * i, 120 + 11 * (i % 4)))
        if i == 3:
            image = image.convert("RGBA")
        if i == len(PHOTOS) - 1:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        folder = root / f"class_{i % NUM_CLASSES}"
        folder.mkdir(exist_ok=True)
        image.save(folder / f"{name}_{i}.{'png' if i % 2 or i == 3 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A realistic 6-class ghostnetv2_100 as a MindSpore .ckpt (converted with the CLI)."""
    folder = tmp_path_factory.mktemp("weights")
    model = realistic_timm_model("ghostnetv2_100", num_classes=NUM_CLASSES)
    official = official_checkpoint(model, folder / "ck_ghostnetv2_10.pth.tar")
    return str(convert_with_cli(official, folder / "ghostnetv2_100.ckpt"))


@pytest.fixture(scope="module")
def mindir(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("mindir") / "ghostnetv2_100.mindir"
    run(sys.executable, "export.py", "--checkpoint_path", checkpoint, "--file_name", str(path),
        "--image_height", str(IMAGE_SIZE), "--image_width", str(IMAGE_SIZE))
    return str(path)


@pytest.fixture(scope="module")
def cpu_flow(mindir, image_folder, tmp_path_factory):
    """run_infer_cpu.sh's output folder and the JSON line of its acc.log."""
    output = tmp_path_factory.mktemp("infer_cpu")
    env = dict(ENV, INFER_OUTPUT_DIR=str(output), PYTHON=sys.executable)
    run("bash", "scripts/run_infer_cpu.sh", mindir, str(image_folder), env=env)
    with open(output / "acc.log", encoding="utf-8") as f:
        return output, last_json(f.read())


def result_logits(output):
    """{source image (relative path): logits} from the flow's result files."""
    with open(output / "preprocess_Result" / "labels.json", encoding="utf-8") as f:
        record = json.load(f)
    results = output / "result_Files"
    return {source: np.fromfile(results / name.replace(".bin", "_0.bin"), np.float32)
            for name, source in record["sources"].items()}, record


def test_cpu_flow_scores_like_eval(cpu_flow, checkpoint, image_folder):
    _, flow = cpu_flow
    evaluated = last_json(run(sys.executable, "eval.py", "--checkpoint_path", checkpoint,
                              "--data_path", str(image_folder), "--image_size", str(IMAGE_SIZE),
                              "--batch_size", str(EVAL_BATCH), "--device_target", "CPU"))
    assert flow["num_images"] == evaluated["num_images"] == len(PHOTOS)
    assert flow["top1"] == evaluated["top1"]
    assert flow["top5"] == evaluated["top5"]
    assert flow["loss"] == pytest.approx(evaluated["loss"], abs=1e-4)
    # Not a trivial match: some images right, some wrong at top-1.
    assert 0 < flow["top1"] < 1


def test_preprocessed_inputs_are_the_eval_inputs(cpu_flow, checkpoint, image_folder):
    """Result logits equal the Cell's on create_eval_dataset's batches, image by image."""
    import mindspore as ms
    from export import build_network
    from src.dataset import create_eval_dataset
    output, _ = cpu_flow
    logits, record = result_logits(output)
    net, _, _ = build_network(checkpoint)
    dataset, class_names = create_eval_dataset(str(image_folder), IMAGE_SIZE, EVAL_BATCH)
    expected = np.concatenate([net(ms.Tensor(images)).asnumpy() for images, _ in
                               dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)])
    assert record["class_names"] == class_names
    actual = np.stack([logits[source] for source in record["sources"].values()])
    assert np.abs(actual - expected).max() <= 1e-3 * np.abs(expected).max()
    for name, source in record["sources"].items():
        assert source.split(os.sep)[0] == class_names[record["labels"][name]]
    # the record names the task and each input's original size (what dense tasks need)
    assert record["task"] == "classification"
    from PIL import Image
    for name, source in record["sources"].items():
        with Image.open(image_folder / source) as image:
            assert record["original_sizes"][name] == [image.height, image.width]


def test_infer_py_agrees_with_the_flow(cpu_flow, mindir, checkpoint, image_folder, tmp_path):
    """infer.py on the MINDIR (class names from the folder) and on the checkpoint (names
    from a labels file) gives each image the flow's top classes and probabilities."""
    output, _ = cpu_flow
    logits, record = result_logits(output)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(record["class_names"]) + "\n", encoding="utf-8")
    image = os.path.join(str(image_folder), next(iter(record["sources"].values())))
    runs = {"mindir": (["--image_path", str(image_folder), "--mindir_path", mindir,
                        "--class_dir", str(image_folder)]),
            # the official-release-like file the .ckpt was converted from (thop buffers)
            "checkpoint": (["--image_path", image, "--checkpoint_path",
                            os.path.join(os.path.dirname(checkpoint), "ck_ghostnetv2_10.pth.tar"),
                            "--image_size", str(IMAGE_SIZE), "--labels", str(labels_file),
                            "--fuse_bn"])}  # BN folded: same top-5 within 1e-4
    for kind, flags in runs.items():
        predictions_file = tmp_path / f"{kind}.json"
        run(sys.executable, "infer.py", *flags, "--output_json", str(predictions_file))
        predictions = json.loads(predictions_file.read_text(encoding="utf-8"))
        assert len(predictions) == (len(PHOTOS) if kind == "mindir" else 1)
        for prediction in predictions:
            row = logits[os.path.relpath(prediction["image"], str(image_folder))].astype(np.float64)
            probabilities = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
            top = np.argsort(-probabilities, kind="stable")[:5]
            names = [record["class_names"][i] for i in top]
            assert [name for name, _ in prediction["top5"]] == names
            assert np.allclose([p for _, p in prediction["top5"]], probabilities[top], atol=1e-4)

    # postprocess.py's predictions.json names the same top-5 (by the folder names here:
    # the converted weights record no class names)
    with open(output / "predictions.json", encoding="utf-8") as f:
        flow_predictions = json.load(f)
    assert sorted(p["image"] for p in flow_predictions) == sorted(logits)
    for prediction in flow_predictions:
        top = np.argsort(-logits[prediction["image"]], kind="stable")[:5]
        assert [name for name, _ in prediction["top5"]] == [record["class_names"][i] for i in top]


def test_postprocess_names_missing_results(cpu_flow, tmp_path):
    output, _ = cpu_flow
    result = subprocess.run([sys.executable, "postprocess.py", "--result_path", str(tmp_path),
                             "--label_file", str(output / "preprocess_Result" / "labels.json")],
                            cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"{len(PHOTOS)} of {len(PHOTOS)} inputs have no result" in result.stderr


def test_run_infer_310_checks_its_arguments(mindir, tmp_path):
    script = os.path.join(ROOT, "scripts", "run_infer_310.sh")
    usage = subprocess.run(["bash", script, "-h"], capture_output=True, text=True)
    assert usage.returncode == 0 and "MINDIR_PATH DATA_PATH [DEVICE_ID]" in usage.stdout
    wrong = subprocess.run(["bash", script, mindir], capture_output=True, text=True)
    assert wrong.returncode == 2 and "MINDIR_PATH DATA_PATH" in wrong.stderr
    missing = subprocess.run(["bash", script, mindir, str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "DATA_PATH not found" in missing.stderr
    bad_device = subprocess.run(["bash", script, mindir, str(tmp_path), "gpu0"],
                                capture_output=True, text=True)
    assert bad_device.returncode == 1 and "DEVICE_ID" in bad_device.stderr
