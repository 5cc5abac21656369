"""A checkpoint knows how it was trained (src/model_info.py): a short train.py
run at 64x64 with crop 1.0, then infer.py on its checkpoint, MINDIR and ONNX
file and eval.py, all without preprocessing or label flags, give the same
answers by class folder name; an old-style checkpoint still works, with a
warning. Plus the cheap checks of the record itself."""
import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
import yaml

import eval as eval_script
import export
import infer
import train
from src import model_info
from src.ghostnetv2 import create_model
from src.tasks.classification import eval_image
from src.weights import MODEL_INFO_KEY, read_weights, save_checkpoint, save_safetensors
from test_train import RECIPE, make_images

CLASSES = ["class0", "class1", "class2"]  # make_images' folders: names, not numbers
# eval.py and the exports use the BatchNorm running averages, which start at
# mean 0, variance 1 and keep a share 0.9^n of that after n steps: for channels
# of small variance that dominates for dozens of steps, and the 18 steps this
# run once made were right with batch statistics but at chance with the
# running averages, depending on the machine's float32 rounding (README,
# Reproducibility). 100 steps leave 3e-5; every batch is the whole balanced
# training set (no batch-composition noise). Measured (this run with --seed
# 1-6, kernels built natively for 1, 2, 4, 5 and AVX-only for 3, 6): 6 of 6 right
# in eval.py every time; the test itself runs the recipe's seed 3.
TRAIN_PER_CLASS = 2
EPOCHS = 100  # x 1 step of 6 images: the steps cost little, the compiles much
VAL_PER_CLASS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short train.py run (no validation or EMA: fewer compiles) on 64x64 images."""
    root = tmp_path_factory.mktemp("trained")
    make_images(str(root / "train"), TRAIN_PER_CLASS, seed=0)
    make_images(str(root / "val"), VAL_PER_CLASS, seed=1)
    recipe = dict(RECIPE, data_path=str(root / "train"), val_data_path="",
                  output_dir=str(root / "run"), epoch_size=EPOCHS, lr=0.05, ema=False,
                  batch_size=TRAIN_PER_CLASS * len(CLASSES),
                  amp_level="O0", save_every=EPOCHS)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert train.main(["--config_path", str(root / "recipe.yaml")]) == 0
    flat = root / "flat"  # the val images in one folder, the class in the file name
    flat.mkdir()
    for name in CLASSES:
        for image in sorted(os.listdir(root / "val" / name)):
            shutil.copy(root / "val" / name / image, flat / f"{name}_{image}")
    return root


def run_infer(capsys, predictions_file, *flags):
    """infer.py's main() in this process: ({image name: top5}, stdout, stderr)."""
    capsys.readouterr()  # drop earlier output
    status = infer.main(list(flags) + ["--output_json", predictions_file])
    output = capsys.readouterr()
    assert status == 0, output.err
    with open(predictions_file, encoding="utf-8") as f:
        return {os.path.basename(p["image"]): p["top5"] for p in json.load(f)}, output.out, \
            output.err


