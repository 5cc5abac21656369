"""src/fuse.py: BatchNorm folded into the convolutions gives the same logits,
keeps the parameter names, and exports to ONNX and MINDIR correctly."""
import numpy as np
import pytest

from reference import photo_spread, photos, port_logits, realistic_timm_model

TOLERANCE = 1e-4  # times the largest |logit|
SIZE = (160, 192)  # non-square, so a transposed kernel or padding would show
pytestmark = pytest.mark.usefixtures("graph_mode")


def relative_diff(reference, actual):
    return float(np.abs(reference - actual).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def unfused_and_fused():
    """(unfused logits, fused net, images, parameter names before fusing)."""
    import mindspore as ms
    from src.fuse import count_batchnorms, fuse_bn
    from src.ghostnetv2 import create_model
    from src.weights import torch_to_mindspore

    reference = realistic_timm_model("ghostnetv2_100", num_classes=10)
    net = create_model("ghostnetv2_100", num_classes=10)
    params = torch_to_mindspore(reference.state_dict())
    not_loaded, _ = ms.load_param_into_net(
        net, {name: ms.Parameter(ms.Tensor(value), name=name) for name, value in params.items()})
    assert not not_loaded
    net.set_train(False)
    images = photos(3, SIZE)
    # Run before fusing on purpose: the fused net must not reuse this compiled graph.
    unfused = port_logits(net, images)
    assert photo_spread(unfused) > 0.1, "reference logits ignore the input"
    names_before = {p.name for p in net.get_parameters()}
    assert count_batchnorms(net) == 122
    assert fuse_bn(net) is net
    return unfused, net, images, names_before


def test_fused_logits_equal_unfused(unfused_and_fused):
    from src.fuse import count_batchnorms
    unfused, net, images, _ = unfused_and_fused
    assert count_batchnorms(net) == 0
    assert not net.training
    assert relative_diff(unfused, port_logits(net, images)) < TOLERANCE


def test_fused_parameter_names(unfused_and_fused):
    """Conv weights keep their names; each folded conv gains '<conv>.bias'; BN fields are gone."""
    _, net, _, names_before = unfused_and_fused
    names_after = [p.name for p in net.get_parameters()]
    assert len(names_after) == len(set(names_after))
    kept = {name for name in names_before
            if not name.endswith(("gamma", "beta", "moving_mean", "moving_variance"))}
    assert kept <= set(names_after)
    added = set(names_after) - kept
    assert len(added) == 122 and all(name.endswith(".bias") for name in added)
    assert "blocks.3.0.ghost1.short_conv.4.bias" in added  # indices unchanged
    assert "conv_stem.bias" in added and "blocks.3.0.conv_dw.bias" in added


def test_fuse_twice_is_harmless(unfused_and_fused):
    from src.fuse import fuse_bn
    unfused, net, images, _ = unfused_and_fused
    before = [p.asnumpy().copy() for p in net.get_parameters()]
    fuse_bn(net)
    after = [p.asnumpy() for p in net.get_parameters()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_fused_net_exports_onnx_and_mindir(unfused_and_fused, tmp_path):
    import mindspore as ms
    import onnxruntime
    from export import export_network
    unfused, net, images, _ = unfused_and_fused

    onnx_path = str(tmp_path / "fused.onnx")
    export_network(net, "ONNX", onnx_path, len(images), *SIZE)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    assert relative_diff(unfused, onnx_logits) < TOLERANCE

    mindir_path = str(tmp_path / "fused.mindir")
    export_network(net, "MINDIR", mindir_path, len(images), *SIZE)
    graph = ms.nn.GraphCell(ms.load(mindir_path))
    assert relative_diff(unfused, graph(ms.Tensor(images)).asnumpy()) < TOLERANCE


def test_fold_into_conv_with_bias():
    """A conv that already has a bias: the folded bias is (b - mean) * s + beta."""
    import mindspore as ms
    from mindspore import nn
    from src.fuse import fuse_bn

    rng = np.random.default_rng(0)
    block = nn.SequentialCell([nn.Conv2d(4, 6, 3, pad_mode="pad", padding=1, has_bias=True),
                               nn.BatchNorm2d(6), nn.ReLU()])
    block[0].bias.set_data(ms.Tensor(rng.normal(size=6).astype(np.float32)))
    bn = block[1]
    for param, value in ((bn.gamma, rng.uniform(0.5, 1.5, 6)), (bn.beta, rng.normal(size=6)),
                         (bn.moving_mean, rng.normal(size=6)),
                         (bn.moving_variance, rng.uniform(0.5, 2.0, 6))):
        param.set_data(ms.Tensor(value.astype(np.float32)))
    block.set_train(False)
    x = ms.Tensor(rng.normal(size=(2, 4, 9, 11)).astype(np.float32))
    expected = block(x).asnumpy()
    fuse_bn(block)
    assert isinstance(block[1], nn.Identity) and block[0].pad_mode == "pad"
    assert relative_diff(expected, block(x).asnumpy()) < 1e-5


def test_batchnorm_without_conv_is_an_error():
    from mindspore import nn
    from src.fuse import fuse_bn
    block = nn.SequentialCell([nn.ReLU(), nn.BatchNorm2d(3)])
    with pytest.raises(RuntimeError, match="do not follow a convolution"):
        fuse_bn(block)


# ------------------------------------------------------------------ detector and segmenter

DENSE_SIZE = 64          # the smallest detector input (a multiple of 32)
DENSE_TOLERANCE = 1e-6   # times the largest |output| (measured 0.8-2.1e-7: float32 rounding)


def randomise_batchnorms(net, seed=0):
    """Every BatchNorm gets random statistics and affine parameters: a fresh
    network's (mean 0, variance 1, gamma 1, beta 0) fold into nothing, so a
    wrong fold would pass unnoticed."""
    import mindspore as ms
    from mindspore import nn
    rng = np.random.default_rng(seed)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.gamma.shape[0]
            for param, value in ((cell.gamma, rng.uniform(0.5, 1.5, n)),
                                 (cell.beta, rng.normal(0, 0.2, n)),
                                 (cell.moving_mean, rng.normal(0, 0.2, n)),
                                 (cell.moving_variance, rng.uniform(0.5, 2.0, n))):
                param.set_data(ms.Tensor(value.astype(np.float32)))


def dense_network(task):
    """A small detector (3 classes, 16-channel neck) with its box decoding, or a
    small DeepLabV3 (3 classes, 16-channel ASPP), in inference mode."""
    import mindspore as ms
    from src.models.detectors.yolov3 import YOLOV3Predictor, default_anchors, yolov3_ghostnetv2
    from src.tasks.segmentation import create_segmentor
    if task == "detection":
        net = YOLOV3Predictor(yolov3_ghostnetv2("ghostnetv2_100", 3, (16, 16, 16)),
                              default_anchors(DENSE_SIZE), DENSE_SIZE, DENSE_SIZE)
        # mmdetection's init (N(0, 0.01) weights, prior biases) makes the raw
        # outputs almost constant; unit-gain weights let the features through
        rng = np.random.default_rng(1)
        for conv in net.detector.bbox_head.convs_pred:
            fan_in = conv.weight.shape[1]
            conv.weight.set_data(ms.Tensor(rng.normal(0, fan_in ** -0.5, conv.weight.shape)
                                           .astype(np.float32)))
    else:
        net = create_segmentor("ghostnetv2_100", 3, dict(
            output_stride=16, aspp_channels=16, aspp_dilations=[1, 2], aux_channels=8,
            head_dropout=0.1))
    randomise_batchnorms(net)
    net.set_train(False)
    return net


def matched_detections(expected, actual, tolerance):
    """Every detection of ``expected`` has one in ``actual`` of the same class
    with its score and box within ``tolerance`` (the order of near-equal
    scores may differ)."""
    assert len(expected) == len(actual)
    unused = list(range(len(actual)))
    for det in expected:
        close = [i for i in unused if actual[i][5] == det[5]
                 and np.abs(actual[i][:5] - det[:5]).max() <= tolerance]
        assert close, f"no fused detection matches {det}"
        unused.remove(close[0])


def dense_outputs(net, images, task):
    """(the outputs compared against the bound, the exported output): the
    detector's raw head maps (its decoded boxes are ~input-size numbers that
    would hide a wrong fold) and decoded rows; the segmenter's logits twice."""
    import mindspore as ms
    exported = port_logits(net, images)
    if task == "segmentation":
        return exported, exported
    maps = net.detector(ms.Tensor(images))
    return np.concatenate([m.asnumpy().reshape(len(images), -1) for m in maps], 1), exported


def assert_same_dense_output(task, expected, actual, bound):
    """The exported output of a dense network equals the unfused one: the
    detector's detections (scores and boxes within bound, classes equal), the
    segmenter's logits within bound and its masks."""
    from src.models.heads.yolov3_head import select_detections
    if task == "detection":
        everything = dict(conf_thr=0.0, score_thr=0.0)  # a random head scores low
        for before, after in zip(expected, actual):
            matched_detections(select_detections(before, **everything),
                               select_detections(after, **everything), bound)
        return
    assert np.abs(expected - actual).max() <= bound
    # the mask: the same class wherever the top two logits are further apart
    # than the outputs may move (all but a handful of pixels)
    top2 = np.sort(expected, 1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * bound
    assert decided.mean() > 0.99
    assert (expected.argmax(1) == actual.argmax(1))[decided].all()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_fused_dense_model_gives_the_same_outputs(task, tmp_path):
    """BatchNorm folded everywhere (backbone, neck, heads): the detector's raw
    head outputs, decoded rows and detections, the segmenter's logits and masks
    are the unfused ones within DENSE_TOLERANCE of the largest output; the
    fused network exported with --cpu_kernels gives them too."""
    import mindspore as ms
    from mindspore import nn
    from export import export_network
    from src.cpu_kernels import kernels_available
    from src.fuse import count_batchnorms, fuse_bn
    from src.mindir_infer import load_mindir
    from src.tasks.segmentation import pynative
    net = dense_network(task)
    images = photos(2, (DENSE_SIZE, DENSE_SIZE))
    with pynative():  # one call each: compiling two graphs would cost more than it saves
        raw, unfused = dense_outputs(net, images, task)
        assert count_batchnorms(net) > 0
        fuse_bn(net)
        assert count_batchnorms(net) == 0
        # the neck's and head's LeakyReLUs run inside their convolutions' kernels
        assert not any(isinstance(cell, nn.LeakyReLU) for _, cell in net.cells_and_names())
        fused_raw, fused = dense_outputs(net, images, task)
    assert np.abs(raw - fused_raw).max() <= DENSE_TOLERANCE * np.abs(raw).max()
    bound = DENSE_TOLERANCE * np.abs(unfused).max()
    assert_same_dense_output(task, unfused, fused, bound)
    if not kernels_available():
        pytest.skip("the CPU kernel library cannot be built here")
    path = str(tmp_path / "fused.mindir")
    export_network(net, "MINDIR", path, len(images), DENSE_SIZE, DENSE_SIZE, cpu_kernels=True)
    exported = load_mindir(path)(ms.Tensor(images)).asnumpy()
    assert np.abs(fused - exported).max() <= bound
    assert_same_dense_output(task, unfused, exported, bound)
