"""Convert GhostNetV2 weights between PyTorch (official release, timm) and MindSpore.

    # official release or timm -> MindSpore
    python convert_weights.py --src ck_ghostnetv2_10.pth.tar --dst ghostnetv2_100.ckpt
    python convert_weights.py --src model.safetensors --dst ghostnetv2_130.ckpt
    # MindSpore -> safetensors that timm's ghostnetv2_* loads (strict)
    python convert_weights.py --src ghostnetv2_100.ckpt --dst ghostnetv2_100.safetensors

The model (width, V1/V2) and num_classes are read off the weights unless
given. Weights that do not fit the model are listed and nothing is written.
A .ckpt written here carries the model info of the weights (src/model_info.py):
the ImageNet preprocessing of the official / timm weights (224x224, crop 0.875,
bicubic, ImageNet mean/std), or the record of a .ckpt source; --labels FILE
(one name per line, or a JSON list, in label order) adds the class names, so
infer.py names its predictions without further flags.
"""
import argparse
import sys

from src.ghostnetv2 import list_models
from src.model_info import read_labels_file
from src.weights import WeightsError, convert


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--src", required=True,
                        help=".pth / .pth.tar / .safetensors / .ckpt file to read")
    parser.add_argument("--dst", required=True, help=".ckpt or .safetensors file to write")
    parser.add_argument("--model", default=None, choices=list_models(),
                        help="model the weights belong to (default: inferred from them)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classifier outputs (default: read off the weights)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --dst (refused otherwise)")
    parser.add_argument("--labels", default=None,
                        help="class names in label order (one per line, or a JSON list), "
                             "recorded in a .ckpt dst")
    args = parser.parse_args(argv)
    try:
        class_names = read_labels_file(args.labels) if args.labels else None
        print(convert(args.src, args.dst, args.model, args.num_classes, args.overwrite,
                      class_names))
    except WeightsError as err:
        print(f"convert_weights.py: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
