"""Write scikit-learn's digits as an ImageFolder for training on the CPU.

    python scripts/make_digits.py [--output data/digits] [--image_size 64]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.digits import write_digits  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/digits",
                        help="folder to write train/ and val/ into")
    parser.add_argument("--image_size", type=int, default=64,
                        help="side of the written images (GhostNetV2 needs at least 64)")
    parser.add_argument("--val_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing files")
    args = parser.parse_args(argv)
    try:
        counts = write_digits(args.output, args.image_size, args.val_fraction, args.seed,
                              args.overwrite)
    except ImportError:
        parser.error("scikit-learn is needed for the digits (pip install scikit-learn, "
                     "or bash scripts/setup.sh)")
    except ValueError as err:
        parser.error(str(err))
    print(f"digits written to {os.path.abspath(args.output)}: "
          + ", ".join(f"{split} {n} images" for split, n in counts.items()))


if __name__ == "__main__":
    main()
