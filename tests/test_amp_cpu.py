"""The ImageNet recipes' mixed-precision training path (amp_level O2, loss
scaling), which Ascend runs, built and trained on the CPU with --cpu_amp: the
custom CPU kernels off (float32 only), the loss scale fixed (the dynamic one
needs NPU status operators on the CPU), a few steps with the loss falling."""
import math

import numpy as np

from reference import photos

STEPS = 4


def test_o2_training_runs_on_the_cpu(graph_mode):
    import mindspore as ms
    import train
    from src.cpu_kernels import count_kernel_layers
    from src.ghostnetv2 import create_model
    from src.train_utils import create_optimizer, create_train_step, lr_schedule
    config = train.parse_config([
        "--config_path", "config/ghostnetv2_100_imagenet.yaml", "--data_path", "unused",
        "--device_target", "CPU", "--cpu_amp", "true", "--num_classes", "10",
        "--dropout", "0.0", "--lr", "0.01", "--warmup_epochs", "0", "--lr_noise", "[]",
        "--epoch_size", str(STEPS)])
    assert (config.amp_level, config.loss_scale_type) == ("O2", "dynamic")  # the recipe's
    net = create_model(config.model, num_classes=config.num_classes, dropout=config.dropout)
    optimizer = create_optimizer(net, config, lr_schedule(config, steps_per_epoch=1))
    step = create_train_step(net, config, optimizer)
    assert net.get_flags().get("fp16"), "O2 did not put the network in float16"
    assert count_kernel_layers(net) == 0
    assert float(step.scale_sense.asnumpy()) == config.loss_scale
    images = ms.Tensor(photos(4, (64, 64)))
    labels = ms.Tensor(np.arange(4, dtype=np.int32))
    losses = [float(step(images, labels).asnumpy()) for _ in range(STEPS)]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0], f"the loss did not fall over {STEPS} O2 steps: {losses}"
