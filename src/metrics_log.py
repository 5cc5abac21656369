"""Per-epoch metrics as JSON lines (output_dir/metrics.jsonl) and their plot."""
import json
import logging
import os

from .weights import atomic_write, write_text_atomic

_logger = logging.getLogger(__name__)


class MetricsLog:
    """One JSON object per epoch; a no-op on ranks other than 0."""

    def __init__(self, path, enabled=True):
        self.path = path
        self.enabled = enabled

    def records(self):
        if not os.path.isfile(self.path):
            return []
        records = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        _logger.warning("%s: skipping a line that is not JSON: %.60s",
                                        self.path, line)
        return records

    def append(self, record):
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, epoch):
        """On resume: drop the records of epochs the resumed run will redo."""
        kept = [r for r in self.records() if r.get("epoch", 0) <= epoch]
        if self.enabled and os.path.isfile(self.path):
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


def best_value(records, key="top1"):
    values = [r[key] for r in records if r.get(key) is not None]
    return max(values) if values else None


def plot_metrics(records, png_path, title="", metric_keys=("top1", "top5")):
    """Losses, the task's validation metrics (metric_keys: fractions such as
    top1, AP, mIoU) and the learning rate against the epoch, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    series = ((axes[0], (("train_loss", "train loss"), ("val_loss", "val loss")), "loss"),
              (axes[1], tuple((key, f"val {key}") for key in metric_keys), "validation"),
              (axes[2], (("lr", "learning rate"),), "learning rate"))
    for axis, curves, ylabel in series:
        for key, label in curves:
            points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
            if points:
                axis.plot(*zip(*points), marker=".", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return png_path
