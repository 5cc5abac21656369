"""Dense-prediction data: dataset readers for the published layouts (COCO for
detection, ADE20K for segmentation) and their training / evaluation
transforms. The classification pipeline is ``src/dataset.py``."""