def test_trained_checkpoint_and_exports_name_the_classes(trained, tmp_path, capsys):
    checkpoint = str(trained / "run" / "last.ckpt")
    info, _ = model_info.read_info(checkpoint)
    assert info["class_names"] == CLASSES and info["input_size"] == [3, 64, 64]
    assert info["crop_pct"] == 1.0
    for file_format in ("MINDIR", "ONNX"):  # no size flags: the training size
        assert export.main(["--checkpoint_path", checkpoint, "--file_format", file_format,
                            "--file_name", str(tmp_path / "net")]) == 0
    assert model_info.read_sidecar(str(tmp_path / "net.mindir"))["input_size"] == [3, 64, 64]
    assert model_info.read_onnx_info(str(tmp_path / "net.onnx"))["class_names"] == CLASSES

    flat = str(trained / "flat")
    runs = {kind: run_infer(capsys, str(tmp_path / f"{kind}.json"), "--image_path", flat,
                            f"--{kind}_path", path)
            for kind, path in (("checkpoint", checkpoint), ("mindir", str(tmp_path / "net.mindir")),
                               ("onnx", str(tmp_path / "net.onnx")))}
    assert "warning" not in "".join(err for _, _, err in runs.values())
    predictions = runs["checkpoint"][0]
    assert len(predictions) == VAL_PER_CLASS * len(CLASSES)
    for kind, (other, out, _) in runs.items():
        assert "model info from" in out
        for image, top5 in predictions.items():
            assert [name for name, _ in other[image]] == [name for name, _ in top5], kind
            assert np.allclose([p for _, p in other[image]], [p for _, p in top5], atol=1e-4)

    # the probabilities are those of the 64x64, crop 1.0 input the network was
    # trained on (onnxruntime on the ONNX file: no further graph compilation)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"),
                                           providers=["CPUExecutionProvider"])
    images = sorted(predictions)
    batch = np.stack([eval_image(os.path.join(flat, i), 64, 1.0) for i in images])
    logits = session.run(None, {"image": batch})[0].astype(np.float64)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for image, row in zip(images, probabilities):
        assert predictions[image][0][0] == CLASSES[row.argmax()]
        assert predictions[image][0][1] == pytest.approx(row.max(), abs=1e-4)

    # eval.py (no size flags) scores exactly the images infer.py named right
    assert eval_script.main(["--device_target", "CPU", "--data_path", str(trained / "val"),
                             "--checkpoint_path", checkpoint, "--batch_size", "6"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    right = sum(top5[0][0] == image.split("_")[0] for image, top5 in predictions.items())
    assert (result["image_size"], result["crop_pct"]) == (64, 1.0)
    assert result["top1"] == pytest.approx(right / len(predictions))
    assert right >= 5, f"the short run named only {right} of 6 images right"


def test_old_checkpoint_works_with_a_warning(trained, tmp_path, capsys):
    """No record, no config.yaml beside it: the old defaults, said in one warning."""
    params = ms.load_checkpoint(str(trained / "run" / "last.ckpt"))
    old = str(tmp_path / "old.ckpt")
    save_checkpoint({k: v for k, v in params.items() if k != MODEL_INFO_KEY}, old)
    assert model_info.read_info(old) == (None, None)
    image = os.path.join(str(trained / "flat"), sorted(os.listdir(trained / "flat"))[0])
    predictions, _, err = run_infer(capsys, str(tmp_path / "old.json"), "--image_path", image,
                                    "--checkpoint_path", old, "--image_size", "64")
    assert err.count("warning") == 1
    assert "nothing recorded" in err and "--crop_pct" in err and "--labels" in err
    assert {name for name, _ in predictions[os.path.basename(image)]} == {"0", "1", "2"}
    # train.py's config.yaml beside an old checkpoint is the fallback record
    shutil.copy(trained / "run" / "config.yaml", tmp_path / "config.yaml")
    info, where = model_info.read_info(old)
    assert where == str(tmp_path / "config.yaml") and info["input_size"] == [3, 64, 64]
    assert info["crop_pct"] == 1.0 and info["class_names"] is None


def test_flags_win_and_contradictions_are_said():
    info = model_info.make_info("ghostnetv2_100", 3, 64, 1.0, CLASSES)
    assert model_info.choose_preprocessing(info, "x.ckpt")[:2] == (64, 1.0)
    size, crop, messages = model_info.choose_preprocessing(info, "x.ckpt", 224, 0.875)
    assert (size, crop) == (224, 0.875)
    warnings = [text for level, text in messages if level == "warning"]
    assert len(warnings) == 2 and "224 differs from the 64" in warnings[0]
    assert "0.875 differs from the 1" in warnings[1]
    size, crop, messages = model_info.choose_preprocessing(None, None)
    assert (size, crop) == (224, 0.875) and [m[0] for m in messages] == ["warning"]


def test_record_is_ignored_by_weight_loaders(tmp_path):
    """The uint8 entry is no parameter: src.weights strips it, mindcv's loader
    and a strict load_param_into_net leave it unused."""
    import mindcv
    net = create_model("ghostnetv2_100", num_classes=3)
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    info = model_info.make_info("ghostnetv2_100", 3, 64, 1.0, ["a", "b", "c"])
    path = str(tmp_path / "w.ckpt")
    save_checkpoint({**params, **model_info.checkpoint_entry(info)}, path)
    assert MODEL_INFO_KEY not in read_weights(path)[0]
    assert model_info.read_checkpoint_info(path) == info
    loaded = mindcv.create_model("ghostnetv2_100", num_classes=3, checkpoint_path=path)
    np.testing.assert_array_equal(loaded.conv_stem.weight.asnumpy(), params["conv_stem.weight"])
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(path), strict_load=True)
    assert not_loaded == [] and unused == [MODEL_INFO_KEY]


def test_converted_weights_get_imagenet_values_and_labels(tmp_path, capsys):
    import convert_weights
    net = create_model("ghostnetv2_100", num_classes=3)
    src = str(tmp_path / "timm.safetensors")
    save_safetensors({p.name: p.asnumpy() for p in net.get_parameters()}, src)
    labels = tmp_path / "labels.txt"
    labels.write_text("tench\ngoldfish\nshark\n", encoding="utf-8")
    dst = str(tmp_path / "converted.ckpt")
    assert convert_weights.main(["--src", src, "--dst", dst, "--labels", str(labels)]) == 0
    assert "224x224 input, crop_pct 0.875, class names" in capsys.readouterr().out
    info, _ = model_info.read_info(dst)
    assert info["class_names"] == ["tench", "goldfish", "shark"]
    assert (info["input_size"], info["crop_pct"]) == ([3, 224, 224], 0.875)
    labels.write_text("tench\ngoldfish\n", encoding="utf-8")
    assert convert_weights.main(["--src", src, "--dst", dst, "--labels", str(labels),
                                 "--overwrite"]) == 1
    assert "2 class names for weights with 3 classes" in capsys.readouterr().err


def test_eval_refuses_folders_of_other_classes(trained, tmp_path, capsys):
    """Recorded class names are checked against the class folders (labels are folder indices)."""
    data = tmp_path / "data"
    shutil.copytree(trained / "val" / "class0", data / "class0")
    shutil.copytree(trained / "val" / "class2", data / "class1x")
    assert eval_script.main(["--device_target", "CPU", "--data_path", str(data),
                             "--checkpoint_path", str(trained / "run" / "last.ckpt")]) == 1
    assert "not the classes the model was trained on" in capsys.readouterr().err
