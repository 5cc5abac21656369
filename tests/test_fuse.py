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
