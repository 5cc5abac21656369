"""pretrained=True: weights the user already has, found where timm / the
official release put them, converted in memory; nothing downloaded."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from reference import ROOT, official_checkpoint
from src.ghostnetv2 import create_model
from src.pretrained import WEIGHTS_DIR_ENV, hf_repo_folder
from src.weights import WeightsError, read_weights, torch_to_mindspore

REVISION = "0123456789abcdef0123456789abcdef01234567"


def timm_weights(name, seed):
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    return model, torch_to_mindspore({k: v.numpy() for k, v in model.state_dict().items()})


def assert_loaded(net, expected, skip_classifier=False):
    loaded = {p.name: p.asnumpy() for p in net.get_parameters()}
    compared = [k for k in expected if not (skip_classifier and k.startswith("classifier."))]
    assert set(compared) <= set(loaded)
    for key in compared:
        np.testing.assert_array_equal(loaded[key], expected[key], err_msg=key)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No weights anywhere: an empty hub cache, no weights folder."""
    for var in ("HF_HUB_CACHE", "HF_HOME", WEIGHTS_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    return monkeypatch


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """$HF_HOME holding timm's ghostnetv2_100.in1k as huggingface_hub lays it
    out: the files in blobs/ (named by their sha256), each snapshot's
    model.safetensors a relative symlink to its blob, refs/main naming the
    revision. An older revision with other weights is left beside it (its
    blob newer on disk), so picking the wrong one shows."""
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--timm--ghostnetv2_100.in1k"
    (repo / "blobs").mkdir(parents=True)
    _, expected = timm_weights("ghostnetv2_100", seed=1)
    for revision, seed in ((REVISION, 1), ("fedcba9876543210fedcba9876543210fedcba98", 2)):
        model, _ = timm_weights("ghostnetv2_100", seed)
        written = repo / "blobs" / "download.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(written))
        blob = repo / "blobs" / hashlib.sha256(written.read_bytes()).hexdigest()
        written.rename(blob)
        (repo / "snapshots" / revision).mkdir(parents=True)
        os.symlink(os.path.join("..", "..", "blobs", blob.name),
                   repo / "snapshots" / revision / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return home, expected


def test_timm_file_from_the_hub_cache_without_torch(hf_home, tmp_path):
    """src.ghostnetv2.create_model with torch unimportable: the safetensors
    file of refs/main's revision, found through $HF_HOME/hub."""
    home, expected = hf_home
    out = tmp_path / "loaded.ckpt"
    script = ("import sys; sys.modules['torch'] = None\n"
              "from src.ghostnetv2 import create_model\n"
              "from src.weights import save_checkpoint\n"
              "net = create_model('ghostnetv2_100', pretrained=True)\n"
              f"save_checkpoint({{p.name: p.asnumpy() for p in net.get_parameters()}}, {str(out)!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", WEIGHTS_DIR_ENV)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(env, HF_HOME=str(home), GLOG_v="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    loaded, _ = read_weights(str(out))
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


def test_mindcv_create_model_with_other_classes(hf_home, clean_env, caplog):
    """mindcv.create_model as mindcv's train.py calls it, 10 classes: all but
    the classifier loaded, and the log says so and names the file."""
    import mindcv
    home, expected = hf_home
    clean_env.setenv("HF_HUB_CACHE", str(home / "hub"))
    with caplog.at_level("INFO", logger="src.pretrained"):
        net = mindcv.create_model("ghostnetv2_1x", num_classes=10, pretrained=True)
    assert_loaded(net, expected, skip_classifier=True)
    assert tuple(net.classifier.weight.shape) == (10, 1280)
    assert os.path.join(REVISION, "model.safetensors") in caplog.text
    assert "classifier (1000 classes) does not fit the model's (10) and was not loaded" in caplog.text


def test_official_release_file_from_the_weights_folder(tmp_path, clean_env):
    """ck_ghostnetv2_13.pth.tar as published (thop buffers, wrapped) in $GHOSTNETV2_WEIGHTS_DIR."""
    model, expected = timm_weights("ghostnetv2_130", seed=3)
    official_checkpoint(model, tmp_path / "ck_ghostnetv2_13.pth.tar")
    clean_env.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    assert_loaded(create_model("ghostnetv2_130", pretrained=True), expected)


def test_nothing_found_names_every_place_and_the_fix(tmp_path, clean_env):
    clean_env.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    with pytest.raises(WeightsError) as err:
        create_model("ghostnetv2_160", pretrained=True)
    message = str(err.value)
    for fragment in (str(tmp_path / "weights" / "ck_ghostnetv2_16.pth.tar"),
                     str(tmp_path / "weights" / "ghostnetv2_160.ckpt"),
                     str(tmp_path / "weights" / "ghostnetv2_160.safetensors"),
                     str(tmp_path / "empty_hub" / "models--timm--ghostnetv2_160.in1k"
                         / "snapshots" / "*" / "model.safetensors"),
                     "python convert_weights.py --src FILE --dst"):
        assert fragment in message, (fragment, message)


def test_timm_repository_names():
    assert hf_repo_folder("ghostnetv2_1x").endswith("models--timm--ghostnetv2_100.in1k")
    assert hf_repo_folder("ghostnet_100").endswith("models--timm--ghostnet_100.in1k")
