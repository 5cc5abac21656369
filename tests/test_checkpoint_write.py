"""A process killed (SIGKILL) while it writes a checkpoint never leaves a
file that looks complete but is not: the final name holds either the
previous complete checkpoint or the new complete one, and the partial write
is a hidden file that training removes when it starts again."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from src import checkpoint as ckpt
from src.weights import partial_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARRAYS, ARRAY_SHAPE = 24, (1024, 1024)  # 96 MB: a write takes long enough to be caught in

# Writes version 1 of the checkpoint, says so, then rewrites it as version 2,
# 3, ... until killed. Every array of version v is filled with v.
WRITER = f"""
import sys
import numpy as np
from src.weights import save_checkpoint
path = sys.argv[1]
version = 1
while True:
    save_checkpoint({{f"w{{i}}": np.full({ARRAY_SHAPE}, version, np.float32)
                     for i in range({ARRAYS})}}, path)
    print("saved", version, flush=True)
    version += 1
"""


def written_partially(directory):
    """A partial file with data in it (a write under way, or a killed one)."""
    for path in partial_files(directory):
        try:
            if os.path.getsize(path) > 0:
                return True
        except OSError:  # renamed (finished) just now
            pass
    return False


def kill_while_writing(path):
    """Start the writer and SIGKILL it in the middle of a rewrite of `path`:
    as soon as a partial file holds data, or half a write's time after a
    write finished (whichever comes first; the second catches writers that
    do not use partial files). Returns the versions reported complete."""
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=ROOT)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().split() == ["saved", "1"], "the writer did not start"
        first_done = time.time()
        assert writer.stdout.readline().split() == ["saved", "2"], "the writer stopped"
        second_done = time.time()
        kill_at = second_done + (second_done - first_done) / 2
        directory = os.path.dirname(path)
        while time.time() < kill_at and not written_partially(directory):
            time.sleep(0.001)
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        return [1, 2] + [int(line.split()[1]) for line in writer.stdout.read().splitlines()]
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.stdout.close()


def test_kill_during_checkpoint_write(tmp_path):
    path = str(tmp_path / "last.ckpt")
    completed = kill_while_writing(path)
    saved = ckpt.read_checkpoint(path)  # CheckpointError if missing or truncated
    assert sorted(saved) == sorted(f"w{i}" for i in range(ARRAYS))
    values = {float(v.flat[0]) for v in saved.values()}
    assert len(values) == 1, f"a mix of versions {values} under the final name"
    (version,) = values
    assert int(version) in completed, f"version {version} was never reported complete"
    for name, value in saved.items():
        assert value.shape == ARRAY_SHAPE and np.all(value == version), name

    assert partial_files(str(tmp_path)), \
        "the kill missed the write (no partial file left); the test proved nothing"
    # Training's start removes the leftover, and nothing else.
    manager = ckpt.CheckpointManager(str(tmp_path), "m", keep_max=2)
    manager.remove_partial_writes()
    assert partial_files(str(tmp_path)) == []
    assert os.listdir(tmp_path) == ["last.ckpt"]
