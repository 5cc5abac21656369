"""PyTorch (timm) references for testing the MindSpore port.

Import from tests (pytest puts tests/ on sys.path) or scripts::

    from reference import photos, realistic_timm_model, official_checkpoint, port_from_checkpoint

API (kept stable; other tests import it):

- ``photos(n, size=(H, W))`` -> float32 NCHW numpy batch of real photographs
  (scikit-image's sample images), bicubic-resized, ImageNet-normalised.
- ``realistic_timm_model(name, num_classes=1000, seed=0)`` -> a timm
  ``ghostnetv2_100/130/160`` or ``ghostnet_100`` in eval mode whose logits
  depend on the input like a trained network's (see its docstring for why).
- ``official_checkpoint(model, path, wrapped=True, legacy_format=False)`` ->
  writes the model's weights the way the official release was made (thop's
  profiling buffers on the official module tree, tests/official_model.py).
- ``port_from_checkpoint(src, dst, name, num_classes=1000)`` -> converts
  ``src`` with convert_weights.py and returns the loaded MindSpore port in
  eval mode.
- ``convert_with_cli(src, dst, *extra_args)`` -> runs convert_weights.py's
  main() in this process; raises with its stderr if it fails.
- ``timm_from_safetensors(name, path)`` -> fresh timm model, strict load.
- ``port_parameters(net)`` -> {MindSpore name: numpy array}.
- ``timm_logits(model, images)`` / ``port_logits(net, images)`` -> numpy logits.
- ``photo_spread(logits)`` -> how much the first two images' logits differ,
  relative to the largest logit (near 0: a blind reference).
- ``parity(reference, port)`` -> dict of max abs diff, max |logit|, relative diff.
- ``ParityCase(name, workdir)``: all of the above for one model, with the
  logits of each of PARITY_INPUTS computed once (tests/test_parity.py and
  tests/parity_report.py both use it).

Why not PyTorch's default initialisation: its logits are tiny and barely
depend on the input, so a wrong port (bilinear instead of nearest upsample,
swapped BN statistics, ...) still "matches". Here the BatchNorm statistics
are measured on real photographs, so every layer sees activations of a
realistic scale, and the statistics are then perturbed so that gamma, beta,
mean and variance all matter.
"""
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# Distinct colour (or grey) photographs shipped inside scikit-image (no
# download). 'cat' is left out: it is the same picture as 'chelsea'.
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
               "hubble_deep_field", "retina", "colorwheel", "camera", "coins")
# Input sizes the BatchNorm statistics are measured at (several, because a
# trained network sees many scales and the port must handle any).
CALIBRATION_SIZES = ((224, 224), (160, 192))
CALIBRATION_PHOTOS = 8
TIMM_MODELS = ("ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnet_100")
# Parity inputs: (batch, (H, W)). A batch above 1 at the standard size, a
# non-square size, and an odd size whose feature maps are not exact halves
# (97x131: the DFC gate is upsampled 24x33 -> 49x66, not by exactly 2).
PARITY_INPUTS = {"224x224": (4, (224, 224)), "160x256": (2, (160, 256)),
                 "97x131": (2, (97, 131))}
# float32 logits must agree within this fraction of the largest |logit|.
PARITY_TOLERANCE = 1e-3


def _photo(name):
    """One scikit-image photograph as HxWx3 uint8 RGB."""
    import skimage.data
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return image[..., :3]


