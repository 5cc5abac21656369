"""Scoring, one module per task: ``classification`` (top-1 / top-5),
``coco`` (detection, pycocotools' bbox AP), ``segmentation`` (mIoU / mAcc /
aAcc accumulated over the whole set, as mmsegmentation computes them)."""
