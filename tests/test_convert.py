"""convert_weights.py: official / timm files in, checked, nothing written on error."""
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import convert_weights
from reference import ROOT, official_checkpoint, photos, realistic_timm_model
from src.weights import WeightsError, convert, infer_model, read_weights, torch_to_mindspore

MODELS = ("ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnet_100")


@pytest.fixture(scope="module")
def timm_models():
    torch.manual_seed(0)
    return {name: timm.create_model(name, pretrained=False).eval() for name in MODELS}


def expected_params(model):
    """The model's state_dict in MindSpore names (what a correct conversion holds)."""
    return torch_to_mindspore({k: v.numpy() for k, v in model.state_dict().items()})


def run_cli(*args):
    """convert_weights.main in this process: (exit status, stderr text)."""
    import contextlib
    import io
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = convert_weights.main([str(a) for a in args])
    return status, stderr.getvalue()


def assert_same_weights(path, model):
    params, _ = read_weights(str(path))
    expected = expected_params(model)
    assert set(params) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(params[key], value, err_msg=key)


# The start of the unexpected keys upstream issue #175 quotes for the real
# ck_ghostnetv2_10.pth.tar (torch's strict load_state_dict lists them in order).
ISSUE_175_KEYS = [
    "total_ops", "total_params", "blocks.0.0.total_ops", "blocks.0.0.total_params",
    "blocks.0.0.ghost1.total_ops", "blocks.0.0.ghost1.total_params",
    "blocks.0.0.ghost1.gate_fn.total_ops", "blocks.0.0.ghost1.gate_fn.total_params",
    "blocks.0.0.ghost2.total_ops", "blocks.0.0.ghost2.total_params",
    "blocks.0.0.ghost2.gate_fn.total_ops", "blocks.0.0.ghost2.gate_fn.total_params",
    "blocks.1.0.total_ops", "blocks.1.0.total_params", "blocks.1.0.ghost1.total_ops",
    "blocks.1.0.ghost1.total_params", "blocks.1.0.ghost1.gate_fn.total_ops",
    "blocks.1.0.ghost1.gate_fn.total_params", "blocks.1.0.ghost2.total_ops",
    "blocks.1.0.ghost2.total_params", "blocks.1.0.ghost2.gate_fn.total_ops",
    "blocks.1.0.ghost2.gate_fn.total_params", "blocks.2.0.total_ops"]
PROFILING_KEYS = ("total_ops", "total_params")


def saved_state_dict(path):
    """The state_dict in a release-like file, read as the port reads it (weights_only)."""
    saved = torch.load(str(path), map_location="cpu", weights_only=True)
    return saved.get("state_dict", saved)


# Every width; flat and wrapped; torch's zip and legacy (pre-1.6) serialization
# (wrapped zip files: the eval, export, infer and train tests read them).
@pytest.mark.parametrize("name, wrapped, legacy_format", [
    ("ghostnetv2_100", False, False), ("ghostnetv2_130", True, True),
    ("ghostnetv2_160", False, True)])
def test_official_release_files_convert(timm_models, tmp_path, name, wrapped, legacy_format):
    model = timm_models[name]
    src = official_checkpoint(model, tmp_path / "ck_ghostnetv2.pth.tar", wrapped=wrapped,
                              legacy_format=legacy_format)
    with open(src, "rb") as f:  # a zip archive starts with "PK"
        assert (f.read(2) == b"PK") != legacy_format
    saved = saved_state_dict(src)
    profiling = [k for k in saved if k.rpartition(".")[2] in PROFILING_KEYS]
    assert profiling[:len(ISSUE_175_KEYS)] == ISSUE_175_KEYS  # made as the real files were
    assert all(saved[k].dtype == torch.float64 for k in profiling)
    status, stderr = run_cli("--src", src, "--dst", tmp_path / "out.ckpt")
    assert status == 0, stderr
    assert_same_weights(tmp_path / "out.ckpt", model)


def test_official_module_tree_computes_timms_logits():
    """The fixtures' official tree (tests/official_model.py) is the same network
    as timm's: same parameters (strict load) and the same logits (on photographs,
    through a realistic model: timm's default init barely depends on the input)."""
    from official_model import from_timm
    model = realistic_timm_model("ghostnetv2_100", num_classes=10)
    images = torch.from_numpy(photos(2, (64, 96)))
    with torch.no_grad():
        expected = model(images)
        actual = from_timm(model)(images)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_official_release_file_with_a_real_extra_or_missing_parameter_is_refused(
        timm_models, tmp_path):
    """Profiling buffers are skipped, parameters are not: a file that lacks one
    or has one the model does not is still a listed error."""
    src = official_checkpoint(timm_models["ghostnetv2_100"], tmp_path / "ck.pth.tar")
    saved = torch.load(str(src), weights_only=True)
    del saved["state_dict"]["blocks.3.0.se.conv_reduce.weight"]
    saved["state_dict"]["blocks.0.0.ghost1.gate_fn.weight"] = torch.zeros(3)
    torch.save(saved, str(src))
    assert_refused(tmp_path, src, "out.ckpt",
                   ["1 missing, 1 unexpected", "missing: blocks.3.0.se.conv_reduce.weight",
                    "unexpected: blocks.0.0.ghost1.gate_fn.weight"])


