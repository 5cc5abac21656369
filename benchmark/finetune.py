"""The transfer effect of fine-tuning, measured on real data (scikit-learn's digits).

    python benchmark/finetune.py [--root outputs/finetune_experiment] [--epochs 12]

Three trainings with train.py, each for --epochs epochs:

  half      digits 0-4 from scratch (config/ghostnetv2_100_digits.yaml, 5 classes)
  finetune  all ten digits from half's last.ckpt (config/ghostnetv2_100_finetune.yaml,
            --num_classes 10: the 5-class classifier is dropped)
  scratch   all ten digits from scratch (config/ghostnetv2_100_digits.yaml)

then prints val top-1 per epoch of each run (from its metrics.jsonl) and the
epochs each needed to reach 98% and 99%. The fine-tune keeps its recipe's
optimization (lr, warmup, schedule, EMA off) and takes only what the data
dictates from the digits recipe: 64x64 images, no eval crop, no flips, mild
crops. --finetune_lr LR fine-tunes with another lr instead (into
finetune_lr<LR>/; the table shows every fine-tune run there is). A finished run is reused, an interrupted one resumed (--resume auto):
rerunning after a stop continues where it was; --runs picks some of the runs
(e.g. half and scratch in two processes, then finetune; start the second
process once the first has written the data: two writing it at once collide).
MindSpore reads the network's source when it compiles: do not edit src/ while
a run compiles (or run from a copy of the tree, with --root pointing here).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from src.digits import SPLITS, write_digits  # noqa: E402

RUNS = ("half", "finetune", "scratch")
HALF_CLASSES = [str(c) for c in range(5)]
THRESHOLDS = (0.98, 0.99)
DIGITS_RECIPE = os.path.join(ROOT, "config", "ghostnetv2_100_digits.yaml")
FINETUNE_RECIPE = os.path.join(ROOT, "config", "ghostnetv2_100_finetune.yaml")
# What the digits data dictates (as in the digits recipe); the fine-tune
# recipe's optimization settings stay as they are.
DIGITS_DATA_FLAGS = ["--image_size", "64", "--crop_pct", "1.0", "--hflip", "0.0",
                     "--scale", "[0.8, 1.0]", "--ratio", "[0.9, 1.11]"]


def make_data(root):
    """root/digits (ten classes) and root/digits_0-4 (the same files of classes 0-4)."""
    full = os.path.join(root, "digits")
    write_digits(full)
    half = os.path.join(root, "digits_0-4")
    for split in SPLITS:
        for label in HALF_CLASSES:
            target = os.path.join(half, split, label)
            if not os.path.isdir(target):
                shutil.copytree(os.path.join(full, split, label), target + ".tmp",
                                dirs_exist_ok=True)
                os.replace(target + ".tmp", target)
    return full, half


def read_metrics(output_dir):
    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_name(run, finetune_lr):
    """The run's folder under the root: finetune_lr<LR> for a fine-tune at another lr."""
    return f"finetune_lr{finetune_lr:g}" if run == "finetune" and finetune_lr else run


def train_command(run, root, full, half, epochs, finetune_lr):
    data = {"half": half}.get(run, full)
    command = [sys.executable, os.path.join(ROOT, "train.py"),
               "--data_path", os.path.join(data, "train"),
               "--val_data_path", os.path.join(data, "val"), "--epoch_size", str(epochs),
               "--output_dir", os.path.join(root, run_name(run, finetune_lr))]
    if run == "half":
        return command + ["--config_path", DIGITS_RECIPE, "--num_classes", "5"]
    if run == "scratch":
        return command + ["--config_path", DIGITS_RECIPE, "--num_classes", "10"]
    pretrained = os.path.join(root, "half", "last.ckpt")
    if not os.path.isfile(pretrained):
        sys.exit(f"finetune: {pretrained} is missing; run 'half' first (--runs half)")
    if finetune_lr:
        command += ["--lr", str(finetune_lr)]
    return command + ["--config_path", FINETUNE_RECIPE, "--num_classes", "10",
                      "--pretrained", pretrained] + DIGITS_DATA_FLAGS


def run_training(run, root, full, half, epochs, finetune_lr=None):
    """Train (or resume, or reuse) one run; returns its wall time this call (None: reused)."""
    output_dir = os.path.join(root, run_name(run, finetune_lr))
    records = read_metrics(output_dir)
    if records and records[-1]["epoch"] >= epochs:
        print(f"{run}: reusing the finished run in {output_dir}", flush=True)
        return None
    command = train_command(run, root, full, half, epochs, finetune_lr)
    if records or os.path.isdir(output_dir):
        command += ["--resume", "auto"]
    print(f"{run}: {' '.join(command)}", flush=True)
    start = time.time()
    subprocess.run(command, check=True, env=dict(os.environ, GLOG_v="3"))
    wall = time.time() - start
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "wall_seconds.txt"), "w", encoding="utf-8") as f:
        f.write(f"{wall:.0f}\n")
    return wall


def epochs_to(records, threshold):
    return next((r["epoch"] for r in records if (r.get("top1") or 0) >= threshold), None)


def wall_seconds(output_dir):
    path = os.path.join(output_dir, "wall_seconds.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return float(f.read())


def table(root):
    """The per-epoch val top-1 of the three runs as a Markdown table, then the summary."""
    finetunes = sorted(name for name in os.listdir(root) if name.startswith("finetune"))
    runs = ["half"] + finetunes + ["scratch"]
    records = {run: read_metrics(os.path.join(root, run)) for run in runs}
    by_epoch = {run: {r["epoch"]: r.get("top1") for r in recs} for run, recs in records.items()}
    titles = {"half": "half: 0-4 from scratch", "scratch": "scratch: 0-9"}
    lines = ["| epoch | " + " | ".join(titles.get(run, f"{run}: 0-9 from half") for run in runs)
             + " |", "|---" * (len(runs) + 1) + "|"]
    last = max((r["epoch"] for recs in records.values() for r in recs), default=0)
    for epoch in range(1, last + 1):
        cells = [f"{by_epoch[run][epoch]:.2%}" if by_epoch[run].get(epoch) is not None else "-"
                 for run in runs]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    lines.append("")
    for run in runs:
        reached = ", ".join(f"{t:.0%} after {epochs_to(records[run], t) or 'not reached'}"
                            for t in THRESHOLDS)
        times = [r.get("epoch_time") or 0 for r in records[run]]
        wall = wall_seconds(os.path.join(root, run))
        lines.append(f"- {run}: {reached}; {len(times)} epochs, training {sum(times):.0f} s"
                     + (f", wall {wall:.0f} s (with compiles and validation)" if wall else ""))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(ROOT, "outputs", "finetune_experiment"),
                        help="folder for the data and the three runs")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each run")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which runs to train (the table shows all that exist)")
    parser.add_argument("--finetune_lr", type=float, default=None,
                        help="fine-tune with this lr instead of the recipe's")
    parser.add_argument("--table_only", action="store_true", help="train nothing, print the table")
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    if not args.table_only:
        full, half = make_data(root)
        for run in RUNS:
            if run in args.runs:
                run_training(run, root, full, half, args.epochs, args.finetune_lr)
    print(table(root))


if __name__ == "__main__":
    main()
