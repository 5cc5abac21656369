"""Training glue around mindcv: checks of the recipe, loss, optimizer, learning
rate schedule, mixed precision, loss scaling and the EMA train step.

mindcv does the work (``create_loss``, ``create_optimizer``,
``create_scheduler``, ``auto_mixed_precision``, ``TrainStep``); this module
only maps the recipe's keys onto it and checks them first, so that a wrong
value is one clear message and not a traceback from deep inside.
"""
import logging
import os
import random
import sys

import numpy as np

from .timm_recipe import create_train_step as timm_train_step
from .timm_recipe import epoch_step_lrs, noise_range_epochs

_logger = logging.getLogger(__name__)

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")
# mindcv's plain "sgd" keeps state ('stat.*') the weights loader does not know; "momentum" is
# the same update.
OPTIMIZERS = ("momentum", "nesterov", "rmsprop", "adamw", "adam")
# timm_step: the official recipe's schedule (timm's StepLRScheduler, per epoch, with lr
# noise: src/timm_recipe.py); the others are mindcv's, per step.
SCHEDULERS = ("timm_step", "cosine_decay", "step_decay", "exponential_decay", "polynomial_decay",
              "constant")
AMP_LEVELS = ("O0", "O1", "O2", "O3")
LOSS_SCALE_TYPES = ("fixed", "dynamic")


class ConfigError(ValueError):
    """A recipe value that cannot work; the message names the key and the fix."""


def check_choice(config, key, choices):
    if config[key] not in choices:
        raise ConfigError(f"--{key} {config[key]!r} is not supported; choose one of "
                          f"{', '.join(map(str, choices))}")


def check_positive(config, *keys, allow_zero=False):
    for key in keys:
        value = config[key]
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"--{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_train_config(config):
    """Raise ConfigError for values of train.py's common keys no run can use
    (the task's own keys: its check_config)."""
    check_choice(config, "device_target", DEVICE_TARGETS)
    check_choice(config, "optimizer", OPTIMIZERS)
    check_choice(config, "lr_scheduler", SCHEDULERS)
    check_choice(config, "amp_level", AMP_LEVELS)
    check_choice(config, "loss_scale_type", LOSS_SCALE_TYPES)
    check_positive(config, "batch_size", "epoch_size", "lr", "image_size", "num_classes",
                   "save_every", "keep_checkpoint_max", "log_interval", "loss_scale")
    check_positive(config, "weight_decay", "warmup_epochs", "num_workers", "val_interval",
                   allow_zero=True)
    if config.warmup_epochs > config.epoch_size:
        raise ConfigError(f"--warmup_epochs ({config.warmup_epochs}) must not exceed "
                          f"--epoch_size ({config.epoch_size})")
    if config.ema and not 0 < config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must be in (0, 1), got {config.ema_decay}")
    check_lr_noise(config)


def check_lr_noise(config):
    noise = config.lr_noise
    if not isinstance(noise, (list, tuple)) or len(noise) > 2 or not all(
            isinstance(v, (int, float)) and v >= 0 for v in noise):
        raise ConfigError(f"--lr_noise must be [] (off), [start] or [start, end] as fractions of "
                          f"--epoch_size (timm's --lr-noise, e.g. [0.42, 0.9]), got {noise!r}")
    if noise and config.lr_scheduler != "timm_step":
        raise ConfigError(f"--lr_noise needs --lr_scheduler timm_step (got "
                          f"{config.lr_scheduler}); pass --lr_noise [] to turn it off")
    if noise:
        check_positive(config, "lr_noise_pct", "lr_noise_std")


def check_image_size(net, image_size, key="image_size"):
    minimum = getattr(net, "min_input_size", 1)
    if image_size < minimum:
        raise ConfigError(f"--{key} {image_size} is under the model's minimum input size "
                          f"{minimum}; use --{key} {minimum} or more (resize small images up)")


def set_seed(seed):
    import mindspore as ms
    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)
    ms.dataset.config.set_seed(seed)


def available_device_targets():
    from mindspore import hal
    return [d for d in DEVICE_TARGETS if hal.is_available(d)]


def set_device(device_target):
    """Graph mode on the requested device; a clear error when this MindSpore lacks it."""
    import mindspore as ms
    if device_target not in DEVICE_TARGETS:
        raise ConfigError(f"--device_target {device_target!r} is not supported; choose one of "
                          f"{', '.join(DEVICE_TARGETS)}")
    from mindspore import hal
    if not hal.is_available(device_target):  # (asking about other targets logs warnings)
        available = available_device_targets()
        raise ConfigError(f"--device_target {device_target} is not available in this MindSpore "
                          f"installation ({ms.__version__}); available here: "
                          f"{', '.join(available)}. Pass --device_target {available[0]}, or "
                          f"install the MindSpore build for {device_target}.")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        if device_target != "CPU" and os.environ.get("DEVICE_ID", "").isdigit():
            ms.set_device(device_target, int(os.environ["DEVICE_ID"]))  # rank-table launch
        else:
            ms.set_device(device_target)
    except RuntimeError:
        # The runtime already runs (an earlier call in this process, e.g. a
        # caller that runs main() twice): fine on the same device, else an error.
        if ms.get_context("device_target") != device_target:
            raise ConfigError(f"this process already runs MindSpore on "
                              f"{ms.get_context('device_target')}; start a new process for "
                              f"--device_target {device_target}") from None


