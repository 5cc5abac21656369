"""Training parity with the official recipe: the port's own train step, built
by src/train_utils from the ImageNet recipe, against timm's RMSpropTF +
StepLRScheduler + LabelSmoothingCrossEntropy + ModelEma doing the same steps.

Same weights (a realistic timm model saved like the official release and
loaded into the port), the same batches of real photographs, dropout off, no
augmentation. Tiny epochs (STEPS_PER_EPOCH) put the end of the warmup, a decay
boundary and lr noise inside the STEPS compared. At every step: the lr, the
loss, the parameter updates, BatchNorm running statistics and the EMA.

Each timm-side break (EMA ramp, per-step warmup, squares starting at 0) is run
against the same port trajectory (no extra compile) and must fail.
"""
import copy
import math

import numpy as np
import pytest

from reference import official_checkpoint, photos, realistic_timm_model
from src.model_utils.config import Config

STEPS_PER_EPOCH = 2
EPOCHS = 2
BATCH, SIZE = 4, (64, 64)
# Recipe keys changed for the test, each for a reason:
OVERRIDES = (
    "--lr", "1e-4",            # REFERENCE section 9: large steps make float32 noise chaotic
    "--warmup_lr", "1e-5",     # warmup updates well above float32 rounding of the weights
    "--warmup_epochs", "1",    # the warmup ends inside the steps (epoch 0 -> 1)
    "--decay_epochs", "0.8",   # a decay boundary in epoch 1, counted from epoch 0 (not 1)
    "--lr_noise", "[0.5, 1.0]",  # timm's lr noise in epoch 1
    "--epoch_size", str(EPOCHS),
    "--ema_decay", "0.9",      # at 0.9999 four steps move the EMA below float32 resolution
    "--dropout", "0.0",
    "--device_target", "CPU",
)
# Relative L2 differences allowed (port vs timm, of the change since the start,
# over all tensors of a kind). float32 noise is large here: BatchNorm over a
# batch of 4 at 2x2 pixels in the last stages makes the gradient ill-conditioned
# (timm float32 vs timm float64, one step at width 1.3: 1.1% on the weights'
# gradient), and it grows with the steps. Measured port vs timm (CPU kernels
# on; off: the same at 1.3x), worst of 4 steps, widths 1.0 / 1.3: update
# 0.2-0.3% / 4.8-5.0%, EMA 4.6% / 4.1% (its first step moves weights by a few float32
# ulps), BN statistics 5e-6 / 5.4e-4, their EMA 9e-6 / 2.5e-4, loss 4e-5 /
# 6.8e-4, lr 0. The limits are 3-6x those. The breaks land outside
# (measured, width 1.0): EMA ramp: EMA 0.90, its BN statistics 0.90;
# per-step warmup: lr 0.82, update 0.78; squares starting at 0: update 0.93,
# loss 0.015. The BN statistics pin the momentum convention (MindSpore 0.9 =
# PyTorch 0.1): timm's BatchNorm left at momentum None (weight 1/3) gave 0.70.
# Per width: at 1.0x the float32 noise is small, so the limits are tight there
# (a wrong weight decay, though, moves a 4-step trajectory less than that
# noise: timm with decay off differs from timm with the recipe's 1e-5 by
# 0.025% of the update, and by 0.76% even at 1e-3, as much as port vs timm
# measured there. test_weight_decay_equals_timms checks the decay itself.)
TOLERANCE = {
    "ghostnetv2_100": {"lr": 1e-6, "loss": 2e-4, "update": 0.01, "bn": 3e-5, "ema": 0.15,
                       "ema_bn": 5e-5},
    "ghostnetv2_130": {"lr": 1e-6, "loss": 2e-3, "update": 0.15, "bn": 2e-3, "ema": 0.15,
                       "ema_bn": 1e-3},
}
# The trajectory runs at width 1.0 only: the training code is the same at
# every width, and 1.0 is where float32 noise allows tight limits (at 1.3 the
# update limit had to be 15%, too loose to catch much, for ~1 minute of the
# suite's 20). The 1.3 limits stay for a by-hand run (add it here). Every
# width's recipe is checked against the official command above.
WIDTHS = ("ghostnetv2_100",)


def recipe(name, overrides=OVERRIDES):
    import train
    return train.parse_config(["--config_path", f"config/{name}_imagenet.yaml",
                               "--data_path", "unused", *overrides])


def batches():
    """Two batches of photographs, alternating, with fixed labels."""
    images = photos(2 * BATCH, SIZE)
    labels = np.random.default_rng(0).integers(0, 1000, 2 * BATCH).astype(np.int32)
    return [(images[i * BATCH:(i + 1) * BATCH], labels[i * BATCH:(i + 1) * BATCH])
            for i in range(2)]


def snapshot(named_arrays, lr, loss):
    return {"lr": lr, "loss": loss, "tensors": named_arrays}


