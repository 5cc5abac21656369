"""Reading, converting, checking and writing GhostNetV2 weights.

Formats read:
- MindSpore ``.ckpt``;
- official PyTorch release files (``ck_ghostnetv2_10.pth.tar``: a flat
  state_dict or one wrapped in ``{'state_dict': ...}``, with the thop
  profiling buffers ``*.total_ops`` / ``*.total_params``) and timm ``.pth``
  files (reading these needs torch);
- timm ``.safetensors`` (read with the safetensors package, no torch).

The port uses the official parameter names, so PyTorch -> MindSpore is a
rename of the BatchNorm fields (weight/bias/running_mean/running_var ->
gamma/beta/moving_mean/moving_variance) and nothing else.
"""
import os
import tempfile

import numpy as np

from .ghostnetv2 import MODEL_WIDTHS, create_model, make_divisible

TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".bin")
BN_TORCH_TO_MS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                  "running_var": "moving_variance"}
BN_MS_TO_TORCH = {v: k for k, v in BN_TORCH_TO_MS.items()}
# Buffers of PyTorch checkpoints that are not parameters of the network:
# thop's profiling counters (on every module of the official release files,
# the root's bare "total_ops" included) and BatchNorm's step counter.
IGNORED_BUFFERS = ("total_ops", "total_params", "num_batches_tracked")
# Optimizer / EMA state that MindSpore training checkpoints carry beside the
# network's parameters.
TRAINING_STATE_PREFIXES = ("moments.", "accum.", "mean_square.", "mean_grad.", "moment1.",
                           "moment2.", "ema.", "scale_sense", "global_step", "learning_rate",
                           "current_iterator_step", "last_overflow_iterator_step",
                           "epoch_num", "step_num", "adam_", "beta1_power", "beta2_power",
                           # nn.RMSProp's momentum buffers, mindcv TrainStep's EMA update
                           # counter, DynamicLossScaleUpdateCell's counters (train.py checkpoints)
                           "moment.", "updates", "cur_iter", "last_overflow_iter")
