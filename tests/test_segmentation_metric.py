"""The segmentation scores on hand-made label maps, worked out by hand
(mmsegmentation's IoUMetric: areas summed over the set, NaN classes left out)."""
import math

import numpy as np
import pytest

from src.evaluation.segmentation import SegmentationScore, area_counts, json_metrics

IGNORE = 255


def test_scores_accumulate_over_the_set():
    score = SegmentationScore(num_classes=4, ignore_index=IGNORE)
    # Image 1: the last column is ignored (its predictions 3 and 2 must not count).
    score.update(np.array([[0, 1, 1, 3], [0, 1, 0, 2]]),
                 np.array([[0, 0, 1, IGNORE], [0, 1, 1, IGNORE]]))
    # Image 2: class 2 only predicted, never labelled.
    score.update(np.array([[2, 1]]), np.array([[0, 1]]))
    # class 0: intersection 2, prediction 3, label 4 -> union 5
    # class 1: intersection 3, prediction 4, label 4 -> union 5
    # class 2: only predicted (1 pixel) -> IoU 0, Acc 0/0
    # class 3: predicted on ignored pixels only -> absent from both, NaN
    np.testing.assert_array_equal(score.areas, [[2, 3, 0, 0], [5, 5, 1, 0], [3, 4, 1, 0],
                                                [4, 4, 0, 0]])
    iou, acc = score.per_class()
    np.testing.assert_allclose(iou[:3], [0.4, 0.6, 0])
    assert math.isnan(iou[3]) and math.isnan(acc[2]) and math.isnan(acc[3])
    scores = score.scores()
    assert scores["mIoU"] == pytest.approx(1 / 3)  # mean of 0.4, 0.6, 0; class 3 left out
    assert scores["mAcc"] == pytest.approx(0.625)  # mean of 0.5, 0.75
    assert scores["aAcc"] == pytest.approx(0.625)  # 5 of 8 labelled pixels right
    # Averaging per image would not give this: image 1 alone has mIoU 50.
    alone = SegmentationScore(4, IGNORE)
    alone.update(np.array([[0, 1, 1, 3], [0, 1, 0, 2]]),
                 np.array([[0, 0, 1, IGNORE], [0, 1, 1, IGNORE]]))
    assert alone.scores()["mIoU"] == pytest.approx(0.5)
    assert json_metrics(scores) == {"mIoU": 0.3333, "mAcc": 0.625, "aAcc": 0.625}
    table = score.table(["a", "b", "c", "d"])
    assert table[1].split() == ["a", "40.00", "50.00"] and table[4].split() == ["d", "nan", "nan"]


def test_reduce_sums_ranks_and_bad_input():
    score = SegmentationScore(2, IGNORE)
    score.update(np.array([[1, 1]]), np.array([[1, 0]]))
    score.reduce(lambda array: array * 2)  # two ranks with the same counts
    assert score.num_images == 2 and score.areas[0, 1] == 2
    with pytest.raises(ValueError, match="differ in size"):
        area_counts(np.zeros((2, 2)), np.zeros((2, 3)), 2, IGNORE)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        area_counts(np.zeros((1, 2)), np.array([[0, 7]]), 2, IGNORE)
    empty = SegmentationScore(2, IGNORE)
    empty.update(np.zeros((2, 2)), np.full((2, 2), IGNORE))  # nothing labelled: allowed
    assert all(math.isnan(v) for v in empty.scores().values())