# ------------------------------------------------------------------ the port

def port_trajectory(config, checkpoint):
    import mindspore as ms
    from src.ghostnetv2 import create_model
    from src.train_utils import create_optimizer, create_train_step, lr_schedule
    from src.weights import load_weights
    net = create_model(config.model, num_classes=config.num_classes, dropout=config.dropout)
    load_weights(net, checkpoint)
    lrs = lr_schedule(config, STEPS_PER_EPOCH)
    optimizer = create_optimizer(net, config, lrs)
    step = create_train_step(net, config, optimizer)
    no_decay = {p.name for p, decays in zip(optimizer._parameters, optimizer.decay_flags)
                if not decays}
    data = batches()
    states = [snapshot(tensors_of(step), None, None)]
    for k in range(STEPS_PER_EPOCH * EPOCHS):
        images, labels = data[k % 2]
        loss = float(step(ms.Tensor(images), ms.Tensor(labels)).asnumpy())
        states.append(snapshot(tensors_of(step), lrs[k], loss))
    return states, no_decay


def tensors_of(train_step):
    """The network's parameters and BN statistics, and their 'ema.' copies."""
    return {p.name: p.asnumpy().copy() for p in train_step.get_parameters()
            if not p.name.startswith(("moment", "mean_square", "global_step", "learning_rate",
                                      "scale_sense", "updates"))}


# ------------------------------------------------------------------ timm