def setup_logging(log_file=None, rank_id=0, rank_size=1):
    """Progress to stdout on every rank (the launcher keeps one log per rank);
    rank 0 also appends to log_file."""
    prefix = f"[rank {rank_id}] " if rank_size > 1 else ""
    formatter = logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(message)s",
                                  datefmt="%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier call (tests call main twice)
        if getattr(handler, "is_run_log", False):
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.is_run_log = True
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    # mindcv's own loggers say things like "AUTO weight decay filter" we have checked.
    logging.getLogger("mindcv").setLevel(logging.ERROR)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


# ------------------------------------------------------------------ recipe -> mindcv

def augment_args(config):
    """The recipe's augmentation keys as ``src.dataset.train_transforms`` arguments."""
    return dict(scale=tuple(config.scale), ratio=tuple(config.ratio), hflip=config.hflip,
                vflip=config.vflip, color_jitter=config.color_jitter,
                auto_augment=config.auto_augment or None, interpolation=config.interpolation,
                re_prob=config.re_prob, re_value=config.re_value)


def lr_schedule(config, steps_per_epoch):
    """Per-step learning rates of the whole run. timm_step: the official
    schedule, one lr per epoch (src/timm_recipe.py); else mindcv's
    create_scheduler: per-step linear warmup from warmup_lr, then step / cosine
    / exponential decay."""
    if config.lr_scheduler == "timm_step":
        return epoch_step_lrs(
            config.epoch_size, steps_per_epoch, lr=config.lr, warmup_epochs=config.warmup_epochs,
            warmup_lr=config.warmup_lr, decay_epochs=config.decay_epochs,
            decay_rate=config.decay_rate,
            noise_range=noise_range_epochs(config.lr_noise, config.epoch_size),
            noise_pct=config.lr_noise_pct, noise_std=config.lr_noise_std,
            noise_seed=config.lr_noise_seed)
    from mindcv.scheduler import create_scheduler
    decay_epochs = config.decay_epochs
    if config.lr_scheduler == "cosine_decay":
        decay_epochs = config.epoch_size - config.warmup_epochs  # one cosine over the rest
    # polynomial_decay (mmsegmentation's poly, power = decay_rate): mindcv's
    # decays to 0, so it runs on lr - min_lr and min_lr is added back
    # (mmsegmentation's PolyLR eta_min), every step.
    floor = config.min_lr if config.lr_scheduler == "polynomial_decay" else 0.0
    lrs = create_scheduler(steps_per_epoch, scheduler=config.lr_scheduler, lr=config.lr - floor,
                           min_lr=config.min_lr, warmup_epochs=config.warmup_epochs,
                           warmup_factor=(config.warmup_lr - floor) / (config.lr - floor),
                           decay_epochs=decay_epochs, decay_rate=config.decay_rate,
                           num_epochs=config.epoch_size)
    return [float(lr) + floor for lr in lrs]


def describe_lr_schedule(config):
    """The schedule lr_schedule follows, for train.py's start line."""
    warmup = (f", {config.warmup_epochs:g} warmup epochs from {config.warmup_lr:g}"
              if config.warmup_epochs else "")
    if config.lr_scheduler == "polynomial_decay":
        return f"polynomial_decay (power {config.decay_rate:g}) to {config.min_lr:g}{warmup}"
    if config.lr_scheduler in ("step_decay", "timm_step"):
        return (f"{config.lr_scheduler} (x{config.decay_rate:g} every "
                f"{config.decay_epochs:g} epochs){warmup}")
    if config.lr_scheduler == "exponential_decay":
        return f"exponential_decay (x{config.decay_rate:g} per epoch){warmup}"
    if config.lr_scheduler == "cosine_decay":
        return f"cosine_decay to {config.min_lr:g}{warmup}"
    return f"{config.lr_scheduler}{warmup}"


def create_optimizer(net, config, lrs):
    """mindcv optimizer; weight_decay_filter 'norm_and_bias' puts BN gamma/beta and
    all biases (the 1-D parameters of GhostNetV2) in a group without weight decay."""
    from mindcv.optim import create_optimizer as mindcv_create_optimizer
    # eps: RMSProp's (TF style: inside the square root); mindcv's AdamW keeps its own 1e-8.
    extra = {"decay": config.rmsprop_decay} if config.optimizer == "rmsprop" else {}
    return mindcv_create_optimizer(net, opt=config.optimizer, lr=lrs,
                                   weight_decay=config.weight_decay, momentum=config.momentum,
                                   nesterov=config.optimizer == "nesterov",
                                   weight_decay_filter=config.weight_decay_filter,
                                   eps=config.eps, **extra)


