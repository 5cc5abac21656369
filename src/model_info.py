"""What inference needs to know about weights, carried with them (timm's pretrained_cfg).

A record (a JSON object) names the network, its classes in label order and
the eval preprocessing it was trained for::

    {"format": "ghostnetv2-model-info", "version": 1,
     "architecture": "ghostnetv2_100", "width": 1.0, "num_classes": 10,
     "class_names": ["0", "1", ...] or null,
     "input_size": [3, 64, 64], "crop_pct": 1.0, "interpolation": "bicubic",
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "source": "train.py on /data/digits/train"}

Where it travels:
- MindSpore checkpoints: the UTF-8 JSON as a uint8 tensor named ``model_info``.
  A tensor (not save_checkpoint's ``append_dict`` string, which load_checkpoint
  returns as a Python str that breaks every ``v.asnumpy()`` reader) so that any
  checkpoint reader sees one more tensor: load_param_into_net and mindcv's
  ``create_model(checkpoint_path=...)`` leave it unused, src.weights strips it.
- ONNX files: the same JSON in ``metadata_props`` under the key ``model_info``.
- MINDIR / AIR files, which hold no free metadata: a sidecar ``<file>.json``.
An export's record has the exported file's input_size and an ``export`` entry.

Tasks (src/tasks): ``task`` names the task the weights were trained for;
a record without it (every record written before there were tasks) is a
classifier's. Records of other tasks are version 2 (so that code reading
only version 1 refuses them instead of taking them for classifiers) and
carry the task's own fields beside the common ones (``new_info``'s
``fields``: any JSON values; they travel unchanged in the checkpoint
tensor, the ONNX metadata and the sidecar). Only a classifier's record
needs ``crop_pct`` and this code's ImageNet normalisation; the other tasks
check their own fields.
"""
import json
import os
import sys

import numpy as np

from .dataset import IMAGENET_MEAN, IMAGENET_STD
from .ghostnetv2 import MODEL_WIDTHS
from .tasks import TASKS
from .weights import MODEL_INFO_KEY, WeightsError, _read_mindspore as read_mindspore, \
    write_text_atomic

FORMAT = "ghostnetv2-model-info"
VERSION = 2  # the newest this code reads and writes (1: classifiers, which need nothing newer)
CLASSIFICATION = "classification"
SIDECAR_SUFFIX = ".json"
# What src.dataset's eval transform does (and so what the record must say).
INTERPOLATION = "bicubic"
MEAN = [round(m / 255, 6) for m in IMAGENET_MEAN]
STD = [round(s / 255, 6) for s in IMAGENET_STD]
# The preprocessing of the official / timm ImageNet weights, and the defaults
# when nothing is recorded.
IMAGENET_IMAGE_SIZE = 224
IMAGENET_CROP_PCT = 0.875
RUN_CONFIG = "config.yaml"  # train.py's recipe beside its checkpoints (older runs' only record)


class ModelInfoError(WeightsError):
    """A record that cannot be used; the message says why and what to do."""


def new_info(task, model, num_classes, input_size, source="", **fields):
    """The record of weights of any task: the common fields, then the task's
    own (JSON values). input_size: (height, width) of the network's input."""
    height, width = input_size
    return {"format": FORMAT, "version": 1 if task == CLASSIFICATION else VERSION, "task": task,
            "architecture": model, "width": MODEL_WIDTHS.get(model),
            "num_classes": int(num_classes), "input_size": [3, int(height), int(width)],
            "interpolation": INTERPOLATION, "mean": MEAN, "std": STD, "source": source,
            **fields}


def make_info(model, num_classes, image_size, crop_pct, class_names=None, source=""):
    """The record of a square-input classifier. class_names shorter than
    num_classes (a training folder with fewer classes) get numbers for the rest."""
    names = complete_class_names(class_names, num_classes) if class_names else None
    return new_info(CLASSIFICATION, model, num_classes, (image_size, image_size), source,
                    class_names=names, crop_pct=float(crop_pct))


def task_of(info):
    """The task of a record (None or no ``task``: classification)."""
    return (info or {}).get("task") or CLASSIFICATION


def complete_class_names(names, num_classes):
    """num_classes names: the first of ``names``, numbers for outputs they do not name."""
    names = [str(n) for n in (names or [])[:num_classes]]
    return names + [str(i) for i in range(len(names), num_classes)]


def from_train_config(config, class_names):
    """The record of train.py's checkpoints: class names of the training folder."""
    return make_info(config.model, config.num_classes, config.image_size, config.crop_pct,
                     class_names, source=f"train.py on {os.path.abspath(config.data_path)}")


def check_label_count(class_names, num_classes):
    """Names given for weights (a labels file) must name every output."""
    if class_names is not None and len(class_names) != num_classes:
        raise ModelInfoError(f"{len(class_names)} class names for weights with {num_classes} "
                             "classes: pass the labels file of these weights")


