"""Write the digit-scenes segmentation set (scikit-learn's digits on
scikit-image's photographs, ADE20K's layout; src/data/digit_scenes.py).

    python scripts/make_digit_scenes.py [--output data/digit_scenes] [--num_train 600]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.digit_scenes import write_digit_scenes  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/digit_scenes", help="the set's ROOT folder")
    parser.add_argument("--num_train", type=int, default=600)
    parser.add_argument("--num_val", type=int, default=150)
    parser.add_argument("--image_size", type=int, default=128, help="side of the images")
    # 48-64: about the 64 pixels the classification quick start's digits have
    # (its checkpoint reads 44 px digits right 23% of the time; README, Detection)
    parser.add_argument("--min_digit", type=int, default=48, help="smallest digit side (px)")
    parser.add_argument("--max_digit", type=int, default=64, help="largest digit side (px)")
    parser.add_argument("--max_digits", type=int, default=2, help="digits per image: 1 to this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.min_digit <= args.max_digit <= args.image_size:
        parser.error("need 0 < --min_digit <= --max_digit <= --image_size")
    if args.max_digits < 1:
        parser.error("--max_digits must be at least 1")
    try:
        counts = write_digit_scenes(args.output, args.num_train, args.num_val, args.image_size,
                                    (args.min_digit, args.max_digit), args.max_digits,
                                    args.seed)
    except ImportError as err:
        parser.error(f"scikit-learn and scikit-image are needed ({err}); bash scripts/setup.sh")
    except ValueError as err:
        parser.error(str(err))
    print(f"digit scenes written to {os.path.abspath(args.output)}: "
          + ", ".join(f"{split} {n} images" for split, n in counts.items()))


if __name__ == "__main__":
    main()
