"""The GhostNetV2 Cell: size (REFERENCE section 1), names and rounding
against timm, options, input checks, feature pyramid, mindcv registry.

Forward passes here run in PyNative mode at small sizes (no graph compiles);
the numerical parity with timm is tests/test_parity.py.
"""
import mindspore as ms
import numpy as np
import pytest
import timm
from timm.layers import make_divisible as timm_make_divisible

from src.ghostnetv2 import (STAGES, FeaturePyramid, GhostNetV2, create_model, list_models,
                            make_divisible)
from src.model_stats import count_macs, count_parameters
from src.weights import torch_to_mindspore

# REFERENCE section 1: MACs at 224x224 (conv + linear multiply-adds).
PAPER_MACS = {"ghostnetv2_100": 167.0e6, "ghostnetv2_130": 269.3e6, "ghostnetv2_160": 398.6e6}
TIMM_NAMES = ("ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnet_100")


@pytest.fixture(scope="module", autouse=True)
def pynative_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def images(height, width, batch=1):
    return ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, height, width),
                                                               dtype=np.float32))


def timm_parameter_count(name):
    return sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())


def test_v2_100_has_the_papers_parameter_count():
    assert count_parameters(create_model("ghostnetv2_100")) == 6_156_908


@pytest.mark.parametrize("name", ["ghostnetv2_130", "ghostnetv2_160", "ghostnet_100"])
def test_parameter_count_equals_timm(name):
    assert count_parameters(create_model(name)) == timm_parameter_count(name)


@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_macs_match_the_paper(name):
    macs = count_macs(create_model(name), 224)
    assert abs(macs - PAPER_MACS[name]) <= 0.005 * PAPER_MACS[name], \
        f"{name}: {macs / 1e6:.1f}M MACs, paper {PAPER_MACS[name] / 1e6:.1f}M"


def test_make_divisible_equals_timm_at_many_widths():
    channels = {16, 960} | {c for stage in STAGES for _, mid, out, _, _ in stage for c in (mid, out)}
    for width in np.arange(0.5, 2.0001, 0.05):
        for c in sorted(channels):
            value = c * width
            assert make_divisible(value) == timm_make_divisible(value, 4), (c, width)
            # the SE reduction is rounded the same way
            assert make_divisible(value * 0.25) == timm_make_divisible(value * 0.25, 4), (c, width)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_parameter_names_and_shapes_equal_timms_after_bn_rename(name):
    timm_state = {k: v.numpy() for k, v in timm.create_model(name, pretrained=False)
                  .state_dict().items()}
    expected = {k: v.shape for k, v in torch_to_mindspore(timm_state).items()}
    port = {p.name: tuple(p.shape) for p in create_model(name).get_parameters()}
    assert set(port) == set(expected), (sorted(set(port) - set(expected))[:5],
                                        sorted(set(expected) - set(port))[:5])
    assert port == expected
    # every timm entry has its counterpart (BN's num_batches_tracked aside)
    assert len(port) == len([k for k in timm_state if not k.endswith("num_batches_tracked")])


def test_create_model_knows_all_names_and_rejects_unknown_ones():
    assert {"ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnetv2_1x",
            "ghostnet_100"} <= set(list_models())
    with pytest.raises(ValueError) as err:
        create_model("ghostnetv2_200")
    for known in list_models():
        assert known in str(err.value)


def test_ghostnetv2_1x_is_the_100_model():
    net = create_model("ghostnetv2_1x", num_classes=7)
    assert count_parameters(net) == count_parameters(create_model("ghostnetv2_100", num_classes=7))


def test_input_below_64_is_refused_naming_the_minimum():
    net = create_model("ghostnetv2_100")
    net.set_train(False)
    with pytest.raises(ValueError, match="at least 64x64"):
        net(images(63, 96))


def test_non_square_input_and_num_classes():
    net = create_model("ghostnetv2_100", num_classes=10)
    net.set_train(False)
    assert net(images(64, 96, batch=2)).shape == (2, 10)


def ceil_halvings(size, times):
    for _ in range(times):
        size = -(-size // 2)
    return size


@pytest.mark.parametrize("name", ["ghostnetv2_130", "ghostnet_100"])
def test_feature_pyramid_strides_and_channels(name):
    net = create_model(name)
    net.set_train(False)
    height, width = 100, 136  # not multiples of 32: every stride-2 layer rounds up
    pyramid = FeaturePyramid(net, out_indices=(1, 2, 3, 4))
    assert [f["reduction"] for f in pyramid.feature_info] == [4, 8, 16, 32]
    features = pyramid(images(height, width))
    assert len(features) == 4
    for feature, info in zip(features, pyramid.feature_info):
        halvings = int(np.log2(info["reduction"]))
        assert feature.shape == (1, info["chs"], ceil_halvings(height, halvings),
                                 ceil_halvings(width, halvings))
    # the last map is what the classifier head pools
    assert pyramid.out_channels[-1] == net.num_features
    expected = [make_divisible(c * net.width) for c in (24, 40, 112, 960)]
    assert pyramid.out_channels == expected
    assert net.feature_info[0] == dict(chs=make_divisible(16 * net.width), reduction=2, name="bn1")


def test_dfc_kernel_size_sets_the_short_conv_kernels():
    shapes = {p.name: tuple(p.shape) for p in GhostNetV2(dfc_kernel_size=3).get_parameters()}
    horizontal = [s for k, s in shapes.items() if k.endswith("short_conv.2.weight")]
    vertical = [s for k, s in shapes.items() if k.endswith("short_conv.4.weight")]
    assert len(horizontal) == len(vertical) == 14  # all bottlenecks but the first two
    assert all(s[2:] == (1, 3) for s in horizontal)
    assert all(s[2:] == (3, 1) for s in vertical)
    default = {p.name: tuple(p.shape) for p in GhostNetV2().get_parameters()}
    assert default["blocks.3.0.ghost1.short_conv.2.weight"][2:] == (1, 5)
    assert default["blocks.3.0.ghost1.short_conv.4.weight"][2:] == (5, 1)


def test_dfc_kernel_size_forward_keeps_shapes():
    net = GhostNetV2(dfc_kernel_size=7, num_classes=5)
    net.set_train(False)
    assert net(images(64, 80)).shape == (1, 5)


def test_without_dfc_there_is_no_short_conv():
    names = [p.name for p in GhostNetV2(use_dfc=False).get_parameters()]
    assert names and not [n for n in names if "short_conv" in n]
    assert [n for n in create_model("ghostnetv2_100").get_parameters() if "short_conv" in n.name]


def test_mindcv_create_model_builds_this_port():
    import mindcv
    import src.ghostnetv2  # noqa: F401  (registers the models with mindcv)
    net = mindcv.create_model("ghostnetv2_100", num_classes=10)
    assert isinstance(net, GhostNetV2)
    assert net.classifier.weight.shape == (10, 1280)