def imagenet_info(model, num_classes, class_names=None, source=""):
    """The record of converted official / timm ImageNet weights."""
    check_label_count(class_names, num_classes)
    return make_info(model, num_classes, IMAGENET_IMAGE_SIZE, IMAGENET_CROP_PCT, class_names,
                     source=source)


def for_export(info, where, model, num_classes, height, width, crop_pct, export):
    """The record of an exported file: the weights' record (or, with none, the
    values the export used) with the file's input size and an ``export`` entry."""
    if info is None:
        info = make_info(model, num_classes, height, crop_pct,
                         source=f"export.py's defaults (nothing recorded in {where})")
    return dict(info, num_classes=num_classes, input_size=[3, height, width], crop_pct=crop_pct,
                class_names=recorded_class_names(info, num_classes), export=export)


def image_size(info):
    """S of a record's square input_size [3, S, S] (None for no record)."""
    if info is None:
        return None
    _, height, width = info["input_size"]
    return height if height == width else None


# ------------------------------------------------------------------ encoding

def to_json(info):
    return json.dumps(info, ensure_ascii=False)


def parse(text, where):
    """A record from its JSON text, checked; ModelInfoError names ``where``."""
    try:
        info = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelInfoError(f"{where}: the model info is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ModelInfoError(f"{where}: not a {FORMAT} record")
    if info.get("version", 0) > VERSION:
        raise ModelInfoError(f"{where}: model info version {info['version']} is newer than "
                             f"this code reads ({VERSION}); update the code")
    task = task_of(info)
    if task not in TASKS:
        raise ModelInfoError(f"{where}: the weights are for the task {task!r}, which this code "
                             f"does not know ({', '.join(TASKS)}); update the code")
    required = ("num_classes", "input_size", "mean", "std")
    if task == CLASSIFICATION:
        required += ("crop_pct",)
    missing = [k for k in required if k not in info]
    if missing:
        raise ModelInfoError(f"{where}: the model info lacks {', '.join(missing)}")
    if task == CLASSIFICATION:
        check_normalisation(info, where)
    return info


def check_normalisation(info, where):
    """The pipelines here resize bicubic and normalise with ImageNet's mean/std;
    weights recorded with other values would be fed wrong inputs."""
    same = (info.get("interpolation", INTERPOLATION) == INTERPOLATION
            and np.allclose(info["mean"], MEAN, atol=1e-4) and np.allclose(info["std"], STD,
                                                                           atol=1e-4))
    if not same:
        raise ModelInfoError(f"{where}: the weights expect interpolation "
                             f"{info.get('interpolation')}, mean {info['mean']}, std "
                             f"{info['std']}; this code's eval transform does {INTERPOLATION} "
                             f"with mean {MEAN}, std {STD}")


def checkpoint_entry(info):
    """{MODEL_INFO_KEY: uint8 array of the UTF-8 JSON}, to save beside the weights."""
    return {MODEL_INFO_KEY: np.frombuffer(to_json(info).encode("utf-8"), np.uint8).copy()}


def from_checkpoint_entry(array, where):
    return parse(np.asarray(array, np.uint8).tobytes().decode("utf-8", "strict"), where)


# ------------------------------------------------------------------ reading

def read_checkpoint_info(path):
    """The record a MindSpore .ckpt holds (None when it holds none). The whole
    file is read: load_checkpoint's choice_func fails on files without the entry."""
    entries = read_mindspore(path)
    if MODEL_INFO_KEY not in entries:
        return None
    return from_checkpoint_entry(entries[MODEL_INFO_KEY], path)


def sidecar_path(export_path):
    return export_path + SIDECAR_SUFFIX


def read_sidecar(export_path):
    """The record beside a MINDIR / AIR file (None when there is none)."""
    path = sidecar_path(export_path)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), path)


def write_sidecar(export_path, info):
    write_text_atomic(sidecar_path(export_path), json.dumps(info, indent=1, ensure_ascii=False)
                      + "\n")


def read_onnx_info(path):
    """The record in an ONNX file's metadata_props (None when there is none)."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise ModelInfoError(f"{path} is not an ONNX file ({err})") from None
    for prop in model.metadata_props:
        if prop.key == MODEL_INFO_KEY:
            return parse(prop.value, path)
    return None


def set_onnx_info(model, info):
    """Put the record into an onnx.ModelProto's metadata_props (replacing an old one)."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != MODEL_INFO_KEY]
    del model.metadata_props[:]
    for key, value in kept + [(MODEL_INFO_KEY, to_json(info))]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def from_run_config(path):
    """A record from train.py's config.yaml (runs older than the recorded
    checkpoints); it knows no class names."""
    from .model_utils.config import load_yaml
    try:
        recipe = load_yaml(path)
    except (FileNotFoundError, ValueError) as err:
        raise ModelInfoError(str(err)) from None
    if task_of(recipe) != CLASSIFICATION:
        raise ModelInfoError(f"{path} is the recipe of a {task_of(recipe)} run, whose checkpoints "
                             "carry their own model info: pass one of those checkpoints")
    missing = [k for k in ("model", "num_classes", "image_size", "crop_pct") if k not in recipe]
    if missing:
        raise ModelInfoError(f"{path} lacks {', '.join(missing)}: not a config.yaml of train.py")
    return make_info(recipe["model"], recipe["num_classes"], recipe["image_size"],
                     recipe["crop_pct"], source=f"{path} (train.py's recipe; no class names)")