def effective_amp_level(config):
    """O0 on the CPU (no float16 kernels worth having there), unless
    --cpu_amp asks for the recipe's level there (to build and try the
    Ascend/GPU mixed-precision graph on a CPU)."""
    if config.device_target == "CPU" and not config.cpu_amp:
        if config.amp_level != "O0":
            _logger.info("amp_level %s -> O0: the CPU trains in float32", config.amp_level)
        return "O0"
    return config.amp_level


def loss_scale_sense(config):
    """TrainStep's scale_sense: a fixed Tensor, or mindcv's dynamic update cell
    (which skips the update of a step whose gradients overflowed)."""
    import mindspore as ms
    from mindspore.train import DynamicLossScaleManager
    if config.device_target == "CPU":
        # mindcv's TrainStep supports only a fixed scale on the CPU (the dynamic
        # one's overflow check needs NPU status operators); float32 needs none.
        if effective_amp_level(config) == "O0":
            return ms.Tensor(1.0, ms.float32)
        if config.loss_scale_type == "dynamic":
            _logger.info("loss scale: fixed %g on the CPU (dynamic needs Ascend/GPU)",
                         config.loss_scale)
        return ms.Tensor(config.loss_scale, ms.float32)
    if config.loss_scale_type == "dynamic":
        return DynamicLossScaleManager(init_loss_scale=config.loss_scale, scale_factor=2,
                                       scale_window=2000).get_update_cell()
    return ms.Tensor(config.loss_scale, ms.float32)


def create_train_step(net, config, optimizer):
    """mindcv's TrainStep: forward + loss, (scaled) gradients, all-reduce in data
    parallel, optimizer update, EMA of every parameter (saved as 'ema.<name>'),
    the EMA timm's (constant decay) unless the recipe asks for mindcv's ramp
    (ema_warmup: true)."""
    from mindcv.loss import create_loss
    from mindcv.utils.trainer_factory import add_loss_network
    amp_level = set_precision(net, config)
    loss = create_loss("CE", label_smoothing=config.label_smoothing)
    return wrap_train_step(add_loss_network(net, loss, amp_level), config, optimizer)


def wrap_train_step(net_with_loss, config, optimizer, **step_args):
    """The recipe's train step around any cell returning the loss (called with
    the dataset's columns): loss scale, EMA; step_args: mindcv TrainStep's
    other arguments (clip_grad, clip_value, ...). The kernels' workers stop
    spinning between jobs: in training MindSpore's own threads need the cores."""
    from .cpu_kernels import enabled_by_default, set_spin_wait
    if enabled_by_default():  # CPU target with the kernels: nothing to build on Ascend / GPU
        set_spin_wait(0)
    step = timm_train_step(net_with_loss, optimizer, ema_warmup=config.ema_warmup,
                           scale_sense=loss_scale_sense(config), ema=config.ema,
                           ema_decay=config.ema_decay, **step_args)
    return step.set_train()


def set_precision(net, config):
    """mindcv's auto_mixed_precision at the run's amp level; returns the level.
    Mixed precision on the CPU (--cpu_amp) runs MindSpore's operators: the
    custom CPU kernels are float32 only."""
    from mindcv.utils.amp import auto_mixed_precision
    from .cpu_kernels import use_cpu_kernels
    amp_level = effective_amp_level(config)
    if config.device_target == "CPU" and amp_level != "O0":
        use_cpu_kernels(net, False)
    auto_mixed_precision(net, amp_level)
    return amp_level


def create_eval_network(config):
    """A second network for validation (same model and precision as training),
    into which ``copy_weights`` puts the weights to score."""
    from .ghostnetv2 import create_model
    net = create_model(config.model, num_classes=config.num_classes, dropout=config.dropout)
    set_precision(net, config)
    return net


def set_global_step(optimizer, step):
    """Move the optimizer (and so the lr schedule) to ``step``."""
    import mindspore as ms
    optimizer.global_step.set_data(ms.Tensor([step], ms.int32))


def parameters_by_name(cell):
    return {p.name: p for p in cell.get_parameters()}


def copy_weights(source, target, prefer_ema=True):
    """Copy the weights of TrainStep ``source`` into network ``target`` (EMA
    copies where present and preferred); used to validate what gets saved."""
    import mindspore as ms
    params = parameters_by_name(source)
    for param in target.get_parameters():
        src = params.get(f"ema.{param.name}") if prefer_ema else None
        src = src if src is not None else params[param.name]
        param.set_data(ms.Tensor(src.asnumpy()))
