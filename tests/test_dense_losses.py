"""The torch losses of the PyTorch twins (what benchmark/benchmark.py trains the
twins with) equal the port's training losses on one batch: YOLOv3's on the
detector, cross entropy with ignored pixels + 0.4 auxiliary on the segmenter."""
import numpy as np
import pytest

pytest.importorskip("timm")

TOLERANCE = 1e-4


def relative_difference(ours, theirs):
    return abs(ours - theirs) / abs(theirs)


def test_yolov3_loss_of_the_twin_equals_the_ports():
    import mindspore as ms
    import timm
    import torch
    from src.models.heads.yolov3_head import STRIDES, FlattenPredictions, grid_anchors
    from src.models.losses.yolov3_loss import YOLOV3Loss, YOLOV3WithLoss, assign_targets
    from src.models.detectors.yolov3 import default_anchors, yolov3_ghostnetv2
    from tests.detection_twin import _torch_modules, port_state, yolov3_loss
    from tests.reference import photos
    num_classes, size = 3, 96
    anchors = default_anchors(320)
    torch.manual_seed(0)
    twin = _torch_modules()(timm.create_model("ghostnetv2_100", num_classes=0),
                            num_classes).eval()
    net = yolov3_ghostnetv2("ghostnetv2_100", num_classes)
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k)
                                 for k, v in port_state(twin).items()}, strict_load=True)
    net.set_train(False)
    table = grid_anchors(anchors, STRIDES, size, size)
    boxes = np.array([[10, 12, 50, 70], [40, 30, 90, 60]], np.float32)
    targets = [assign_targets(table, boxes, [0, 2], [False, False], size, size),
               assign_targets(table, boxes[:0], [], [], size, size)]  # one image without boxes
    box_targets = np.stack([t[0] for t in targets])
    labels = np.stack([t[1] for t in targets])
    assert (labels >= 0).sum() >= 2 and (labels == -1).any()
    images = photos(2, (size, size))
    port = YOLOV3WithLoss(net, FlattenPredictions(3, 5 + num_classes), YOLOV3Loss(num_classes))
    ours = float(port(ms.Tensor(images), ms.Tensor(box_targets), ms.Tensor(labels)).asnumpy())
    with torch.no_grad():
        theirs = float(yolov3_loss(twin(torch.from_numpy(images)), torch.from_numpy(box_targets),
                                   torch.from_numpy(labels)))
    assert relative_difference(ours, theirs) <= TOLERANCE, (ours, theirs)


def test_segmentation_loss_of_the_twin_equals_the_ports():
    import mindspore as ms
    import torch
    from src.models.losses.segmentation_loss import (IGNORE_LABEL, SegmentationLoss,
                                                     SegmentorWithLoss)
    from src.models.segmentors.deeplabv3 import DeepLabV3, segmentation_backbone
    from tests.reference import photos
    from src.weights import load_params
    from tests.segmentation_twin import TwinDeepLabV3, segmentation_loss, twin_state_for_port
    num_classes, head = 4, dict(channels=16, dilations=(1, 2), aux_channels=8)
    torch.manual_seed(0)
    twin = TwinDeepLabV3("ghostnetv2_100", num_classes, 16, **head).eval()
    net = DeepLabV3(segmentation_backbone("ghostnetv2_100", 16), num_classes, head["channels"],
                    head["dilations"], head["aux_channels"])
    load_params(net, twin_state_for_port(twin), "the twin")
    net.set_train(False)
    images = photos(2, (64, 80))
    labels = np.random.default_rng(0).integers(0, num_classes, (2, 64, 80)).astype(np.int32)
    labels[:, :20] = IGNORE_LABEL
    port = SegmentorWithLoss(net, SegmentationLoss(0.4))
    ours = float(port(ms.Tensor(images), ms.Tensor(labels)).asnumpy())
    with torch.no_grad():
        main, aux = twin.forward_train(torch.from_numpy(images))
        theirs = float(segmentation_loss(main, aux, torch.from_numpy(labels), 0.4))
    assert relative_difference(ours, theirs) <= TOLERANCE, (ours, theirs)