def test_safetensors_converts_without_torch(timm_models, tmp_path):
    model = timm_models["ghostnetv2_130"]
    src, dst = tmp_path / "model.safetensors", tmp_path / "out.ckpt"
    save_file(model.state_dict(), str(src))
    # torch made unimportable: any 'import torch' on this path would fail.
    script = ("import sys; sys.modules['torch'] = None; import convert_weights; "
              f"sys.exit(convert_weights.main(['--src', {str(src)!r}, '--dst', {str(dst)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GLOG_v": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "as ghostnetv2_130 with 1000 classes" in done.stdout
    assert_same_weights(dst, model)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [1000, 10])
def test_model_and_classes_inferred_from_the_weights(name, num_classes):
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    assert infer_model(expected_params(model)) == (name, num_classes)


def test_inference_without_a_stem_says_what_to_do():
    with pytest.raises(WeightsError, match="--model"):
        infer_model({"classifier.weight": np.zeros((10, 1280), np.float32)})


def write_safetensors(path, state_dict):
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def assert_refused(tmp_path, src, dst_name, expected_fragments, *extra_args):
    """The CLI fails with every fragment in its message and writes nothing:
    a pre-existing destination is left untouched, no temporary file remains."""
    dst = tmp_path / dst_name
    dst.write_bytes(b"previous contents")
    before = sorted(os.listdir(tmp_path))
    status, stderr = run_cli("--src", src, "--dst", dst, *extra_args)
    assert status == 1
    assert stderr.startswith("convert_weights.py: error:"), stderr
    for fragment in expected_fragments:
        assert fragment in stderr, (fragment, stderr)
    assert dst.read_bytes() == b"previous contents"
    assert sorted(os.listdir(tmp_path)) == before


def test_wrong_width_is_refused(timm_models, tmp_path):
    src = write_safetensors(tmp_path / "v2_130.safetensors", timm_models["ghostnetv2_130"].state_dict())
    assert_refused(tmp_path, src, "out.ckpt",
                   ["0 missing, 0 unexpected", "of another shape", "shape mismatch: blocks.0.0.",
                    "file (10,) vs model (8,)", "check --model"],
                   "--model", "ghostnetv2_100")


def test_missing_and_extra_keys_are_listed(timm_models, tmp_path):
    state = dict(timm_models["ghostnetv2_100"].state_dict())
    del state["blocks.3.0.se.conv_reduce.weight"]
    state["blocks.3.0.extra.weight"] = torch.zeros(3)
    src = write_safetensors(tmp_path / "edited.safetensors", state)
    assert_refused(tmp_path, src, "out.ckpt",
                   ["1 missing, 1 unexpected", "missing: blocks.3.0.se.conv_reduce.weight",
                    "unexpected: blocks.3.0.extra.weight"])


def test_another_num_classes_is_refused(timm_models, tmp_path):
    src = write_safetensors(tmp_path / "v1.safetensors", timm_models["ghostnet_100"].state_dict())
    assert_refused(tmp_path, src, "out.ckpt",
                   ["classifier.weight: file (1000, 1280) vs model (10, 1280)", "num_classes"],
                   "--num_classes", "10")


def test_bad_destination_suffix_is_refused(timm_models, tmp_path):
    src = write_safetensors(tmp_path / "ok.safetensors", timm_models["ghostnetv2_100"].state_dict())
    with pytest.raises(WeightsError, match=r"\.ckpt or \.safetensors"):
        convert(str(src), str(tmp_path / "out.bin"))
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors", ".ckpt"])
def test_unreadable_files_give_a_clear_error(tmp_path, suffix):
    missing = tmp_path / f"missing{suffix}"
    with pytest.raises(WeightsError, match="not found"):
        read_weights(str(missing))
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_weights(str(empty))
    garbage = tmp_path / f"garbage{suffix}"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError) as err:
        read_weights(str(garbage))
    assert str(garbage) in str(err.value)
    assert "not a readable" in str(err.value)


def test_unknown_format_is_named(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"unknown weights format.*\.ckpt"):
        read_weights(str(path))


def test_cli_exit_status_and_stderr(tmp_path):
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(os.urandom(1024))
    dst = tmp_path / "out.ckpt"
    done = subprocess.run([sys.executable, "convert_weights.py", "--src", str(garbage),
                           "--dst", str(dst)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GLOG_v": "3"})
    assert done.returncode == 1
    assert "convert_weights.py: error:" in done.stderr
    assert str(garbage) in done.stderr
    assert "Traceback (most recent call last)" not in done.stderr.split("Cell.__del__")[0]
    assert done.stdout == ""
    assert not dst.exists()


def test_existing_destination_is_kept_unless_overwrite(timm_models, tmp_path):
    src = write_safetensors(tmp_path / "ok.safetensors", timm_models["ghostnetv2_100"].state_dict())
    dst = tmp_path / "trained.ckpt"
    dst.write_bytes(b"a trained checkpoint")
    with pytest.raises(WeightsError, match="already exists.*--overwrite"):
        convert(str(src), str(dst))
    assert dst.read_bytes() == b"a trained checkpoint"
    convert(str(src), str(dst), overwrite=True)
    assert read_weights(str(dst))[0].keys() == read_weights(str(src))[0].keys()
