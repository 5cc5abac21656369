"""Turn a data set into the binary inputs of the exported MINDIR (edge inference).

    python preprocess.py --data_path /data/imagenet/val --output_path ./preprocess_Result \
        --mindir_path ghostnetv2_100.mindir

The task comes from the model info export.py wrote beside the MINDIR
(<file>.json; none, or no --mindir_path: classification), and
src/tasks/<task>.py preprocesses each image exactly as eval.py does. The
files (src/edge.py): one raw float32 file of shape 1 x 3 x H x W (NCHW,
little-endian) per image, the input of a batch-1 MINDIR, and labels.json,
what postprocess.py needs (the task, each input's source image and original
size, the task's own entries):

    OUTPUT_PATH/images/image_000000.bin, image_000001.bin, ...
    OUTPUT_PATH/labels.json

Classification: DATA_PATH holds one sub-folder per class (the layout eval.py
reads); every image goes through eval.py's pipeline
(``src.dataset.create_eval_dataset``: shorter side to image_size / crop_pct,
bicubic, center crop, ImageNet mean/std). With --mindir_path the image size
and crop are the MINDIR's: its input size, and the crop recorded in its model
info; the class folders must then be the recorded training classes. Without
it: --image_size (224) and --crop_pct (0.875). labels.json also has
"labels": {file name: class index}, "class_names": [...], "image_size": S,
"crop_pct": ..., "model_class_names": the MINDIR's recorded class names or
null. Undecodable files are skipped with a warning, as eval.py skips them.

Detection: DATA_PATH is a COCO root as eval.py takes it (--val_split, default
val2017, or --val_ann_file / --val_image_dir); every image goes through
eval.py's pipeline at the MINDIR's input size (resize keeping the ratio, pad
bottom/right). labels.json also has, per input, "image_ids" (its COCO image
id) and "factors" ([w_scale, h_scale] of the resize, to map boxes back to the
original pixels), and the annotation file, category ids, class names and test
thresholds from the model info.

``ascend310_infer`` and ``src/mindir_infer.py`` read the images folder;
``postprocess.py`` scores their results against labels.json.
"""
import argparse
import sys
import time

from src.dataset import DatasetError
from src.mindir_infer import MindirError
from src.model_info import read_info_named_by
from src.tasks import get_task, task_name
from src.train_utils import ConfigError
from src.weights import WeightsError


def parse_args(argv=None, task=None):
    """preprocess.py's flags and those of ``task`` (a src.tasks module; default classification)."""
    task = task or get_task(task_name(None))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--data_path", required=True,
                        help="the images to preprocess (classification: one sub-folder per "
                             "class; detection: a COCO root)")
    parser.add_argument("--output_path", default="./preprocess_Result")
    parser.add_argument("--mindir_path", default=None,
                        help="the exported MINDIR the inputs are for: its task, input size and "
                             "preprocessing from it and its model info (<file>.json)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="side of the square input (default: the MINDIR's, else 224)")
    parser.add_argument("--num_workers", type=int, default=0,
                        help="decoding processes (0: one per core, at most 8)")
    task.add_preprocess_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        info, where = read_info_named_by(argv, ["--mindir_path"])
        task = get_task(task_name(info))
        if not hasattr(task, "preprocess"):
            # segmentation: eval.py scores each image at its own (test-scale) size,
            # which one fixed-size MINDIR input cannot reproduce
            raise ConfigError(f"{where}: the {task.NAME} task has no edge flow in this version; "
                              "score it with eval.py, run the MINDIR with infer.py")
    except (ConfigError, WeightsError) as err:
        print(f"preprocess.py: error: {err}", file=sys.stderr)
        return 1
    args = parse_args(argv, task)
    start = time.time()
    try:
        summary = task.preprocess(args, info, where)
    except (DatasetError, MindirError, WeightsError, ConfigError) as err:
        print(f"preprocess.py: error: {err}", file=sys.stderr)
        return 1
    print(f"{summary} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
