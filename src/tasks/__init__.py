"""What train.py, eval.py, export.py and infer.py do differently per task
(classification, detection, segmentation). A checkpoint's model info names
its task, so no command needs a task flag."""
