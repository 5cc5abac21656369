"""export.py: the exported MINDIR and ONNX files compute the Cell's logits.

The weights are a realistic reference (tests/reference.py: BatchNorm
statistics measured on photographs, logits of order 10 that differ between
photographs) saved as the official PyTorch release file, so export.py also
exercises the in-memory conversion and the model inference from the weights.
"""
import os

import numpy as np
import pytest

from src.cpu_kernels import portable
from reference import official_checkpoint, photo_spread, photos, realistic_timm_model

NUM_CLASSES = 10
TOLERANCE = 1e-3  # times the largest |logit|: ONNX in onnxruntime (measured 2-4e-4)
# The portable MINDIR holds MindSpore's standard operators: bit-identical to the
# Cell on those operators; from the Cell on the custom CPU kernels (the
# default), float32 rounding only (measured 1.3-1.8e-6).
KERNEL_TOLERANCE = 1e-5
FUSED_TOLERANCE = 1e-4  # --cpu_kernels --fuse_bn: BatchNorm folded into the weights too
EXPORT_BATCH = 2
# 224x224: the ImageNet size; 160x192: non-square; 97x131: odd sizes, where
# every DFC gate is upsampled by a non-integer ratio (ResizeNearestNeighbor).
SIZES = [(224, 224), (160, 192)]
ONNX_SIZES = SIZES + [(97, 131)]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A realistic ghostnetv2_100 with 10 classes, as an official .pth.tar file."""
    model = realistic_timm_model("ghostnetv2_100", num_classes=NUM_CLASSES)
    path = tmp_path_factory.mktemp("weights") / "ck_ghostnetv2_10.pth.tar"
    return str(official_checkpoint(model, path))


@pytest.fixture(scope="module")
def cell(weights):
    from export import build_network
    net, model, _ = build_network(weights)
    assert model == "ghostnetv2_100"
    return net


@pytest.fixture(scope="module")
def cell_logits(cell):
    """Logits of the MindSpore Cell on 3 photographs, per input size (cached)."""
    import mindspore as ms
    cache = {}

    def logits(size):
        if size not in cache:
            cache[size] = cell(ms.Tensor(photos(3, size))).asnumpy()
            assert photo_spread(cache[size]) > 0.1, "reference logits ignore the input"
        return cache[size]
    return logits


def run_export(capsys, *args):
    """export.py's main() in this process; returns (status, stdout, stderr)."""
    import export
    status = export.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def assert_close(reference, actual, tolerance=TOLERANCE):
    assert actual.shape == reference.shape
    scale = np.abs(reference).max()
    assert np.abs(actual - reference).max() <= tolerance * scale, (
        f"max diff {np.abs(actual - reference).max():.3g} vs max |logit| {scale:.3g}")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_mindir_matches_cell(weights, cell, cell_logits, tmp_path, capsys, size):
    import mindspore as ms
    from src.mindir_infer import kernel_libraries, load_mindir
    status, out, err = run_export(capsys, "--checkpoint_path", weights,
                                  "--file_name", str(tmp_path / "net"),
                                  "--batch_size", str(EXPORT_BATCH),
                                  "--image_height", str(size[0]), "--image_width", str(size[1]))
    assert status == 0, err
    path = tmp_path / "net.mindir"
    assert str(path) in out
    assert kernel_libraries(str(path)) == []  # standard operators only: runs anywhere
    graph = load_mindir(str(path))
    images = photos(EXPORT_BATCH, size)
    exported = graph(ms.Tensor(images)).asnumpy()
    with portable(cell, "MINDIR"):  # the operators the file holds, run by the Cell
        np.testing.assert_array_equal(exported, cell(ms.Tensor(images)).asnumpy())
    assert_close(cell_logits(size)[:EXPORT_BATCH], exported, KERNEL_TOLERANCE)


