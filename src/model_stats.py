"""Parameters and MACs of the GhostNetV2 models, counted on the MindSpore network.

    python -m src.model_stats [--models ghostnetv2_100 ...] [--image_size 224]

Parameters: trainable ones (BatchNorm moving statistics excluded), as the
paper counts them. MACs: multiply-adds of the convolutions and the
classifier only (the paper's "FLOPs"), for one image; measured with forward
hooks in PyNative mode, so every layer's real output size is used:

    conv:  out_h * out_w * out_channels * in_channels / groups * k_h * k_w
    dense: in_features * out_features
"""
import argparse
import sys

import numpy as np

from .ghostnetv2 import create_model, list_models

# REFERENCE section 1 (paper), for the printed comparison only.
PAPER = {"ghostnetv2_100": ("6.16M", "167.0M"), "ghostnetv2_1x": ("6.16M", "167.0M"),
         "ghostnetv2_130": ("8.96M", "269.3M"), "ghostnetv2_160": ("12.39M", "398.6M"),
         "ghostnet_100": ("5.18M", "141.2M")}
DEFAULT_MODELS = ("ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnet_100")


def count_parameters(net):
    """Trainable parameters (BatchNorm moving mean/variance are not trainable)."""
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


def layer_macs(cell, output):
    """Multiply-adds of one Conv2d or Dense call producing ``output`` (per image)."""
    from mindspore import nn
    if isinstance(cell, nn.Conv2d):
        _, out_channels, out_h, out_w = output.shape
        k_h, k_w = cell.kernel_size
        return out_h * out_w * out_channels * (cell.in_channels // cell.group) * k_h * k_w
    return cell.in_channels * cell.out_channels


def count_macs(net, image_size=224):
    """MACs of one forward pass of an image_size x image_size image (int, or (H, W)).

    Runs the network once in PyNative mode (forward hooks need it) and
    restores the previous execution mode afterwards.
    """
    import mindspore as ms
    from mindspore import nn
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    layers = [cell for _, cell in net.cells_and_names() if isinstance(cell, (nn.Conv2d, nn.Dense))]
    in_channels = next(cell.in_channels for cell in layers if isinstance(cell, nn.Conv2d))
    macs = []
    hooks = [cell.register_forward_hook(
                 lambda cell, args, output: macs.append(layer_macs(cell, output)))
             for cell in layers]
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        was_training = net.training
        net.set_train(False)
        net(ms.Tensor(np.zeros((1, in_channels, height, width), np.float32)))
        net.set_train(was_training)
    finally:
        ms.set_context(mode=previous_mode)
        for hook in hooks:
            hook.remove()
    return sum(macs)


def model_stats(name, image_size=224, **model_kwargs):
    """{'parameters': int, 'macs': int} of the named model."""
    net = create_model(name, **model_kwargs)
    return {"parameters": count_parameters(net), "macs": count_macs(net, image_size)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list_models(),
                        metavar="NAME", help=f"models to count (default: {' '.join(DEFAULT_MODELS)}; "
                                             f"known: {', '.join(list_models())})")
    parser.add_argument("--image_size", type=int, default=224,
                        help="square input size for the MACs (default 224, minimum 64)")
    parser.add_argument("--num_classes", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.image_size < 64:
        parser.error(f"--image_size must be at least 64 (the network's minimum input), "
                     f"got {args.image_size}")

    print(f"| model | parameters | MACs at {args.image_size}x{args.image_size} | "
          f"paper (224x224) |")
    print("|---|---|---|---|")
    for name in args.models:
        stats = model_stats(name, args.image_size, num_classes=args.num_classes)
        paper = PAPER.get(name, ("", ""))
        print(f"| {name} | {stats['parameters']:,} | {stats['macs'] / 1e6:.1f}M | "
              f"{paper[0]} params, {paper[1]} MACs |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