def read_info(path):
    """(record, where it was found) for a weights or exported file: the file's own
    record, else (checkpoints only) train.py's config.yaml beside it, else (None, None)."""
    if not os.path.isfile(path):
        raise ModelInfoError(f"weights file not found: {path}")
    lower = path.lower()
    if lower.endswith(".onnx"):
        info = read_onnx_info(path)
    elif lower.endswith((".mindir", ".air")):
        info = read_sidecar(path)
        if info is not None:
            return info, sidecar_path(path)
    elif lower.endswith(".ckpt"):
        info = read_checkpoint_info(path)
    else:
        info = None  # .pth / .safetensors: nothing recorded
    if info is not None:
        return info, path
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), RUN_CONFIG)
    if lower.endswith(".ckpt") and os.path.isfile(beside):
        return from_run_config(beside), beside
    return None, None


# ------------------------------------------------------------------ settings

def choose_preprocessing(info, where, image_size_flag=None, crop_pct_flag=None,
                         flags=("--image_size", "--crop_pct")):
    """(image size, crop_pct, messages) for eval / inference / export.

    A value given on the command line wins; else the record's; else the ImageNet
    defaults. messages: [(level, text)] for the caller's log: the record used,
    one warning per flag that contradicts it, or, when nothing is recorded, one
    warning naming the flags to pass."""
    recorded_size = image_size(info)
    recorded_crop = info["crop_pct"] if info else None
    size = image_size_flag or recorded_size or IMAGENET_IMAGE_SIZE
    crop = crop_pct_flag if crop_pct_flag is not None else (recorded_crop or IMAGENET_CROP_PCT)
    if info is None:
        return size, crop, [("warning", (
            f"nothing recorded about the training with these weights (a checkpoint of an older "
            f"train.py, or converted weights): image size {size}, crop_pct {crop:g}; "
            f"pass {', '.join(flags)} as trained"))]
    names = "class names" if info.get("class_names") else "no class names"
    messages = [("info", f"model info from {where}: {recorded_size}x{recorded_size} input, "
                         f"crop_pct {recorded_crop:g}, {info['interpolation']}, {names}")]
    if image_size_flag and recorded_size and image_size_flag != recorded_size:
        messages.append(("warning", f"{flags[0]} {image_size_flag} differs from the "
                                    f"{recorded_size} the weights were trained at ({where})"))
    if crop_pct_flag is not None and recorded_crop is not None and crop_pct_flag != recorded_crop:
        messages.append(("warning", f"--crop_pct {crop_pct_flag:g} differs from the "
                                    f"{recorded_crop:g} the weights were trained with ({where})"))
    return size, crop, messages


def print_messages(messages):
    """choose_preprocessing's messages for a command-line tool: info lines on
    stdout, warnings on stderr."""
    for level, text in messages:
        if level == "info":
            print(text, flush=True)
        else:
            print(f"warning: {text}", file=sys.stderr, flush=True)


def recorded_class_names(info, num_classes):
    """The record's class names when they fit num_classes outputs, else None."""
    names = (info or {}).get("class_names")
    return list(names) if names and len(names) == num_classes else None


def read_labels_file(path):
    """Class names from a JSON list, preprocess.py's labels.json, a model info
    record, or a text file with one name per line."""
    if not os.path.isfile(path):
        raise ModelInfoError(f"labels file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(data, dict) and "class_names" in data:
        data = data["class_names"]
    if not isinstance(data, list):
        raise ModelInfoError(f"{path}: expected a JSON list of class names (or one name per line)")
    return [str(name) for name in data]


def described_or_imagenet(src, model, num_classes, class_names=None):
    """The record for weights converted from src: src's own (a described .ckpt),
    else the ImageNet one of official / timm weights; class_names replace its names."""
    info = read_checkpoint_info(src) if src.lower().endswith(".ckpt") else None
    if info is None or info["num_classes"] != num_classes:
        return imagenet_info(model, num_classes, class_names,
                             source=f"convert_weights.py from {os.path.basename(src)}")
    if class_names is not None:
        check_label_count(class_names, num_classes)
        info = dict(info, class_names=[str(n) for n in class_names])
    return info
