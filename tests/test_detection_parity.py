"""GhostNetV2-YOLOv3 against its PyTorch twin (timm's GhostNetV2 + mmdetection's
YOLOv3 neck and head in torch, tests/detection_twin.py) on converted
weights: the raw head outputs agree within 1e-4 of the largest output."""
import numpy as np
import pytest

pytest.importorskip("timm")

TOLERANCE = 1e-4


@pytest.mark.parametrize("size", [(128, 160)])
def test_raw_head_outputs_match_the_twin(graph_mode, size):
    import mindspore as ms
    from src.models.detectors.yolov3 import yolov3_ghostnetv2
    from tests.detection_twin import port_state, twin, twin_outputs
    from tests.reference import photos
    reference = twin("ghostnetv2_100", num_classes=7)
    net = yolov3_ghostnetv2("ghostnetv2_100", num_classes=7)
    state = port_state(reference)
    assert set(state) == {p.name for p in net.get_parameters()}
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in state.items()},
                           strict_load=True)
    net.set_train(False)
    images = photos(2, size)
    expected = twin_outputs(reference, images)
    got = [o.asnumpy() for o in net(ms.Tensor(images))]
    largest = max(np.abs(e).max() for e in expected)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert np.abs(e - g).max() <= TOLERANCE * largest, np.abs(e - g).max() / largest
    # the outputs depend on the photograph (a constant map would pass trivially)
    assert np.abs(expected[2][0] - expected[2][1]).max() > 0.05 * largest
