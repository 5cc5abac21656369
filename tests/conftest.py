import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")


@pytest.fixture(scope="module")
def graph_mode():
    """GRAPH_MODE on the CPU, as eval.py runs the network (and where compiled
    graphs are cached); the previous mode is restored after the module."""
    import mindspore as ms
    try:
        # Before any kernel runs: later tests that set the device again
        # (export.py's main) fail on a runtime initialised without it.
        ms.set_device("CPU")
    except RuntimeError:
        pass  # an earlier test initialised the runtime already
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)
