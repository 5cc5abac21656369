"""Write the digit detection set (scikit-learn digits on scikit-image photo
crops) as a COCO root for training a detector on the CPU.

    python scripts/make_detection_digits.py [--output data/digits_coco] [--image_size 128]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.digits_detection import write_digit_detection  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="data/digits_coco",
                        help="COCO root to write annotations/, train/ and val/ into")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--num_train", type=int, default=800)
    parser.add_argument("--num_val", type=int, default=200)
    # 48-64: about the 64 pixels the classification quick start's digits have;
    # its checkpoint reads digits of 20-44 pixels at chance level (README,
    # Detection), and a detector fine-tuned from it then learns no classes.
    parser.add_argument("--min_digit", type=int, default=48, help="smallest digit side (px)")
    parser.add_argument("--max_digit", type=int, default=64, help="largest digit side (px)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.min_digit <= args.max_digit <= args.image_size:
        parser.error("need 0 < --min_digit <= --max_digit <= --image_size")
    if os.path.exists(os.path.join(args.output, "annotations")):
        parser.error(f"{args.output} already holds a data set; remove it or choose another "
                     "--output")
    try:
        counts = write_digit_detection(args.output, args.num_train, args.num_val,
                                       args.image_size, (args.min_digit, args.max_digit),
                                       args.seed)
    except ImportError as err:
        parser.error(f"{err}: scikit-learn and scikit-image are needed "
                     "(pip install -r requirements-dev.txt)")
    print(f"digit detection set written to {os.path.abspath(args.output)}: "
          + ", ".join(f"{split} {n} images / {b} boxes" for split, (n, b) in counts.items()))


if __name__ == "__main__":
    main()
