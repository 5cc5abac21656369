"""DeepLabV3-GhostNetV2: logits against the PyTorch twin (timm's backbone
dilated by the same rule, tests/segmentation_twin.py) on the same weights,
every width and output stride building with the classifier's parameter
names, and backbone weights loading from a classification checkpoint."""
import logging

import numpy as np
import pytest

from reference import photos
from src.ghostnetv2 import create_model
from src.models.segmentors.deeplabv3 import DeepLabV3, segmentation_backbone
from src.pretrained import load_backbone_weights
from src.weights import load_params, save_checkpoint

SMALL_HEAD = dict(channels=32, dilations=(1, 2, 3), aux_channels=16)
NUM_CLASSES = 5


def port_segmentor(model, output_stride, num_classes=NUM_CLASSES, **head):
    head = dict(SMALL_HEAD, **head)
    net = DeepLabV3(segmentation_backbone(model, output_stride), num_classes, head["channels"],
                    head["dilations"], head["aux_channels"])
    net.set_train(False)
    return net


def realistic_twin(output_stride, seed=0):
    from segmentation_twin import realistic_twin as twin_of
    return twin_of("ghostnetv2_100", NUM_CLASSES, output_stride, seed, **SMALL_HEAD)


@pytest.mark.parametrize("output_stride", [8, 32])
def test_logits_match_the_pytorch_twin(output_stride):
    import mindspore as ms
    import torch
    from segmentation_twin import twin_state_for_port
    twin = realistic_twin(output_stride)
    net = port_segmentor("ghostnetv2_100", output_stride)
    load_params(net, twin_state_for_port(twin), "the twin")
    images = photos(2, (96, 128))  # non-square, not a multiple of 32 after the stem
    with torch.no_grad():
        expected = twin(torch.from_numpy(images)).numpy()
        expected_main, expected_aux = (t.numpy() for t in twin.forward_train(
            torch.from_numpy(images)))
    got = net(ms.Tensor(images)).asnumpy()
    main, aux = (t.asnumpy() for t in net.forward_train(ms.Tensor(images)))
    assert got.shape == (2, NUM_CLASSES, 96, 128)
    assert main.shape == expected_main.shape == (2, NUM_CLASSES, 96 // output_stride,
                                                 128 // output_stride)
    for ours, theirs in ((got, expected), (main, expected_main), (aux, expected_aux)):
        scale = np.abs(theirs).max()
        assert np.abs(ours - theirs).max() <= 1e-4 * scale, np.abs(ours - theirs).max() / scale
    # The reference must depend on the image (a blind twin would match anything).
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * np.abs(expected).max()


def test_every_width_and_stride_keeps_the_classifier_names():
    import mindspore as ms
    x = ms.Tensor(photos(1, (64, 80)))
    for model in ("ghostnetv2_130", "ghostnetv2_160"):
        classifier = {p.name: p.shape for p in create_model(model).get_parameters()
                      if not p.name.startswith(("classifier.", "conv_head."))}
        for output_stride in (8, 16, 32):
            net = port_segmentor(model, output_stride, num_classes=3)
            backbone = {p.name[len("backbone."):]: p.shape for p in net.get_parameters()
                        if p.name.startswith("backbone.")}
            assert backbone == classifier
        assert net(x).shape == (1, 3, 64, 80)


def test_backbone_weights_from_a_classification_checkpoint(tmp_path, caplog):
    import mindspore as ms
    classifier = create_model("ghostnetv2_100", num_classes=10)
    rng = np.random.default_rng(0)
    params = {p.name: rng.standard_normal(p.shape).astype(np.float32) * 0.1 + 1
              for p in classifier.get_parameters()}
    path = str(tmp_path / "classifier.ckpt")
    save_checkpoint(params, path)
    load_params(classifier, params, "random")
    classifier.set_train(False)
    backbone = segmentation_backbone("ghostnetv2_100", output_stride=32)
    with caplog.at_level(logging.INFO):
        summary = load_backbone_weights(backbone, path, "ghostnetv2_100")
    assert "classification head (4 tensors" in summary and path in caplog.text
    backbone.set_train(False)
    x = ms.Tensor(photos(1, (64, 64)))
    expected = classifier.forward_pyramid(x, (3, 4))
    for ours, theirs in zip(backbone.forward_pyramid(x, (3, 4)), expected):
        np.testing.assert_array_equal(ours.asnumpy(), theirs.asnumpy())