# The checkpoint entry describing the weights (src/model_info.py): not a parameter.
MODEL_INFO_KEY = "model_info"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message says why and what to do."""


def is_torch_file(path):
    return path.endswith(TORCH_SUFFIXES)


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading PyTorch .pth files needs torch "
                           "(pip install torch), or convert a .safetensors file instead") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                           f"{err})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state_dict, found a {type(obj).__name__}")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None


def _read_mindspore(path):
    import mindspore as ms
    try:
        params = ms.load_checkpoint(path)
    except Exception as err:  # MindSpore raises ValueError/RuntimeError on bad files
        raise WeightsError(f"{path}: not a readable MindSpore checkpoint; the file may be "
                           f"truncated or of another format ({str(err).splitlines()[0]})") from None
    return {k: v.asnumpy() for k, v in params.items()}


def read_weights(path):
    """Any supported file -> (dict of numpy arrays in MindSpore names, source format)."""
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    if os.path.getsize(path) == 0:
        raise WeightsError(f"{path}: the file is empty")
    if path.endswith(".safetensors"):
        return torch_to_mindspore(_read_safetensors(path)), "safetensors"
    if is_torch_file(path):
        return torch_to_mindspore(_read_torch(path)), "pytorch"
    if path.endswith(".ckpt"):
        return strip_training_state(_read_mindspore(path)), "mindspore"
    raise WeightsError(f"{path}: unknown weights format; expected .ckpt, .safetensors, "
                       f".pth or .pth.tar")


def strip_training_state(params):
    """Keep the network's own parameters (drop optimizer moments, step counters, ...).

    EMA weights saved by training as 'ema.<name>' replace the raw ones: they
    are the weights to evaluate and export.
    """
    ema = {k[len("ema."):]: v for k, v in params.items() if k.startswith("ema.")}
    net = {k: v for k, v in params.items()
           if not k.startswith(TRAINING_STATE_PREFIXES) and k != MODEL_INFO_KEY}
    net.update({k: v for k, v in ema.items() if k in net})
    return net


def torch_to_mindspore(state_dict):
    """PyTorch names -> MindSpore names; drops profiling and step-count buffers."""
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v
                  for k, v in state_dict.items() if k.rpartition(".")[2] not in IGNORED_BUFFERS}
    bn_layers = {k[:-len(".running_mean")] for k in state_dict if k.endswith(".running_mean")}
    converted = {}
    for key, value in state_dict.items():
        layer, _, field = key.rpartition(".")
        if layer in bn_layers and field in BN_TORCH_TO_MS:
            key = f"{layer}.{BN_TORCH_TO_MS[field]}"
        converted[key] = np.asarray(value, dtype=np.float32)
    return converted


def mindspore_to_torch(params):
    """MindSpore names -> PyTorch names, with the num_batches_tracked buffers
    that a strict ``load_state_dict`` expects."""
    converted = {}
    for key, value in params.items():
        layer, _, field = key.rpartition(".")
        if field in BN_MS_TO_TORCH:
            converted[f"{layer}.{BN_MS_TO_TORCH[field]}"] = value
            if field == "moving_mean":
                converted[f"{layer}.num_batches_tracked"] = np.zeros((), dtype=np.int64)
        else:
            converted[key] = value
    return converted


def infer_model(params):
    """(model name, num_classes) from the weights: DFC keys tell V2 from V1,
    the stem width tells 1.0 / 1.3 / 1.6."""
    if "conv_stem.weight" not in params:
        raise WeightsError("cannot infer the model: no 'conv_stem.weight' in the weights "
                           "(is this a GhostNet checkpoint?); pass --model NAME")
    stem = params["conv_stem.weight"].shape[0]
    has_dfc = any(".short_conv." in k for k in params)
    candidates = [name for name, width in MODEL_WIDTHS.items()
                  if make_divisible(16 * width) == stem and name.startswith("ghostnetv2") == has_dfc
                  and name != "ghostnetv2_1x"]
    if not candidates:
        raise WeightsError(f"cannot infer the model from a stem of {stem} channels "
                           f"({'with' if has_dfc else 'without'} DFC attention); pass --model NAME")
    return candidates[0], classifier_classes(params)


def classifier_classes(params):
    """num_classes of the weights' classifier (0 when it has none)."""
    return params["classifier.weight"].shape[0] if "classifier.weight" in params else 0


def compare_to_network(net, params, source="weights"):
    """Raise WeightsError listing missing keys, unexpected keys and shape mismatches."""
    expected = {p.name: tuple(p.shape) for p in net.get_parameters()}
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    mismatched = sorted(f"{k}: file {tuple(params[k].shape)} vs model {expected[k]}"
                        for k in set(expected) & set(params)
                        if tuple(params[k].shape) != expected[k])
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source} do not fit the model ({len(missing)} missing, {len(unexpected)} "
             f"unexpected, {len(mismatched)} of another shape):"]
    for title, keys in (("missing", missing), ("unexpected", unexpected),
                        ("shape mismatch", mismatched)):
        if keys:
            shown = keys[:10] + ([f"... and {len(keys) - 10} more"] if len(keys) > 10 else [])
            lines.append(f"  {title}: " + "; ".join(shown))
    if mismatched and all(k.startswith("classifier.") for k in mismatched):
        lines.append("  only the classifier differs: set num_classes to the file's, or "
                     "fine-tune with drop_classifier (train.py --pretrained FILE)")
    else:
        lines.append("  check --model (width) and --num_classes against the file" + _guess_hint(params))
    raise WeightsError("\n".join(lines))


def _guess_hint(params):
    """'; the file looks like ghostnetv2_130 with 10 classes' where that can be told."""
    try:
        name, classes = infer_model(params)
    except WeightsError:
        return ""
    return f"; the file looks like {name} with {classes} classes"


def load_weights(net, path, drop_classifier=False):
    """Load any supported weights file into ``net``; returns a one-line summary.

    drop_classifier: leave the classifier as initialised (fine-tuning to
    another num_classes).
    """
    params, fmt = read_weights(path)
    return load_params(net, params, f"{path} ({fmt})", drop_classifier)


