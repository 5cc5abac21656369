"""eval.py on a case whose answer is known: weights whose predictions depend
on the image (a realistic timm network, tests/reference.py) and a folder
whose labels are chosen from that network's own ranking of each image, so
that top-1, top-5 and the loss are known from timm alone. An image scored
against another image's label, a wrong crop or a wrongly folded BatchNorm
changes them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import eval as eval_script
from reference import PHOTO_NAMES, _photo, official_checkpoint, realistic_timm_model
from src.ghostnetv2 import create_model
from src.train_utils import DEVICE_TARGETS, available_device_targets
from src.weights import save_checkpoint, save_safetensors, torch_to_mindspore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 10
NUM_IMAGES = 33  # batch 8 leaves a remainder of 1
# Image i is labelled with the class the network ranks at one of these places
# (0 = its top-1): a top-1 hit, a top-5 hit that is not top-1, a miss.
RANKS = ((0,), (1, 2, 3, 4), (5, 6, 7, 8, 9))
# The logit gaps that decide top-1 / top-5 must exceed float32 noise (and the
# folded BatchNorm's rounding) by far, or the known answer would be fragile.
MIN_GAP = 0.05


def photo_crops(count, rng):
    """``count`` distinct 72x64 (H x W) pieces of the scikit-image photographs."""
    crops = []
    for i in range(count):
        photo = _photo(PHOTO_NAMES[i % len(PHOTO_NAMES)])
        height = int(photo.shape[0] * rng.uniform(0.4, 0.9))
        width = min(photo.shape[1], int(height * 64 / 72))
        top = rng.randint(0, photo.shape[0] - height + 1)
        left = rng.randint(0, photo.shape[1] - width + 1)
        piece = Image.fromarray(np.ascontiguousarray(photo[top:top + height, left:left + width]))
        crops.append(piece.resize((64, 72), Image.BICUBIC))
    return crops


def timm_log_probs(model, images):
    """timm's own eval transform (shorter side 64 / 0.875, centre crop 64) and
    network: float64 log-probabilities, (images, classes)."""
    import torch
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    transform = create_transform(input_size=(3, 64, 64), interpolation="bicubic", crop_pct=0.875,
                                 mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
    with torch.no_grad():
        logits = model(torch.stack([transform(image) for image in images])).double()
    return torch.log_softmax(logits, dim=1).numpy()


def clear_ranking(scores):
    """The gaps that decide top-1 (first and second) and top-5 (fifth and
    sixth) are far above float32 noise: the known answer is not fragile."""
    gaps = -np.diff(np.sort(scores)[::-1])
    return gaps[0] > MIN_GAP and gaps[4] > MIN_GAP


def choose_labels(log_probs):
    """Per image a label at the places RANKS[i % 3] of its ranking (the class
    least used so far, so that every class gets images)."""
    used = np.zeros(log_probs.shape[1], int)
    labels = []
    for i, scores in enumerate(log_probs):
        ranking = np.argsort(-scores)
        label = min((ranking[r] for r in RANKS[i % 3]), key=lambda c: used[c])
        used[label] += 1
        labels.append(int(label))
    assert used.min() > 0, used
    return np.array(labels)


@pytest.fixture(scope="module")
def known_case(tmp_path_factory):
    """The folder, the weights in every format, and expected.json (the metrics)."""
    root = tmp_path_factory.mktemp("eval")
    reference = realistic_timm_model("ghostnetv2_100", num_classes=NUM_CLASSES)
    candidates = photo_crops(2 * NUM_IMAGES, np.random.RandomState(0))
    candidate_log_probs = timm_log_probs(reference, candidates)
    keep = [i for i, scores in enumerate(candidate_log_probs) if clear_ranking(scores)]
    assert len(keep) >= NUM_IMAGES, f"only {len(keep)} images with a clear ranking"
    keep = keep[:NUM_IMAGES]
    images, log_probs = [candidates[i] for i in keep], candidate_log_probs[keep]
    labels = choose_labels(log_probs)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / "data" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:02d}.png")
    (root / "data" / "class_0" / "broken.jpg").write_bytes(b"")  # skipped, not counted
    params = torch_to_mindspore({k: v.numpy() for k, v in reference.state_dict().items()})
    save_checkpoint(params, str(root / "known.ckpt"))
    save_safetensors(params, str(root / "known.safetensors"))
    official_checkpoint(reference, str(root / "ck_ghostnetv2_10.pth.tar"))
    ranks = (np.argsort(-log_probs, axis=1) == labels[:, None]).argmax(axis=1)
    expected = dict(top1=np.mean(ranks == 0), top5=np.mean(ranks < 5),
                    loss=-np.mean(log_probs[np.arange(NUM_IMAGES), labels]))
    (root / "expected.json").write_text(json.dumps(expected))
    return root


def missing_device():
    """A device target this MindSpore installation lacks (the test is skipped if none)."""
    missing = [d for d in DEVICE_TARGETS if d not in available_device_targets()]
    if not missing:
        pytest.skip("every device target is available here")
    return missing[0]


def check(result, case):
    expected = json.loads((case / "expected.json").read_text())
    assert result["num_images"] == NUM_IMAGES
    assert result["top1"] == pytest.approx(expected["top1"], abs=1e-6)  # 11 / 33
    assert result["top5"] == pytest.approx(expected["top5"], abs=1e-6)  # 22 / 33
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-3)
    assert result["skipped"] == 1


def test_known_top1_top5_and_every_image_counted(known_case, capsys):
    """From an official-release-like .pth.tar (converted in memory)."""
    code = eval_script.main(["--device_target", "CPU", "--data_path", str(known_case / "data"),
                             "--checkpoint_path", str(known_case / "ck_ghostnetv2_10.pth.tar"),
                             "--image_size", "64", "--batch_size", "8"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(out[-1])
    check(result, known_case)
    assert result["model"] == "ghostnetv2_100" and result["num_classes"] == NUM_CLASSES
    assert any(line.startswith("top-1: 0.3333") for line in out)


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
    check(json.loads(proc.stdout.strip().splitlines()[-1]), known_case)
    assert "broken.jpg" in proc.stdout + proc.stderr  # named in the warning
    assert "BatchNorm folded" in proc.stdout + proc.stderr
    assert "batch_size 64 is larger than the 34 images: using 34" in proc.stdout + proc.stderr  # + broken.jpg


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
