"""mindcv's own tools driving the port: mindcv.create_model called exactly as
mindcv's train.py and validate.py call it, mindcv's train.py's training (its
trainer and callbacks through Model.train, EMA, graph mode), drop_rate /
drop_path_rate with mindcv's meanings, and features_only (mindcv's
feature_info convention) at a non-square size.

(checkpoint_path= and ema=True through mindcv's loader on a checkpoint
train.py wrote: tests/test_train.py, where such a checkpoint is made anyway.)
"""
import argparse

import mindcv
import mindspore as ms
import numpy as np
import pytest
from mindcv.models.features import FeatureExtractWrapper
from mindcv.utils import create_trainer, get_metrics, require_customized_train_step

from src.fuse import fuse_bn
from src.ghostnetv2 import FeaturePyramid, GhostBottleneck, GhostNetV2, create_model
from src.train_utils import parameters_by_name


def mindcv_args(**overrides):
    """mindcv v0.3.0 config.py's defaults for the flags its train.py and
    validate.py pass to create_model (--drop_rate / --drop_path_rate default
    to None, and mindcv.create_model drops None values)."""
    defaults = dict(model="ghostnetv2_100", num_classes=None, in_channels=3, drop_rate=None,
                    drop_path_rate=None, pretrained=False, ckpt_path="", ema=False,
                    dataset_sink_mode=True)
    return argparse.Namespace(**dict(defaults, **overrides))


def create_like_mindcv_train(args, num_classes):
    # mindcv v0.3.0 train.py, main():
    #     network = create_model(
    #         model_name=args.model,
    #         num_classes=num_classes,
    #         in_channels=args.in_channels,
    #         drop_rate=args.drop_rate,
    #         drop_path_rate=args.drop_path_rate,
    #         pretrained=args.pretrained,
    #         checkpoint_path=args.ckpt_path,
    #         ema=args.ema,
    #     )
    return mindcv.create_model(model_name=args.model, num_classes=num_classes,
                               in_channels=args.in_channels, drop_rate=args.drop_rate,
                               drop_path_rate=args.drop_path_rate, pretrained=args.pretrained,
                               checkpoint_path=args.ckpt_path, ema=args.ema)


def create_like_mindcv_validate(args, num_classes):
    # mindcv validate.py, validate():
    #     network = create_model(model_name=args.model,
    #                            num_classes=num_classes,
    #                            drop_rate=args.drop_rate,
    #                            drop_path_rate=args.drop_path_rate,
    #                            pretrained=args.pretrained,
    #                            checkpoint_path=args.ckpt_path)
    #     network.set_train(False)
    network = mindcv.create_model(model_name=args.model, num_classes=num_classes,
                                  drop_rate=args.drop_rate, drop_path_rate=args.drop_path_rate,
                                  pretrained=args.pretrained, checkpoint_path=args.ckpt_path)
    network.set_train(False)
    return network


def drop_path_rates(net):
    return {name: cell.drop_path.keep_prob for name, cell in net.cells_and_names()
            if isinstance(cell, GhostBottleneck) and cell.drop_path is not None}


@pytest.fixture
def pynative():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def test_mindcv_defaults_and_drop_flags(pynative):
    """The defaults (all None: dropped) build the paper's network; --drop_rate
    is the classifier dropout; --drop_path_rate stochastic depth rising over
    the 16 bottlenecks (timm's EfficientNet rule: rate * i / 16)."""
    net = create_like_mindcv_validate(mindcv_args(), num_classes=10)
    assert isinstance(net, GhostNetV2) and net.dropout.p == pytest.approx(0.2)
    assert not drop_path_rates(net)
    net = create_like_mindcv_train(mindcv_args(drop_rate=0.3, drop_path_rate=0.16), 10)
    assert net.dropout.p == pytest.approx(0.3)
    keep = drop_path_rates(net)
    assert len(keep) == 15  # bottleneck 0 gets rate 0: no DropPath cell at all
    assert keep["blocks.1.0"] == pytest.approx(1 - 0.16 * 1 / 16)
    assert keep["blocks.8.3"] == pytest.approx(1 - 0.16 * 15 / 16)
    # the same value under both names is fine, two values are not
    assert GhostNetV2(dropout=0.1, drop_rate=0.1).dropout.p == pytest.approx(0.1)
    with pytest.raises(ValueError, match="pass only one of them"):
        GhostNetV2(dropout=0.1, drop_rate=0.3)
    with pytest.raises(ValueError, match=r"drop_path_rate must be in \[0, 1\), got 1.5"):
        mindcv.create_model("ghostnetv2_100", drop_path_rate=1.5)


