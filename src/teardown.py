"""A quiet interpreter exit for scripts that build MindSpore networks.

MindSpore 2.7's ``Cell.__del__`` updates ``Cell.total_instance_count`` and
the graph executor through globals of mindspore/nn/cell.py. A network still
referenced when Python exits (a module global such as ``net = ...``) is
collected only after Python has set those globals to None, so each of its
cells prints "Exception ignored in: <function Cell.__del__> ...
AttributeError: 'NoneType' object has no attribute 'total_instance_count'"
(236 lines for one ghostnetv2_100). Nothing is wrong: the process is ending.

``quiet_cell_teardown()`` registers an exit hook (atexit runs before module
globals are cleared) that wraps ``Cell.__del__`` so that only these teardown
failures are ignored; before exit ``Cell.__del__`` is MindSpore's own.
Importing src.ghostnetv2 calls it. Scripts that build MindSpore networks
without the port can call it too, or ``del`` their networks before exiting.
"""
import atexit

_installed = []


def quiet_cell_teardown():
    """Register the exit hook once per process."""
    if not _installed:
        atexit.register(_wrap_cell_del)
        _installed.append(True)


def _wrap_cell_del():
    from mindspore import nn
    original = nn.Cell.__del__

    def __del__(self):
        try:
            original(self)
        except (AttributeError, TypeError):
            pass  # cell.py's globals are already None: the interpreter is exiting

    nn.Cell.__del__ = __del__