def photos(n, size=(224, 224)):
    """n real photographs as a float32 (n, 3, H, W) batch, ImageNet-normalised.

    Photographs are taken in PHOTO_NAMES order; past the end the list repeats
    mirrored left-right, so every image in a batch of up to 20 is distinct.
    """
    import cv2
    height, width = size
    batch = []
    for i in range(n):
        image = _photo(PHOTO_NAMES[i % len(PHOTO_NAMES)])
        if (i // len(PHOTO_NAMES)) % 2:
            image = image[:, ::-1]
        image = cv2.resize(np.ascontiguousarray(image), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        batch.append((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))


def realistic_timm_model(name, num_classes=1000, seed=0):
    """A timm model in eval mode that behaves like a trained network.

    - convolutions: Kaiming normal (fan_out per group, ReLU), biases small random;
    - BatchNorm: random gamma / beta, then running statistics measured on
      real photographs at CALIBRATION_SIZES (train-mode forward, momentum
      None = exact average), then mean and variance randomly shifted and
      scaled, so that a port mixing up any of the four fields is caught;
    - classifier: normal init scaled so that the logits' std over photographs
      is 5 (largest logits ~20-30) and they differ clearly between photographs.
    Deterministic for a given (name, num_classes, seed).
    """
    import timm
    import torch

    if name not in TIMM_MODELS:
        raise ValueError(f"unknown reference model '{name}'; known: {', '.join(TIMM_MODELS)}")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _init_like_trained(model, generator)
        _measure_batchnorm_statistics(model)
        _perturb_batchnorm_statistics(model, generator)
        if num_classes > 0:
            _scale_classifier(model, target_std=5.0)
    return model.eval()


def _measure_batchnorm_statistics(model):
    import torch
    model.train()
    for size in CALIBRATION_SIZES:
        model(torch.from_numpy(photos(CALIBRATION_PHOTOS, size)))
    model.eval()


def _uniform(generator, shape, low, high):
    import torch
    return low + (high - low) * torch.rand(shape, generator=generator)


def _init_like_trained(model, generator):
    """Kaiming convs, random BN affine (gamma 1 +- 0.5, beta 0 +- 0.2), random classifier.

    The BN affine is randomised *before* the statistics are measured: scaling
    gamma afterwards would compound through ~70 BN layers and drive the last
    stages' activations to O(100), saturating every sigmoid gate (no trained
    network looks like that, and its float32 noise would exceed the tolerance).
    """
    import torch
    from torch import nn
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            # fan_out per group (as timm's _init_weight_goog): a depthwise
            # conv's fan is kh*kw, not channels*kh*kw.
            fan_out = module.out_channels // module.groups * math.prod(module.kernel_size)
            module.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=generator)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1, generator=generator)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all calibration batches
            module.weight.copy_(_uniform(generator, module.weight.shape, 0.5, 1.5))
            module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 1.0, generator=generator)
            module.bias.normal_(0.0, 1.0, generator=generator)


def _perturb_batchnorm_statistics(model, generator):
    """Move the measured mean (+-0.1 std) and variance (x0.8..1.25) like a
    trained network's running averages lag its weights, so that a port that
    ignores or mixes up either statistic is caught."""
    import torch
    from torch import nn
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            std = module.running_var.sqrt()
            module.running_mean.add_(0.1 * std * torch.randn(shape, generator=generator))
            module.running_var.mul_(_uniform(generator, shape, 0.8, 1.25))


def _scale_classifier(model, target_std):
    """Scale the classifier so the calibration photos' logits have std ~target_std."""
    import torch
    logits = model.eval()(torch.from_numpy(photos(CALIBRATION_PHOTOS, CALIBRATION_SIZES[0])))
    scale = target_std / float(logits.std())
    model.classifier.weight.mul_(scale)
    model.classifier.bias.mul_(scale)


def official_checkpoint(model, path, wrapped=True, legacy_format=False):
    """Save ``model`` (a timm ghostnetv2_* / ghostnet_100) as the authors saved
    the official release (ck_ghostnetv2_10.pth.tar). Returns path.

    The weights go into the official module tree and thop's ``profile`` runs
    over it, as the authors did before saving (tests/official_model.py says
    why timm's own tree would not do): every module without a thop counting
    rule, the root included, carries float64 ``total_ops`` / ``total_params``
    buffers. wrapped: inside ``{'state_dict': ...}`` as some releases are;
    legacy_format: torch's pre-1.6 (non-zip) serialization.
    """
    import torch
    from official_model import profiled_state_dict
    state_dict = profiled_state_dict(model)
    torch.save({"state_dict": state_dict} if wrapped else state_dict, path,
               _use_new_zipfile_serialization=not legacy_format)
    return path