def test_drop_path_is_per_sample_in_training_and_identity_in_eval(pynative):
    """A bottleneck with drop path equals the plain (fused-residual) one in
    evaluation; in training each sample gets either the shortcut alone or the
    shortcut plus the branch scaled by 1 / keep."""
    ms.set_seed(0)
    plain = GhostBottleneck(16, 48, 16)
    dropping = GhostBottleneck(16, 48, 16, drop_path=0.5)
    ms.load_param_into_net(dropping, parameters_by_name(plain), strict_load=True)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((16, 16, 8, 8), dtype=np.float32))
    plain.set_train(False)
    dropping.set_train(False)
    branch = plain(x).asnumpy() - x.asnumpy()
    np.testing.assert_allclose(dropping(x).asnumpy(), plain(x).asnumpy(), rtol=1e-6, atol=1e-6)
    # training mode with the BatchNorm layers still in eval mode (same branch values)
    dropping.drop_path.set_train(True)
    out = dropping(x).asnumpy() - x.asnumpy()
    kept = [np.allclose(o, 2 * b, rtol=1e-4, atol=1e-4) for o, b in zip(out, branch)]
    dropped = [np.allclose(o, 0, atol=1e-6) for o in out]
    assert all(k != d for k, d in zip(kept, dropped))  # every sample is one or the other
    assert 0 < sum(dropped) < len(dropped)


