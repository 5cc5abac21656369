"""Print the parity table of the MindSpore port against timm (markdown).

    python tests/parity_report.py [--models ghostnetv2_100 ...]

Same pipeline and inputs as tests/test_parity.py (reference.ParityCase):
realistic timm reference -> official-format checkpoint -> convert_weights.py
-> port in GRAPH_MODE, logits on real photographs.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import PARITY_INPUTS, PARITY_TOLERANCE, TIMM_MODELS, ParityCase  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TIMM_MODELS), choices=TIMM_MODELS)
    args = parser.parse_args(argv)

    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            start = time.time()
            print(f"{name}: building the reference and converting ...", file=sys.stderr, flush=True)
            case = ParityCase(name, os.path.join(workdir, name))
            for input_name, (batch, _) in PARITY_INPUTS.items():
                result = case.parity(input_name)
                rows.append(f"| {name} | {input_name} x{batch} | {result['max_abs_diff']:.2e} | "
                            f"{result['max_abs_logit']:.2f} | {result['relative']:.2e} |")
            print(f"{name}: done in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"| model | input (H x W x batch) | max abs diff | max abs logit | relative "
          f"(tolerance {PARITY_TOLERANCE:g}) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
