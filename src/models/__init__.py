"""Dense-prediction models built on the GhostNetV2 backbone (``src/ghostnetv2.py``,
whose ``features_only=True`` pyramid is the backbone), laid out the way
mmdetection / mmsegmentation split a model:

- ``necks/``: feature fusion between backbone and head (YOLOv3's neck);
- ``heads/``: prediction heads (YOLOv3's head; DeepLabV3's ASPP, the FCN auxiliary head);
- ``losses/``: training losses and target assignment;
- ``detectors/``, ``segmentors/``: the whole networks (backbone + neck + head).

Nothing here reads files: data and weights are read by ``src/data`` and
``src/weights.py`` and handed in.
"""