def test_features_only_at_a_non_square_size(pynative):
    """features_only=True through mindcv.create_model: the maps at out_indices,
    channels and strides as feature_info says, at 64x96; the same maps as
    mindcv's own FeatureExtractWrapper builds from feature_info; BatchNorm
    folding leaves them unchanged."""
    height, width = 64, 96
    backbone = mindcv.create_model("ghostnetv2_130", features_only=True, out_indices=[0, 2, 4])
    assert isinstance(backbone, FeaturePyramid)
    info = backbone.net.feature_info
    assert [f["reduction"] for f in info] == [2, 4, 8, 16, 32]
    assert [f["chs"] for f in info] == [20, 32, 52, 144, 1248]  # make_divisible(c * 1.3)
    assert backbone.feature_info == [info[0], info[2], info[4]]
    assert backbone.out_channels == [20, 52, 1248]
    backbone.set_train(False)
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 3, height, width),
                                                            dtype=np.float32))
    features = backbone(x)
    assert [tuple(f.shape) for f in features] == [
        (2, chs, -(-height // f["reduction"]), -(-width // f["reduction"]))
        for chs, f in zip(backbone.out_channels, backbone.feature_info)]
    # feature_info's names are where mindcv's wrapper finds the same maps
    theirs = FeatureExtractWrapper(backbone.net, out_indices=[0, 2, 4])
    theirs.set_train(False)
    for ours, expected in zip(features, theirs(x)):
        np.testing.assert_array_equal(ours.asnumpy(), expected.asnumpy())
    fused = fuse_bn(backbone)(x)
    for ours, folded in zip(features, fused):
        np.testing.assert_allclose(folded.asnumpy(), ours.asnumpy(), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"out_indices must be increasing indices of "
                                         r"feature_info \(0-4: strides 2, 4, 8, 16, 32\)"):
        create_model("ghostnetv2_100", features_only=True, out_indices=[1, 5])


def write_folder(root, classes=2, per_class=4, size=64):
    """root/{train,val}/<class>/<n>.png: mindcv's ImageNet layout."""
    from PIL import Image
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def mindcv_train_py(args, data_dir, save_dir, num_classes):
    """mindcv v0.3.0 train.py's main(), call for call (no distribution), for
    the flags its config.py gives here; returns (trainer, StateMonitor, the
    training loader, the network)."""
    from mindcv.data import create_dataset, create_loader, create_transforms
    from mindcv.utils import StateMonitor
    dataset_train = create_dataset(name="imagenet", root=str(data_dir), split="train",
                                   shuffle=True, num_parallel_workers=1)
    transforms = create_transforms(dataset_name="imagenet", is_training=True, image_resize=64)
    loader_train = create_loader(dataset=dataset_train, batch_size=2, drop_remainder=True,
                                 is_training=True, num_classes=num_classes, transform=transforms,
                                 num_parallel_workers=1)
    dataset_eval = create_dataset(name="imagenet", root=str(data_dir), split="val",
                                  num_parallel_workers=1)
    loader_eval = create_loader(dataset=dataset_eval, batch_size=2, drop_remainder=False,
                                is_training=False, num_parallel_workers=1,
                                transform=create_transforms(dataset_name="imagenet",
                                                            is_training=False, image_resize=64))
    network = create_like_mindcv_train(args, num_classes)
    loss = mindcv.create_loss(name="CE", reduction="mean", label_smoothing=0.1, aux_factor=0.0)
    # lrs for 2 epochs: the test trains twice (the default sink mode's failed
    # run takes a step, the second run's 4 steps follow it on the same optimizer)
    lr = mindcv.create_scheduler(loader_train.get_dataset_size(), scheduler="cosine_decay",
                                 lr=0.01, min_lr=1e-6, warmup_epochs=0, num_epochs=2)
    optimizer = mindcv.create_optimizer(network, opt="momentum", lr=lr, weight_decay=1e-5,
                                        momentum=0.9, weight_decay_filter="auto", loss_scale=1.0)
    metrics = get_metrics(num_classes)
    assert require_customized_train_step(args.ema, False, 1, None)  # mindcv's TrainStep
    trainer = create_trainer(network, loss, optimizer, metrics, amp_level="O0",
                             amp_cast_list=None, loss_scale_type="fixed", loss_scale=1.0,
                             drop_overflow_update=False, ema=args.ema, ema_decay=0.9999)
    monitor = StateMonitor(trainer, model_name=args.model, model_ema=args.ema,
                           dataset_sink_mode=args.dataset_sink_mode, dataset_val=loader_eval,
                           metric_name=list(metrics.keys()), ckpt_save_dir=str(save_dir),
                           ckpt_save_policy="latest_k", summary_dir=str(save_dir / "summary"),
                           log_interval=1)
    return trainer, monitor, loader_train, network


def test_mindcvs_train_py_with_ema_in_graph_mode(tmp_path, graph_mode):
    """mindcv's train.py as a new user runs it on the pinned versions:
    --model ghostnetv2_100 --drop_rate 0.2 --drop_path_rate 0.1 --ema
    --val_while_train, GRAPH_MODE (its --mode default), 1 epoch of 4 steps:
    its data pipeline, create_trainer (TrainStep with EMA) and StateMonitor
    through Model.train.

    With its default --dataset_sink_mode True it stops at the first logged
    step: on the CPU MindSpore trains without sinking, and StateMonitor then
    looks for the optimizer on the wrong cell (AttributeError: 'WithLossCell'
    object has no attribute 'optimizer'; mindcv's own models alike). With
    --dataset_sink_mode False the same run trains, validates with the EMA
    weights and saves (README: which mindcv flags work). One compile: the
    second Model.train reuses the first's graph."""
    write_folder(tmp_path / "data")
    args = mindcv_args(drop_rate=0.2, drop_path_rate=0.1, ema=True, dataset_sink_mode=True)
    trainer, monitor, loader, network = mindcv_train_py(args, tmp_path / "data",
                                                        tmp_path / "ckpt", 2)
    assert isinstance(network, GhostNetV2)
    before = parameters_by_name(network)["blocks.8.3.ghost2.primary_conv.0.weight"].asnumpy().copy()
    with pytest.raises(AttributeError, match="'WithLossCell' object has no attribute 'optimizer'"):
        trainer.train(1, loader, callbacks=[monitor], dataset_sink_mode=args.dataset_sink_mode)

    args.dataset_sink_mode = False
    _, monitor, _, _ = mindcv_train_py(args, tmp_path / "data", tmp_path / "ckpt", 2)
    monitor.model = trainer  # the same Model: its compiled graph is reused
    monitor.online_params = ms.ParameterTuple(trainer.train_network.get_parameters())
    monitor.swap_params = monitor.online_params.clone("swap", "zeros")
    trainer.train(1, loader, callbacks=[monitor], dataset_sink_mode=args.dataset_sink_mode)
    after = parameters_by_name(network)["blocks.8.3.ghost2.primary_conv.0.weight"].asnumpy()
    assert np.abs(after - before).max() > 0
    rows = (tmp_path / "ckpt" / "result.log").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split()[0] == "1", rows  # header + epoch 1 (with val top-1)
    saved = ms.load_checkpoint(str(tmp_path / "ckpt" / "ghostnetv2_100-1_4.ckpt"))
    assert "ema.blocks.8.3.ghost2.primary_conv.0.weight" in saved
    assert np.isfinite(saved["blocks.8.3.ghost2.primary_conv.0.weight"].asnumpy()).all()