def load_params(net, params, source, drop_classifier=False):
    """Check {MindSpore name: array} against ``net`` and load it (strict);
    ``source`` names where the weights came from in the summary and errors."""
    import mindspore as ms
    if drop_classifier:
        params = {k: v for k, v in params.items() if not k.startswith("classifier.")}
        keep = {p.name: p for p in net.get_parameters() if p.name.startswith("classifier.")}
        params.update({k: p.asnumpy() for k, p in keep.items()})
    compare_to_network(net, params, source=f"weights in {source}")
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()},
                           strict_load=True)
    note = " (classifier left initialised)" if drop_classifier else ""
    return f"loaded {len(params)} tensors from {source}{note}"


PARTIAL_MARK = ".partial-"  # in the names of files atomic_write has not finished


def atomic_write(path, write_fn):
    """Call write_fn(tmp_path), flush it to disk, then rename it over ``path``:
    a process killed (or a machine that loses power) while writing never
    leaves a half-written file under the final name, only a hidden
    ``.<name>.partial-XXXX`` file that ``partial_files`` finds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = ".ckpt" if path.endswith(".ckpt") else os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{PARTIAL_MARK}", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
        write_fn(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync(tmp)  # the data reaches the disk before the rename can
        os.replace(tmp, path)
        _fsync(directory)  # and the rename itself
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    """atomic_write of a text file (UTF-8)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


def partial_files(directory):
    """Files a killed atomic_write left in directory (never complete files)."""
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.startswith(".") and PARTIAL_MARK in name)


def save_checkpoint(params, path):
    """Atomically save {name: numpy array or Tensor} as a MindSpore .ckpt."""
    import mindspore as ms
    items = [{"name": k, "data": v if isinstance(v, ms.Tensor) else ms.Tensor(v)}
             for k, v in params.items()]
    atomic_write(path, lambda tmp: ms.save_checkpoint(items, tmp))


def save_safetensors(params, path):
    """Atomically save MindSpore-named weights as a timm-loadable safetensors file."""
    from safetensors.numpy import save_file
    tensors = {k: np.ascontiguousarray(v) for k, v in mindspore_to_torch(params).items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def convert(src, dst, model=None, num_classes=None, overwrite=False, class_names=None):
    """Convert src to dst; the direction follows from dst's suffix.

    .ckpt dst: PyTorch/safetensors (or ckpt) -> MindSpore checkpoint, with the
    model info (src/model_info.py) of src when it is a described .ckpt, else
    the ImageNet preprocessing of the official/timm weights (class_names: their
    names in label order, e.g. from a labels file).
    .safetensors dst: MindSpore (or any) -> timm-loadable safetensors.
    The weights are checked against the model first; nothing is written if
    they do not fit. An existing dst (perhaps a trained checkpoint) is only
    replaced with overwrite=True. Returns a summary line.
    """
    params, fmt = read_weights(src)
    if model is None:
        model, _ = infer_model(params)
    if num_classes is None:
        num_classes = classifier_classes(params)
    net = create_model(model, num_classes=num_classes)
    compare_to_network(net, params, source=f"weights in {src}")
    if os.path.exists(dst) and not overwrite:
        raise WeightsError(f"{dst} already exists; pass another --dst, or --overwrite to "
                           "replace it")
    described = ""
    if dst.endswith(".safetensors"):
        save_safetensors(params, dst)
    elif dst.endswith(".ckpt"):
        from .model_info import checkpoint_entry, described_or_imagenet
        info = described_or_imagenet(src, model, num_classes, class_names)
        save_checkpoint({**params, **checkpoint_entry(info)}, dst)
        described = (f"; recorded: {info['input_size'][1]}x{info['input_size'][2]} input, "
                     f"crop_pct {info['crop_pct']:g}, "
                     f"{'class names' if info['class_names'] else 'no class names'}")
    else:
        raise WeightsError(f"{dst}: destination must end in .ckpt or .safetensors")
    count = sum(int(np.prod(v.shape)) for k, v in params.items() if "moving_" not in k)
    return (f"converted {src} ({fmt}, {len(params)} tensors, {count:,} parameters) -> {dst} "
            f"as {model} with {num_classes} classes{described}")
