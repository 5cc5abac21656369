"""Score edge-inference results against preprocess.py's labels.json.

    python postprocess.py --result_path result_Files --label_file preprocess_Result/labels.json

result_path holds the float32 files ``<input name>_<i>.bin`` of each output i
per input, as written by ascend310_infer/ and src/mindir_infer.py; label_file
is the one preprocess.py wrote, which names the task (src/tasks/<task>.py
scores). On the same images and weights the numbers equal eval.py's. The last
line printed is a JSON object of the task's metrics.

Classification: top-1 and top-5 with eval.py's own top-k
(src/evaluation/classification.py); the JSON has top1, top5, loss and
num_images. --predictions_file FILE also writes each input's top-5 classes by
name: [{"image": source image, "top5": [[class name, probability], ...]}],
named with the model's class names that preprocess.py found in the model info
beside the MINDIR (else the data folder's names, else numbers).

Detection: eval.py's NMS on the decoded rows, boxes mapped back to original
pixels with the resize factors preprocess.py recorded per input, COCO box AP
with pycocotools against the annotation file preprocess.py read (--ann_file
names another copy of it); the JSON has AP, AP50, AP75, APs, APm, APl,
val_images, skipped, detections. --predictions_file writes the detections in
COCO results format (original pixels, the file's category ids), as eval.py's.
"""
import argparse
import json
import sys

from src.dataset import DatasetError
from src.edge import ResultsError, read_record
from src.tasks import get_task, task_name
from src.train_utils import ConfigError

LABEL_FILE = "./preprocess_Result/labels.json"


def parse_args(argv=None, task=None):
    """postprocess.py's flags and those of ``task`` (a src.tasks module; default classification)."""
    task = task or get_task(task_name(None))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--result_path", default="./result_Files")
    parser.add_argument("--label_file", default=LABEL_FILE)
    task.add_postprocess_arguments(parser)
    return parser.parse_args(argv)


def label_file_of(argv):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--label_file", default=LABEL_FILE)
    return pre.parse_known_args(argv)[0].label_file


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        record = read_record(label_file_of(argv))
        task = get_task(task_name(record))
    except (ResultsError, ConfigError) as err:
        parse_args(argv)  # --help and flag errors come first
        print(f"postprocess.py: error: {err}", file=sys.stderr)
        return 1
    args = parse_args(argv, task)
    try:
        metrics = task.postprocess(record, args)
    except (ResultsError, ConfigError, DatasetError) as err:
        print(f"postprocess.py: error: {err}", file=sys.stderr)
        return 1
    # Rounded like eval.py's JSON line, so the two compare as equal.
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