def convert_with_cli(src, dst, *extra_args):
    """Run convert_weights.py's main(); raise with its message if it fails."""
    import contextlib
    import io
    import convert_weights
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = convert_weights.main(["--src", str(src), "--dst", str(dst), *extra_args])
    if status != 0:
        raise RuntimeError(f"convert_weights.py {src} -> {dst} failed: {stderr.getvalue()}")
    return dst


def port_from_checkpoint(src, dst, name, num_classes=1000):
    """Convert ``src`` to the MindSpore ``dst`` (.ckpt) with convert_weights.py
    (model inferred from the weights, as a user would run it), then build the
    port ``name`` and load ``dst`` into it. Returns the net in eval mode."""
    from src.ghostnetv2 import create_model
    from src.weights import load_weights
    convert_with_cli(src, dst)
    net = create_model(name, num_classes=num_classes)
    load_weights(net, str(dst))
    net.set_train(False)
    return net


def port_parameters(net):
    """{MindSpore name: numpy array} of every parameter of ``net``."""
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def timm_from_safetensors(name, path, num_classes=1000):
    """A fresh timm ``name`` with ``path`` loaded by strict key checking, in eval mode."""
    import timm
    from safetensors.torch import load_file
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def timm_logits(model, images):
    import torch
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def port_logits(net, images):
    import mindspore as ms
    return net(ms.Tensor(images)).asnumpy()


def parity(reference, port):
    """How far the port's logits are from the reference's."""
    max_diff = float(np.abs(reference - port).max())
    max_logit = float(np.abs(reference).max())
    return {"max_abs_diff": max_diff, "max_abs_logit": max_logit,
            "relative": max_diff / max_logit}


def photo_spread(logits):
    """Largest logit difference between the first two images, relative to the
    largest logit: near 0 means the reference ignores its input."""
    return float(np.abs(logits[0] - logits[1]).max() / np.abs(logits).max())


class ParityCase:
    """One model end to end: realistic timm reference -> official-format
    checkpoint -> convert_weights.py -> MindSpore port, with the logits of
    each PARITY_INPUTS entry computed once for both networks."""

    def __init__(self, name, workdir, seed=0, wrapped=True):
        self.name = name
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.reference = realistic_timm_model(name, seed=seed)
        self.checkpoint = official_checkpoint(
            self.reference, os.path.join(self.workdir, f"{name}_official.pth.tar"), wrapped=wrapped)
        self.net = port_from_checkpoint(self.checkpoint, os.path.join(self.workdir, f"{name}.ckpt"),
                                        name)
        self._logits = {}

    def images(self, input_name):
        batch, size = PARITY_INPUTS[input_name]
        return photos(batch, size)

    def logits(self, input_name):
        """(reference logits, port logits) for one of PARITY_INPUTS."""
        if input_name not in self._logits:
            images = self.images(input_name)
            self._logits[input_name] = (timm_logits(self.reference, images),
                                        port_logits(self.net, images))
        return self._logits[input_name]

    def parity(self, input_name):
        return parity(*self.logits(input_name))

    def round_trip(self):
        """The port's own weights -> .ckpt -> convert_weights.py -> .safetensors
        -> a fresh timm model (strict load). Returns that timm model."""
        from src.weights import save_checkpoint
        exported = os.path.join(self.workdir, f"{self.name}_export.ckpt")
        tensors = os.path.join(self.workdir, f"{self.name}_export.safetensors")
        save_checkpoint(port_parameters(self.net), exported)
        convert_with_cli(exported, tensors)
        return timm_from_safetensors(self.name, tensors)
