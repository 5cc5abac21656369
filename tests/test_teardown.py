"""Importing the port leaves a clean interpreter exit (src/teardown.py)."""
import os
import subprocess
import sys

from reference import ROOT

# A network still referenced at exit (a module global), as in most scripts;
# mindcv's own GhostNet too: the hook covers every Cell once the port is imported.
SCRIPT = """
import mindcv
from src.ghostnetv2 import create_model
net = create_model("ghostnetv2_100", num_classes=10)
other = mindcv.create_model("ghostnet_100", num_classes=10)
print("built", flush=True)
"""


def test_building_a_network_and_exiting_prints_no_teardown_errors():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, GLOG_v="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "built"
    # counts, not 'in': pytest's explanation of a failed 'in' on this much text takes minutes
    ignored = done.stderr.count("Exception ignored")
    assert ignored == 0, f"{ignored} teardown errors:\n{done.stderr[:1500]}"
