"""Score edge-inference results: top-1 and top-5 of the result files against labels.json.

    python postprocess.py --result_path result_Files --label_file preprocess_Result/labels.json

result_path holds one float32 logits file ``<input name>_0.bin`` per input,
as written by ascend310_infer/ and src/mindir_infer.py; label_file is the one
preprocess.py wrote. Scored with eval.py's own top-k (src/evaluation/classification.py), so on
the same images and weights the numbers equal eval.py's. The last line printed
is a JSON object with top1, top5, loss and num_images.

--predictions_file FILE also writes each input's top-5 classes by name:
[{"image": source image, "top5": [[class name, probability], ...]}], named
with the model's class names that preprocess.py found in the model info
beside the MINDIR (else the data folder's names, else numbers).
"""
import argparse
import json
import os
import sys

import numpy as np

from src.evaluation.classification import batch_sums, top_classes
from src.mindir_infer import result_name
from src.model_info import complete_class_names
from src.weights import write_text_atomic


class ResultsError(ValueError):
    """Results that cannot be scored; the message says why."""


def read_labels(label_file):
    if not os.path.isfile(label_file):
        raise ResultsError(f"label file not found: {label_file} (preprocess.py writes "
                           f"labels.json next to its images folder)")
    with open(label_file, encoding="utf-8") as f:
        record = json.load(f)
    if not isinstance(record.get("labels"), dict) or not record["labels"]:
        raise ResultsError(f"{label_file} has no 'labels' mapping (not written by preprocess.py?)")
    return record


def read_results(result_path, input_names):
    """(N, classes) logits in input_names' order; every input must have a result."""
    paths = [os.path.join(result_path, result_name(name)) for name in input_names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ResultsError(f"{len(missing)} of {len(paths)} inputs have no result in {result_path} "
                           f"(first: {os.path.basename(missing[0])}); did inference finish?")
    sizes = {os.path.getsize(p) for p in paths}
    if len(sizes) != 1 or 0 in sizes:
        raise ResultsError(f"result files in {result_path} differ in size or are empty "
                           f"({sorted(sizes)[:5]} bytes): results of different models mixed?")
    return np.stack([np.fromfile(p, np.float32) for p in paths])


def read_run(result_path, label_file):
    """(labels.json's record, input names in order, (N, classes) logits)."""
    record = read_labels(label_file)
    inputs = sorted(record["labels"])
    return record, inputs, read_results(result_path, inputs)


def score(record, inputs, logits):
    """dict(top1, top5, loss, num_images) of the results against the labels."""
    labels = np.array([record["labels"][n] for n in inputs], np.int64)
    if labels.max() >= logits.shape[1]:
        raise ResultsError(f"label {labels.max()} is out of range for results of "
                           f"{logits.shape[1]} classes: the model and the data do not match")
    top1, top5, loss, count = batch_sums(logits, labels)
    return dict(top1=float(top1 / count), top5=float(top5 / count), loss=float(loss / count),
                num_images=int(count))


def predictions(record, inputs, logits):
    """[{image, top5: [[class name, probability], ...]}] per input, in input order,
    named with the model's recorded classes, else the folders' (then numbers)."""
    names = complete_class_names(record.get("model_class_names") or record.get("class_names"),
                                 logits.shape[1])
    sources = record.get("sources", {})
    return [{"image": sources.get(name, name), "top5": top5}
            for name, top5 in zip(inputs, top_classes(logits, names))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--result_path", default="./result_Files")
    parser.add_argument("--label_file", default="./preprocess_Result/labels.json")
    parser.add_argument("--predictions_file", default=None,
                        help="also write each input's top-5 classes by name to this JSON file")
    args = parser.parse_args(argv)
    try:
        run = read_run(args.result_path, args.label_file)  # read once: ImageNet is 50,000 files
        metrics = score(*run)
        if args.predictions_file:
            write_text_atomic(args.predictions_file, json.dumps(predictions(*run), indent=1))
    except ResultsError as err:
        print(f"postprocess.py: error: {err}", file=sys.stderr)
        return 1
    print(f"{metrics['num_images']} images: top-1 {100 * metrics['top1']:.2f}%, "
          f"top-5 {100 * metrics['top5']:.2f}%, loss {metrics['loss']:.4f}")
    # Rounded like eval.py's JSON line, so the two compare as equal.
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
