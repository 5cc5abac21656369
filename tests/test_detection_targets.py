"""YOLOv3 target assignment, box coding and loss on hand-computed cases.

One level, stride 32, a 64x64 input: 2x2 cells, anchors 32x32, 16x16 and
64x64 in each, rows ordered (cell row, cell column, anchor). The IoUs quoted
in each test are worked out by hand in its comment.
"""
import math

import numpy as np
import pytest

from src.models.heads.yolov3_head import grid_anchors, select_detections
from src.models.losses.yolov3_loss import (EPS, IGNORED, NEGATIVE, assign_targets, encode)

ANCHORS = (((32, 32), (16, 16), (64, 64)),)
STRIDES = (32,)
TABLE = grid_anchors(ANCHORS, STRIDES, 64, 64)


def row(cell_row, cell_col, anchor):
    return (cell_row * 2 + cell_col) * 3 + anchor


def assign(boxes, classes, crowd=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    crowd = np.zeros(len(boxes), bool) if crowd is None else np.asarray(crowd)
    return assign_targets(TABLE, boxes, np.asarray(classes), crowd, 64, 64)


def test_anchor_table():
    assert TABLE.shape == (12, 5)
    # cell (0, 1), anchor 0: centre (48, 16), 32x32
    np.testing.assert_array_equal(TABLE[row(0, 1, 0)], [32, 0, 64, 32, 32])
    np.testing.assert_array_equal(TABLE[row(1, 0, 2)], [-16, 16, 48, 80, 32])


def test_box_centre_on_a_cell_border():
    # Box 32x32 centred at (32, 16): on the border of cells (0, 0) and (0, 1);
    # floor(32 / 32) = 1 makes (0, 1) responsible. Its IoUs there: 32x32
    # anchor [32,0,64,32] 512/1536 = 1/3, 16x16 128/1152, 64x64 1024/4096: all
    # <= 0.5, so the best (the 32x32) is positive by the best-anchor rule.
    box_targets, labels = assign([[16, 0, 48, 32]], [7])
    expected = np.full(12, NEGATIVE)
    expected[row(0, 1, 0)] = 7
    np.testing.assert_array_equal(labels, expected)
    # tx = (32 - 48) / 32 + 0.5 = 0 -> clamped to EPS; ty = 0.5; tw = th = log(1)
    np.testing.assert_allclose(box_targets[row(0, 1, 0)], [EPS, 0.5, 0, 0], atol=1e-7)
    assert not box_targets[labels < 0].any()


def test_two_boxes_in_one_cell():
    # A = [0,0,32,32] (centre (16,16)): IoU 1 with the 32x32 anchor of cell
    # (0,0). B = 16x16 centred (20,12): IoU with the 16x16 anchor [8,8,24,24]
    # 144/368 = 0.39, with the 32x32 256/1024 = 0.25: its best is anchor 1.
    box_targets, labels = assign([[0, 0, 32, 32], [12, 4, 28, 20]], [3, 5])
    expected = np.full(12, NEGATIVE)
    expected[row(0, 0, 0)], expected[row(0, 0, 1)] = 3, 5
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_allclose(box_targets[row(0, 0, 0)], [0.5, 0.5, 0, 0], atol=1e-7)
    # B: tx = (20 - 16) / 32 + 0.5, ty = (12 - 16) / 32 + 0.5, tw = th = log(16 / 16)
    np.testing.assert_allclose(box_targets[row(0, 0, 1)], [0.625, 0.375, 0, 0], atol=1e-7)


def test_two_boxes_wanting_one_anchor():
    # A = [0,0,32,32] and C = [2,0,34,32]: both best on the 32x32 anchor of
    # cell (0,0) (IoU 1 and 960/1088 = 0.88); the later box takes it (the
    # best-anchor pass runs box by box, as mmdetection's GridAssigner), and
    # A is left with no anchor: at most one box per anchor.
    box_targets, labels = assign([[0, 0, 32, 32], [2, 0, 34, 32]], [1, 2])
    assert labels[row(0, 0, 0)] == 2
    assert (labels >= 0).sum() == 1
    np.testing.assert_allclose(box_targets[row(0, 0, 0)], [18 / 32, 0.5, 0, 0], atol=1e-7)


def test_crowd_box_is_never_positive():
    # A crowd box exactly on the 32x32 anchor of cell (0,0) (IoU 1): ignored,
    # not positive, not negative; the rest stay negatives.
    _, labels = assign([[0, 0, 32, 32]], [4], crowd=[True])
    expected = np.full(12, NEGATIVE)
    expected[row(0, 0, 0)] = IGNORED
    np.testing.assert_array_equal(labels, expected)
    # A crowd box beside a normal box: the normal one is still assigned.
    _, labels = assign([[0, 0, 32, 32], [32, 32, 64, 64]], [4, 6], crowd=[True, False])
    assert labels[row(0, 0, 0)] == IGNORED and labels[row(1, 1, 0)] == 6


def test_ignored_between_thresholds():
    # One 96x96 anchor per cell. A 96x96 box centred (20, 16) = [-28,-32,68,64]
    # (cell (0,0)): IoU with the anchor of (0,0) [-32,-32,64,64] 8832/9600 =
    # 0.92 (positive); of (0,1) [0,-32,96,64] 6528/11904 = 0.548 (> 0.5 but
    # not its cell: ignored); of (1,0) 5888/12544 = 0.47 and (1,1) 0.31
    # (negatives).
    table = grid_anchors((((96, 96),),), STRIDES, 64, 64)
    _, labels = assign_targets(table, np.array([[-28.0, -32, 68, 64]]), np.array([2]),
                               np.zeros(1, bool), 64, 64)
    np.testing.assert_array_equal(labels, [2, IGNORED, NEGATIVE, NEGATIVE])


def test_image_without_boxes():
    box_targets, labels = assign(np.zeros((0, 4)), np.zeros(0, int))
    assert (labels == NEGATIVE).all() and not box_targets.any()


def test_encode_decode_round_trip():
    from mindspore import Tensor
    from src.models.heads.yolov3_head import YOLOV3Decode
    box = np.array([[10.0, 6.0, 30.0, 40.0]])
    anchor_row = row(0, 0, 0)
    target = encode(box, TABLE[anchor_row:anchor_row + 1])[0]
    # logits whose sigmoid is the xy target, and the wh target itself
    logits = np.zeros((1, 3 * 6, 2, 2), np.float32)
    logits[0, 0:2, 0, 0] = np.log(target[:2] / (1 - target[:2]))
    logits[0, 2:4, 0, 0] = target[2:]
    decoded = YOLOV3Decode(ANCHORS, STRIDES, 1, 64, 64)((Tensor(logits),)).asnumpy()[0]
    np.testing.assert_allclose(decoded[anchor_row, :4], box[0], rtol=1e-5)
    # zero logits: the anchor itself (cell (1,1), centre (48,48), 64x64), objectness and class sigmoid(0) = 0.5
    np.testing.assert_allclose(decoded[row(1, 1, 2)], [16, 16, 80, 80, 0.5, 0.5], rtol=1e-6)


def test_loss_by_hand():
    """Zero logits: every BCE term is log 2; wh is 2 * t^2 per positive."""
    import mindspore as ms
    from src.models.losses.yolov3_loss import YOLOV3Loss
    num_classes = 4
    box_targets, labels = assign([[0, 0, 32, 32], [32, 32, 60, 48]], [3, 1])
    labels[row(1, 1, 2)] = IGNORED  # one ignored anchor takes no loss at all
    num_pos, num_neg = (labels >= 0).sum(), (labels == NEGATIVE).sum()
    wh = (box_targets[labels >= 0, 2:] ** 2).sum()
    assert num_pos == 2 and wh > 0
    expected = math.log(2) * (num_pos * num_classes + num_pos + num_neg + 2 * 2 * num_pos) \
        + 2 * wh
    pred = np.zeros((1, 12, 5 + num_classes), np.float32)
    loss = YOLOV3Loss(num_classes)(ms.Tensor(pred), ms.Tensor(box_targets[None]),
                                   ms.Tensor(labels[None]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # A confident wrong class logit (30 where the target is 0) costs 30, and
    # nothing overflows.
    pred[0, row(0, 0, 0), 5 + 0] = 30.0
    loss2 = YOLOV3Loss(num_classes)(ms.Tensor(pred), ms.Tensor(box_targets[None]),
                                    ms.Tensor(labels[None]))
    assert float(loss2) - float(loss) == pytest.approx(30 - math.log(2), rel=1e-5)


def test_select_detections_per_class_nms():
    # Two overlapping boxes of one class: the weaker is suppressed; the same
    # box in another class is kept; scores are class * objectness.
    rows = np.array([
        [0, 0, 10, 10, 0.9, 0.8, 0.0],
        [1, 0, 11, 10, 0.9, 0.7, 0.0],   # IoU 0.82 with the first, same class
        [0, 0, 10, 10, 0.9, 0.0, 0.6],   # class 1
        [50, 50, 60, 60, 0.004, 1.0, 0.0],  # objectness under conf_thr 0.005
        [30, 30, 40, 40, 0.1, 0.4, 0.0],  # score 0.04 < score_thr 0.05
    ])
    dets = select_detections(rows)
    np.testing.assert_allclose(dets, [[0, 0, 10, 10, 0.72, 0], [0, 0, 10, 10, 0.54, 1]])