@pytest.mark.parametrize("size", ONNX_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_onnx_matches_cell_at_any_batch(weights, cell_logits, tmp_path, capsys, size):
    """Traced at batch 2, run at batch 3 and 1: the batch axis is really dynamic."""
    import onnxruntime as ort
    status, out, err = run_export(capsys, "--checkpoint_path", weights,
                                  "--file_format", "ONNX", "--file_name", str(tmp_path / "net"),
                                  "--batch_size", str(EXPORT_BATCH),
                                  "--image_height", str(size[0]), "--image_width", str(size[1]))
    assert status == 0, err
    session = ort.InferenceSession(str(tmp_path / "net.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    images, reference = photos(3, size), cell_logits(size)
    (batch3,) = session.run(None, {"image": images})
    assert_close(reference, batch3)
    (batch1,) = session.run(None, {"image": images[2:]})
    assert_close(reference[2:], batch1)


def test_air_needs_ascend(weights, tmp_path, capsys):
    status, _, err = run_export(capsys, "--checkpoint_path", weights,
                                "--file_format", "AIR", "--file_name", str(tmp_path / "net"))
    assert status != 0
    assert "Ascend" in err and "MINDIR" in err and "ONNX" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, named", [
    (["--model", "ghostnetv2_130"], "blocks.0.0.ghost1.primary_conv.0.weight"),
    (["--num_classes", "1000"], "classifier.weight"),
], ids=["width", "num_classes"])
def test_mismatched_weights_fail_naming_them(weights, tmp_path, capsys, flags, named):
    status, _, err = run_export(capsys, "--checkpoint_path", weights,
                                "--file_name", str(tmp_path / "net"), *flags)
    assert status != 0
    assert named in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_image_below_minimum_fails(weights, tmp_path, capsys):
    status, _, err = run_export(capsys, "--checkpoint_path", weights,
                                "--file_name", str(tmp_path / "net"), "--image_height", "48")
    assert status != 0
    assert "64x64" in err
    assert list(tmp_path.iterdir()) == []


def test_export_is_portable_with_cpu_kernels_on(cell, cell_logits, tmp_path):
    """A network running the custom CPU kernels still exports standard operators
    (the ONNX file runs in onnxruntime) and keeps its kernels afterwards."""
    import onnxruntime as ort
    from export import export_network
    from src.cpu_kernels import count_kernel_layers, kernels_available, use_cpu_kernels
    use_cpu_kernels(cell)
    layers = count_kernel_layers(cell)
    assert layers > 0 or not kernels_available()
    try:
        size = SIZES[0]
        export_network(cell, "ONNX", str(tmp_path / "net.onnx"), EXPORT_BATCH, *size)
        assert count_kernel_layers(cell) == layers
        session = ort.InferenceSession(str(tmp_path / "net.onnx"),
                                       providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"image": photos(3, size)})
        assert_close(cell_logits(size), logits)
    finally:
        use_cpu_kernels(cell, False)


def test_cpu_kernels_mindir(weights, cell_logits, tmp_path, capsys):
    """--cpu_kernels: a MINDIR that runs the kernels (same logits), and a clear
    error where its kernel library does not exist."""
    import mindspore as ms
    from src.cpu_kernels import kernels_available
    from src.mindir_infer import MindirError, kernel_libraries, load_mindir
    if not kernels_available():
        pytest.skip("the CPU kernel library cannot be built here")
    size = SIZES[0]
    status, out, err = run_export(capsys, "--checkpoint_path", weights, "--cpu_kernels",
                                  "--fuse_bn", "--file_name", str(tmp_path / "net"),
                                  "--batch_size", str(EXPORT_BATCH))
    assert status == 0, err
    path = str(tmp_path / "net.mindir")
    (library,) = kernel_libraries(path)
    assert os.path.isfile(library) and library in out
    logits = load_mindir(path)(ms.Tensor(photos(EXPORT_BATCH, size))).asnumpy()
    assert_close(cell_logits(size)[:EXPORT_BATCH], logits, FUSED_TOLERANCE)

    # The same file on a machine without that library (its path renamed in place).
    elsewhere = library[:-len("x.so")] + "y.so"
    moved = tmp_path / "moved.mindir"
    moved.write_bytes((tmp_path / "net.mindir").read_bytes().replace(library.encode(),
                                                                    elsewhere.encode()))
    with pytest.raises(MindirError, match="exported with --cpu_kernels .* not on this machine"):
        load_mindir(str(moved))


def test_cpu_kernels_is_mindir_only(weights, tmp_path, capsys):
    status, _, err = run_export(capsys, "--checkpoint_path", weights, "--cpu_kernels",
                                "--file_format", "ONNX", "--file_name", str(tmp_path / "net"))
    assert status != 0
    assert "--cpu_kernels writes a MINDIR" in err and "Drop --cpu_kernels" in err
    assert list(tmp_path.iterdir()) == []
