"""The two pieces of the official training recipe that mindcv does differently.

The official GhostNetV2 weights were trained with timm's train.py (the
PyTorch release's copy of it, ``--sched step --lr-noise 0.42 0.9 --model-ema``).
mindcv already matches the rest (TF-style RMSProp with the squares starting at
1, weight decay added to the gradient, label smoothing); these two it does not:

- ``epoch_step_lrs``: timm's StepLRScheduler as train.py drives it
  (``t_in_epochs``): one lr per epoch, set from the epoch index: linear warmup
  from ``warmup_lr``, then ``lr * decay_rate ** (epoch // decay_epochs)``
  counted from epoch 0, times (1 + noise) inside the noise range. mindcv's
  ``step_decay`` warms up per step and counts the decay from the warmup's end.
- ``TrainStep``: an EMA with a constant decay from the first update (timm's
  ModelEma); mindcv's ramps the decay by ``1 - exp(-updates / 2000)``, so its
  EMA copies the model for the first thousands of steps.
"""
import math

import numpy as np


def torch_randn_stream(seed):
    """The values successive ``torch.randn(1, generator=g).item()`` calls return
    after ``g.manual_seed(seed)`` on the CPU (timm draws its lr noise so), here
    without torch: torch's mt19937, 53-bit uniforms from two 32-bit words and a
    Box-Muller pair whose second value is cached for the next call."""
    bits = np.random.MT19937(0)
    bits._legacy_seeding(seed)  # mt19937 init_genrand(seed), as torch's manual_seed

    def uniform():
        high, low = (int(word) for word in bits.random_raw(2))
        return (((high << 32) | low) & ((1 << 53) - 1)) * 2.0 ** -53

    while True:
        u1, u2 = uniform(), uniform()
        radius, theta = math.sqrt(-2.0 * math.log1p(-u2)), 2.0 * math.pi * u1
        # randn(1) gives a float32 tensor; .item() widens the rounded value
        yield float(np.float32(radius * math.cos(theta)))
        yield float(np.float32(radius * math.sin(theta)))


def lr_noise(epoch, seed, pct, std):
    """timm Scheduler._calculate_noise (normal type): a draw from a generator
    seeded with seed + epoch, redrawn until |noise| < pct; so the noise of an
    epoch depends on nothing else (reproducible, and resumable)."""
    draws = torch_randn_stream(seed + epoch)
    while True:
        noise = next(draws) * std
        if abs(noise) < pct:
            return noise


def in_noise_range(epoch, noise_range):
    """timm Scheduler._is_apply_noise: [start, end) epochs, or from start on."""
    if not noise_range:
        return False
    if len(noise_range) == 1:
        return epoch >= noise_range[0]
    return noise_range[0] <= epoch < noise_range[1]


def epoch_lr(epoch, lr, warmup_epochs, warmup_lr, decay_epochs, decay_rate,
             noise_range=(), noise_pct=0.67, noise_std=1.0, noise_seed=42):
    """timm StepLRScheduler._get_lr(epoch) plus _add_noise (warmup_prefix off,
    as in the official command), written with the same float operations."""
    if epoch < warmup_epochs:
        value = warmup_lr + epoch * ((lr - warmup_lr) / warmup_epochs)
    else:
        value = lr * (decay_rate ** (epoch // decay_epochs))
    if in_noise_range(epoch, noise_range):
        value = value + value * lr_noise(epoch, noise_seed, noise_pct, noise_std)
    return value


def epoch_step_lrs(num_epochs, steps_per_epoch, **schedule):
    """Per-step lrs (what the optimizer takes) constant within each epoch;
    ``schedule``: epoch_lr's keyword arguments."""
    lrs = []
    for epoch in range(num_epochs):
        lrs += [epoch_lr(epoch, **schedule)] * steps_per_epoch
    return lrs


def noise_range_epochs(lr_noise_fractions, num_epochs):
    """timm's --lr-noise: fractions of the run -> epochs (one value: from there on)."""
    return [fraction * num_epochs for fraction in lr_noise_fractions]


def _train_step_class():
    # built on first use: importing this module must not start MindSpore
    from mindspore import Tensor, float32
    from mindspore.ops import functional as F
    from mindcv.utils.train_step import TrainStep as MindcvTrainStep
    from mindcv.utils.train_step import _ema_op

    class TrainStep(MindcvTrainStep):
        """mindcv's TrainStep with timm's EMA unless ``ema_warmup``: constant
        decay from the first update. Like timm's it averages every parameter of
        the network, BatchNorm moving mean and variance included, and starts
        from the network's weights when the step is built (pretrained ones too)."""

        def __init__(self, *args, ema_warmup=False, **kwargs):
            super().__init__(*args, **kwargs)
            self.ema_warmup = ema_warmup
            self.constant_decay = Tensor(self.ema_decay, float32)

        def ema_update(self):
            if self.ema_warmup:  # a Python bool: resolved when the graph compiles
                return super().ema_update()
            self.updates += 1
            return self.hyper_map(F.partial(_ema_op, self.constant_decay), self.ema_weight,
                                  self.weights_all)

    return TrainStep


def create_train_step(network_with_loss, optimizer, ema_warmup=False, **kwargs):
    """A TrainStep (mindcv's arguments: scale_sense, ema, ema_decay, ...)."""
    return _train_step_class()(network_with_loss, optimizer, ema_warmup=ema_warmup, **kwargs)
