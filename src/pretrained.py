"""``pretrained=True`` without a download: weights the user already has.

``create_model("ghostnetv2_100", pretrained=True)`` (this port's or mindcv's)
looks, in this order, for:

1. the folder named by $GHOSTNETV2_WEIGHTS_DIR: the official release file
   (``ck_ghostnetv2_10.pth.tar`` / ``_13`` / ``_16``; reading it needs torch)
   or a file named after the model: ``ghostnetv2_100.ckpt`` (MindSpore, as
   convert_weights.py writes it) or ``ghostnetv2_100.safetensors`` (timm's);
2. timm's file in the Hugging Face cache: ``$HF_HUB_CACHE``, else
   ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, then
   ``models--timm--ghostnetv2_100.in1k/snapshots/<revision>/model.safetensors``
   (the revision refs/main names first; read without torch).

The weights are converted in memory. A model with another num_classes than
the file's (fine-tuning) gets every weight but the classifier, as timm does.
"""
import glob
import logging
import os

from src.weights import WeightsError, classifier_classes, load_params, read_weights

_logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "GHOSTNETV2_WEIGHTS_DIR"
# The timm (Hugging Face hub) model of each name; ghostnetv2_1x is the ModelZoo's 1.0x.
TIMM_NAMES = {"ghostnetv2_100": "ghostnetv2_100", "ghostnetv2_130": "ghostnetv2_130",
              "ghostnetv2_160": "ghostnetv2_160", "ghostnetv2_1x": "ghostnetv2_100",
              "ghostnet_100": "ghostnet_100"}
# The official GhostNetV2 release's file names (GitHub tag GhostNetV2).
OFFICIAL_FILES = {"ghostnetv2_100": "ck_ghostnetv2_10.pth.tar",
                  "ghostnetv2_130": "ck_ghostnetv2_13.pth.tar",
                  "ghostnetv2_160": "ck_ghostnetv2_16.pth.tar",
                  "ghostnetv2_1x": "ck_ghostnetv2_10.pth.tar"}


def hf_hub_cache():
    """The Hugging Face hub cache folder, resolved as huggingface_hub does."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def hf_repo_folder(model_name):
    return os.path.join(hf_hub_cache(), f"models--timm--{TIMM_NAMES[model_name]}.in1k")


def hf_cached_file(model_name):
    """timm's model.safetensors in the hub cache, or None; the snapshot that
    refs/main names is preferred over any other revision."""
    repo = hf_repo_folder(model_name)
    try:
        with open(os.path.join(repo, "refs", "main"), encoding="utf-8") as f:
            main = os.path.join(repo, "snapshots", f.read().strip(), "model.safetensors")
        if os.path.isfile(main):
            return main
    except OSError:
        pass  # no refs/main: any snapshot will do
    snapshots = glob.glob(os.path.join(repo, "snapshots", "*", "model.safetensors"))
    return max(snapshots, key=os.path.getmtime) if snapshots else None


def weights_dir_candidates(model_name):
    """Files looked for in $GHOSTNETV2_WEIGHTS_DIR, in order ([] when unset)."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return []
    stems = (model_name, TIMM_NAMES[model_name])
    names = [OFFICIAL_FILES.get(model_name), *(f"{stem}{suffix}" for suffix in
                                               (".ckpt", ".safetensors") for stem in stems)]
    return [os.path.join(folder, name) for name in dict.fromkeys(names) if name]


def find_pretrained(model_name):
    """Path of the first weights file found for ``model_name``; WeightsError
    naming every place looked in (and what to put where) when there is none."""
    if model_name not in TIMM_NAMES:
        raise WeightsError(f"no pretrained weights are known for '{model_name}'; known: "
                           f"{', '.join(sorted(TIMM_NAMES))}")
    for path in weights_dir_candidates(model_name):
        if os.path.isfile(path):
            return path
    cached = hf_cached_file(model_name)
    if cached:
        return cached
    raise WeightsError(_not_found_message(model_name))


def _not_found_message(model_name):
    timm_name = TIMM_NAMES[model_name]
    looked = [f"  {path}" for path in weights_dir_candidates(model_name)]
    if not looked:
        looked = [f"  ${WEIGHTS_DIR_ENV} (not set)"]
    looked.append(f"  {hf_repo_folder(model_name)}/snapshots/*/model.safetensors")
    official = OFFICIAL_FILES.get(model_name)
    fixes = []
    if official:
        fixes.append(f"  - put the official release file {official} (GitHub "
                     f"huawei-noah/Efficient-AI-Backbones, tag GhostNetV2) in a folder and set "
                     f"{WEIGHTS_DIR_ENV} to it (reading it needs torch)")
    fixes += [f"  - or put timm's model.safetensors (Hugging Face hub timm/{timm_name}.in1k) "
              f"in that folder as {model_name}.safetensors; the hub cache above is where "
              "huggingface_hub and timm put it when they download it",
              f"  - or convert any weights file once: python convert_weights.py --src FILE "
              f"--dst ${WEIGHTS_DIR_ENV}/{model_name}.ckpt"]
    return "\n".join([f"pretrained=True: no weights for {model_name} found (nothing is "
                      "downloaded). Looked for:", *looked, "To fix:", *fixes])


def load_pretrained(net, model_name):
    """Load the weights ``find_pretrained`` finds into ``net``; returns (and
    logs) a summary naming the file. A classifier of another size than the
    file's is left initialised."""
    path = find_pretrained(model_name)
    params, fmt = read_weights(path)
    wanted = {p.name: tuple(p.shape) for p in net.get_parameters()}.get("classifier.weight")
    drop = wanted is None or wanted[0] != classifier_classes(params)
    summary = f"pretrained {model_name}: " + load_params(net, params, f"{path} ({fmt})", drop)
    if drop:
        summary += (f"; the file's classifier ({classifier_classes(params)} classes) does not "
                    f"fit the model's ({wanted[0] if wanted else 0}) and was not loaded")
    _logger.info(summary)
    return summary


# The classifier's own head: weights files carry it, dense-task backbones have none.
CLASSIFICATION_HEAD_PREFIXES = ("classifier.", "conv_head.")


def load_backbone_weights(backbone, source, model_name):
    """Load classification weights into a dense task's backbone (a GhostNetV2
    without conv_head / classifier, any output_stride: the parameters are the
    classifier's). source: a weights file (official release, timm's
    .safetensors / .pth, this port's .ckpt, classification checkpoints of
    train.py included) or "True" / True for ``find_pretrained``'s search.
    Returns and logs the summary (load_backbone_params)."""
    path = find_pretrained(model_name) if source in (True, "True", "true") else source
    params, fmt = read_weights(path)
    return load_backbone_params(backbone, params, f"{path} ({fmt})", model_name)


def load_backbone_params(backbone, params, source, model_name):
    """{name: array} of a classifier's weights (read_weights) into a backbone:
    every backbone parameter must be there (WeightsError otherwise); the
    classification head is dropped. source names the file in the summary."""
    head = [k for k in params if k.startswith(CLASSIFICATION_HEAD_PREFIXES)]
    params = {k: v for k, v in params.items() if k not in head}
    summary = (f"backbone {model_name}: " + load_params(backbone, params, source)
               + f"; the file's classification head ({len(head)} tensors: conv_head, "
               "classifier) was not loaded")
    _logger.info(summary)
    return summary
