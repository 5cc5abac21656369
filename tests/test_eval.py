"""eval.py on a case whose answer is known: a classifier with zero weights
and chosen biases predicts the same ranking for every image, so top-1, top-5
and the loss follow from the folder's class counts alone."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval as eval_script
from src.ghostnetv2 import create_model
from src.train_utils import DEVICE_TARGETS, available_device_targets
from src.weights import mindspore_to_torch, save_checkpoint, save_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# class c has COUNTS[c] images: 33 in all, so batch 8 leaves a remainder of 1
COUNTS = [2, 3, 4, 5, 2, 3, 4, 5, 2, 3]
BIASES = np.array([0.5, 3.0, 1.0, 2.5, 0.0, 2.0, -1.0, 1.5, -2.0, 0.7], np.float32)


def expected_metrics():
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    ranking = np.argsort(-BIASES)
    log_probs = BIASES - np.log(np.exp(BIASES.astype(np.float64)).sum())
    return dict(top1=np.mean(labels == ranking[0]), top5=np.mean(np.isin(labels, ranking[:5])),
                loss=-np.mean(log_probs[labels]), num_images=len(labels))


@pytest.fixture(scope="module")
def known_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.RandomState(0)
    for label, count in enumerate(COUNTS):
        folder = root / "data" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(count):
            pixels = rng.randint(0, 256, (72, 64, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "data" / "class_0" / "broken.jpg").write_bytes(b"")  # skipped, not counted
    net = create_model("ghostnetv2_100", num_classes=len(COUNTS))
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    params["classifier.weight"][:] = 0.0
    params["classifier.bias"][:] = BIASES
    save_checkpoint(params, str(root / "known.ckpt"))
    save_safetensors(params, str(root / "known.safetensors"))
    official_release_file(params, root / "ck_ghostnetv2_10.pth.tar")
    return root


def official_release_file(params, path):
    """The port's parameters as the official release files were made (thop's
    profiling buffers on every module, root included; tests/official_model.py)."""
    import timm
    import torch
    from reference import official_checkpoint
    model = timm.create_model("ghostnetv2_100", num_classes=len(COUNTS))
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                           mindspore_to_torch(params).items()}, strict=True)
    return official_checkpoint(model, path)


def missing_device():
    """A device target this MindSpore installation lacks (the test is skipped if none)."""
    missing = [d for d in DEVICE_TARGETS if d not in available_device_targets()]
    if not missing:
        pytest.skip("every device target is available here")
    return missing[0]


def check(result):
    expected = expected_metrics()
    assert result["num_images"] == expected["num_images"] == 33
    assert result["top1"] == pytest.approx(expected["top1"], abs=1e-6)  # 3 / 33
    assert result["top5"] == pytest.approx(expected["top5"], abs=1e-6)  # 20 / 33
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert result["skipped"] == 1


def test_known_top1_top5_and_every_image_counted(known_case, capsys):
    """From an official-release-like .pth.tar (converted in memory)."""
    code = eval_script.main(["--device_target", "CPU", "--data_path", str(known_case / "data"),
                             "--checkpoint_path", str(known_case / "ck_ghostnetv2_10.pth.tar"),
                             "--image_size", "64", "--batch_size", "8"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(out[-1])
    check(result)
    assert result["model"] == "ghostnetv2_100" and result["num_classes"] == 10
    assert any(line.startswith("top-1: 0.0909") for line in out)


def test_cli_with_safetensors_weights(known_case):
    """The real command line, with PyTorch-named weights converted in memory,
    BatchNorm folded (--fuse_bn) and a batch size larger than the data set:
    the same known results."""
    env = dict(os.environ, GLOG_v="3")
    proc = subprocess.run([sys.executable, "eval.py", "--device_target", "CPU",
                           "--data_path", str(known_case / "data"),
                           "--checkpoint_path", str(known_case / "known.safetensors"),
                           "--image_size", "64", "--batch_size", "64", "--fuse_bn", "true"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "broken.jpg" in proc.stdout + proc.stderr  # named in the warning
    assert "BatchNorm folded" in proc.stdout + proc.stderr
    assert "batch_size 64 is larger than the 34 images: using 34" in proc.stdout + proc.stderr  # 33 + broken.jpg


@pytest.mark.parametrize("args, message", [
    (["--checkpoint_path", "missing.ckpt"], "weights file not found"),
    (["--image_size", "32"], "under the model's minimum input size 64"),
    (["--device_target", "MISSING"], "not available in this MindSpore installation"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
])
def test_misuse_is_a_clear_error(known_case, capsys, args, message):
    base = {"--device_target": "CPU", "--data_path": str(known_case / "data"),
            "--checkpoint_path": str(known_case / "known.ckpt"), "--image_size": "64"}
    base.update(dict(zip(args[::2], args[1::2])))
    if base["--device_target"] == "MISSING":
        base["--device_target"] = missing_device()
    code = eval_script.main([item for pair in base.items() for item in pair])
    assert code in (1, 2)
    assert message in capsys.readouterr().err


def test_more_classes_in_data_than_in_model(known_case, tmp_path, capsys):
    net = create_model("ghostnetv2_100", num_classes=3)
    save_checkpoint({p.name: p.asnumpy() for p in net.get_parameters()}, str(tmp_path / "w.ckpt"))
    code = eval_script.main(["--device_target", "CPU", "--data_path", str(known_case / "data"),
                             "--checkpoint_path", str(tmp_path / "w.ckpt"), "--image_size", "64"])
    assert code == 1
    assert "10 class folders but the weights have 3 classes" in capsys.readouterr().err