def timm_trajectory(config, model, break_=None, per_step_lrs=None, steps=STEPS_PER_EPOCH * EPOCHS):
    """The official train.py's steps (its scheduler driven per epoch, ModelEma
    updated after every step); ``break_`` changes one thing on purpose."""
    import torch
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import StepLRScheduler
    from timm.utils import ModelEmaV3
    from src.timm_recipe import noise_range_epochs
    model.drop_rate = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            # realistic_timm_model left None (a cumulative average, for its
            # calibration); the official model trains with PyTorch's default.
            module.momentum = 0.1
    model.train()
    optimizer = create_optimizer_v2(model, opt="rmsproptf", lr=config.lr, eps=config.eps,
                                    momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = StepLRScheduler(
        optimizer, decay_t=config.decay_epochs, decay_rate=config.decay_rate,
        warmup_t=config.warmup_epochs, warmup_lr_init=config.warmup_lr, warmup_prefix=False,
        noise_range_t=noise_range_epochs(config.lr_noise, config.epoch_size),
        noise_pct=config.lr_noise_pct, noise_std=config.lr_noise_std,
        noise_seed=config.lr_noise_seed)
    if break_ == "squares start at 0":
        for group in optimizer.param_groups:
            for p in group["params"]:
                optimizer.state[p] = {"step": torch.tensor(0.0),
                                      "square_avg": torch.zeros_like(p),
                                      "momentum_buffer": torch.zeros_like(p)}
    ema = ModelEmaV3(model, decay=config.ema_decay)
    loss_fn = LabelSmoothingCrossEntropy(smoothing=config.label_smoothing)
    data = batches()
    states = [snapshot(timm_tensors(model, ema), None, None)]
    for k in range(steps):
        epoch = k // STEPS_PER_EPOCH
        if k % STEPS_PER_EPOCH == 0 and epoch > 0:
            scheduler.step(epoch)
        if break_ == "per-step warmup":
            for group in optimizer.param_groups:
                group["lr"] = per_step_lrs[k]
        images, labels = data[k % 2]
        loss = loss_fn(model(torch.from_numpy(images)), torch.from_numpy(labels).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if break_ == "EMA ramp":  # mindcv's TrainStep: decay x (1 - exp(-updates / 2000))
            ema.apply_update_(model, config.ema_decay * (1 - math.exp(-(k + 1) / 2000)))
        else:
            ema.update(model)  # no step: constant decay from the first update
        states.append(snapshot(timm_tensors(model, ema), optimizer.param_groups[0]["lr"],
                               float(loss)))
    return states


def timm_tensors(model, ema):
    from src.weights import torch_to_mindspore
    tensors = torch_to_mindspore({k: v.detach().numpy().copy()
                                  for k, v in model.state_dict().items()})
    ema_tensors = torch_to_mindspore({k: v.detach().numpy().copy()
                                      for k, v in ema.module.state_dict().items()})
    tensors.update({f"ema.{k}": v for k, v in ema_tensors.items()})
    return tensors


# ------------------------------------------------------------------ comparison

def kind(name):
    """update (trainable weights), bn (running statistics), ema, ema_bn."""
    prefix = "ema" if name.startswith("ema.") else ""
    if name.endswith(("moving_mean", "moving_variance")):
        return f"{prefix}_bn" if prefix else "bn"
    return prefix or "update"


def compare(port, timm):
    """Per step: relative differences of the lr, the loss and, per kind of
    tensor, of the change since the start (L2 over all tensors of that kind)."""
    start_port, start_timm = port[0]["tensors"], timm[0]["tensors"]
    results = []
    for p, t in zip(port[1:], timm[1:]):
        result = {"lr": abs(p["lr"] - t["lr"]) / t["lr"],
                  "loss": abs(p["loss"] - t["loss"]) / abs(t["loss"])}
        diff, norm = {}, {}
        for name, value in t["tensors"].items():
            change_timm = value - start_timm[name]
            change_port = p["tensors"][name] - start_port[name]
            key = kind(name)
            diff[key] = diff.get(key, 0.0) + float(np.sum((change_port - change_timm) ** 2))
            norm[key] = norm.get(key, 0.0) + float(np.sum(change_timm ** 2))
        result.update({key: math.sqrt(diff[key] / norm[key]) for key in diff})
        results.append(result)
    return results


def worst(results):
    return {key: max(r[key] for r in results) for key in results[0]}


def outside(results, name):
    return {key: value for key, value in worst(results).items() if value > TOLERANCE[name][key]}


def test_whole_schedule_equals_timms():
    """All 450 epochs of the 1.0x recipe, lr noise included, against timm's
    StepLRScheduler as the official train.py steps it (once per epoch)."""
    import torch
    from timm.scheduler import StepLRScheduler
    from src.train_utils import lr_schedule
    config = recipe("ghostnetv2_100", overrides=())
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = StepLRScheduler(
        optimizer, decay_t=config.decay_epochs, decay_rate=config.decay_rate,
        warmup_t=config.warmup_epochs, warmup_lr_init=config.warmup_lr, warmup_prefix=False,
        noise_range_t=[0.42 * 450, 0.9 * 450], noise_pct=0.67, noise_std=1.0, noise_seed=42)
    expected = []
    for epoch in range(config.epoch_size):
        if epoch:
            scheduler.step(epoch)
        expected += [optimizer.param_groups[0]["lr"]] * 3
    assert lr_schedule(config, steps_per_epoch=3) == expected


# The official command (GhostNetV2 PyTorch release README: timm's train.py on
# 8 GPUs x 128 images), written out here rather than read from the recipes,
# so that a recipe drifting from it fails. (The parity runs below take their
# values from the recipe under test, so they could not notice.)
OFFICIAL_COMMAND = dict(
    epoch_size=450, batch_size=128, optimizer="rmsprop", eps=1e-3, momentum=0.9,
    rmsprop_decay=0.9, weight_decay=1e-5, lr_scheduler="timm_step", decay_epochs=2.4,
    decay_rate=0.973, warmup_epochs=3, warmup_lr=1e-6, lr_noise=[0.42, 0.9], lr_noise_pct=0.67,
    lr_noise_std=1.0, lr_noise_seed=42, ema=True, ema_decay=0.9999, ema_warmup=False,
    dropout=0.2, label_smoothing=0.1, auto_augment="randaug-m9-mstd0.5", re_prob=0.2,
    re_value="random", color_jitter=0.4, hflip=0.5, vflip=0.0, scale=[0.08, 1.0],
    ratio=[0.75, 1.333], interpolation="bicubic", image_size=224, num_classes=1000)
OFFICIAL_LR, OFFICIAL_GLOBAL_BATCH, OFFICIAL_DEVICES = 0.064, 1024, 8


@pytest.mark.parametrize("name", ["ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160"])
def test_imagenet_recipes_are_the_official_command(name):
    config = recipe(name, overrides=())
    assert config.model == name
    assert {key: getattr(config, key) for key in OFFICIAL_COMMAND} == OFFICIAL_COMMAND
    # lr per global batch: the recipe's batch on the 8 devices its header names
    assert config.batch_size * OFFICIAL_DEVICES == OFFICIAL_GLOBAL_BATCH
    assert config.lr == pytest.approx(OFFICIAL_LR * config.batch_size * OFFICIAL_DEVICES
                                      / OFFICIAL_GLOBAL_BATCH, rel=1e-12)


@pytest.fixture(scope="module", params=WIDTHS)
def runs(request, tmp_path_factory, graph_mode):
    name = request.param
    config = recipe(name)
    reference = realistic_timm_model(name)
    checkpoint = official_checkpoint(
        reference, str(tmp_path_factory.mktemp(name) / f"{name}_official.pth.tar"))
    port, no_decay = port_trajectory(config, checkpoint)
    initial = copy.deepcopy(reference)
    return dict(name=name, config=config, initial=initial, port=port, no_decay=no_decay,
                timm=timm_trajectory(config, reference))


def test_recipe_is_the_official_one(runs):
    config = runs["config"]
    assert (config.lr_scheduler, config.optimizer, config.ema, config.ema_warmup) == \
        ("timm_step", "rmsprop", True, False)
    assert config.label_smoothing == 0.1 and config.eps == 1e-3


def test_no_weight_decay_on_bn_and_biases(runs):
    """timm's param_groups_weight_decay: no decay for 1-D parameters and biases."""
    one_dimensional = {name for name, value in runs["port"][0]["tensors"].items()
                       if kind(name) == "update" and (value.ndim <= 1 or name.endswith(".bias"))}
    assert runs["no_decay"] == one_dimensional


def test_training_steps_match_timm(runs):
    results = compare(runs["port"], runs["timm"])
    print(f"\n{runs['name']} port vs timm, worst over {len(results)} steps: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst(results).items()))
    assert not outside(results, runs["name"]), (
        f"{runs['name']}: outside tolerance {TOLERANCE[runs['name']]}: "
        f"{outside(results, runs['name'])}; per step: {results}")
    lrs = [state["lr"] for state in runs["timm"][1:]]
    config = runs["config"]
    assert lrs[0] == config.warmup_lr and lrs[-1] not in (config.lr, config.lr * config.decay_rate), \
        f"warmup, decay and noise must all fall inside the steps: {lrs}"


@pytest.mark.parametrize("break_", ["EMA ramp", "per-step warmup", "squares start at 0"])
def test_each_break_is_caught(runs, break_):
    from src.train_utils import lr_schedule
    if runs["name"] != WIDTHS[0]:
        pytest.skip("the breaks do not depend on the width: each is one timm run at the first")
    config = runs["config"]
    per_step = None
    if break_ == "per-step warmup":  # mindcv's step_decay: per-step warmup, decay after it
        per_step = lr_schedule(Config(config, lr_scheduler="step_decay", lr_noise=[]),
                               STEPS_PER_EPOCH)
    # two steps show each break (the second step of the warmup epoch shows the per-step lr)
    broken = timm_trajectory(config, copy.deepcopy(runs["initial"]), break_, per_step, steps=2)
    failures = outside(compare(runs["port"], broken), runs["name"])
    print(f"\n{runs['name']} against timm with {break_}: {failures}")
    assert failures, f"{break_} went unnoticed"


def optimizer_steps(decay_weight, decoupled=False, steps=3):
    """The port's optimizer (create_optimizer from the 1.0x recipe, weight decay
    --weight_decay 0.1) and timm's RMSpropTF on the same parameters (a conv
    weight that decays, a bias and a BN gamma that must not), given the same
    gradients: both parameter sets after ``steps`` updates."""
    import mindspore as ms
    import torch
    from mindspore import nn
    from timm.optim import RMSpropTF
    from src.train_utils import create_optimizer
    config = recipe("ghostnetv2_100", overrides=("--weight_decay", "0.1", "--lr", "0.01",
                                                 "--device_target", "CPU"))
    net = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=True), nn.BatchNorm2d(4)])
    optimizer = create_optimizer(net, config, [config.lr] * steps)
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) * 0.01 for p in optimizer._parameters]
             for _ in range(steps)]
    theirs = [torch.nn.Parameter(torch.from_numpy(p.asnumpy().copy()))
              for p in optimizer._parameters]
    groups = [{"params": [p], "weight_decay": decay_weight if p.ndim > 1 else 0.0}
              for p in theirs]
    timm_optimizer = RMSpropTF(groups, lr=config.lr, alpha=config.rmsprop_decay, eps=config.eps,
                               momentum=config.momentum, decoupled_decay=decoupled)
    for step_grads in grads:
        optimizer(tuple(ms.Tensor(g) for g in step_grads))
        for p, g in zip(theirs, step_grads):
            p.grad = torch.from_numpy(g)
        timm_optimizer.step()
    return ({p.name: p.asnumpy() for p in optimizer._parameters},
            {p.name: t.detach().numpy() for p, t in zip(optimizer._parameters, theirs)})


@pytest.mark.parametrize("decay_weight, decoupled, equal", [
    (0.1, False, True),     # the official: coupled decay inside the RMS, not on BN and biases
    (0.0, False, False),    # break: weight decay off
    (0.05, False, False),   # break: another value
    (0.1, True, False),     # break: decoupled (AdamW-like) decay
])
def test_weight_decay_equals_timms(decay_weight, decoupled, equal):
    """The decay the 4-step parity cannot see: the port's optimizer against
    timm's RMSpropTF with a weight decay large enough to dominate the update
    (zero-mean gradients of 0.01, decay 0.1 x weights); equal within float32
    rounding, and each wrong decay (on the timm side) far outside it."""
    ours, theirs = optimizer_steps(decay_weight, decoupled)
    worst_error = max(float(np.abs(ours[k] - theirs[k]).max() / np.abs(theirs[k]).max())
                      for k in ours)
    assert (worst_error < 1e-5) == equal, worst_error
