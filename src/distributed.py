"""Data-parallel training with MindSpore's dynamic cluster (msrun) or a
rank-table launch: HCCL on Ascend, NCCL on GPU, MindSpore's collective
library on the CPU."""
import hashlib
import os

import numpy as np


def launched_distributed():
    """True under msrun (MS_WORKER_NUM / MS_ROLE) or a rank-table launch (RANK_SIZE > 1)."""
    if os.environ.get("MS_ROLE") or os.environ.get("MS_WORKER_NUM"):
        return True
    return int(os.environ.get("RANK_SIZE", "1") or 1) > 1


def init_distributed():
    """Join the cluster; data parallel with gradients averaged over the ranks.
    Returns (rank_id, rank_size)."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    init()
    rank_id, rank_size = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=rank_size)
    return rank_id, rank_size


def all_reduce_sum(values):
    """Sum a small float64 numpy vector over all ranks (sent as float32)."""
    import mindspore as ms
    from mindspore.communication.comm_func import all_reduce
    reduced = all_reduce(ms.Tensor(np.asarray(values, np.float32)))
    reduced = reduced[0] if isinstance(reduced, tuple) else reduced
    return reduced.asnumpy().astype(np.float64)


def param_digest(net):
    """First 16 hex digits of the sha256 of the trainable parameters (sorted by
    name). Equal on every rank after data-parallel training; BatchNorm running
    statistics are left out because each rank computes them on its own shard."""
    digest = hashlib.sha256()
    for param in sorted(net.trainable_params(), key=lambda p: p.name):
        digest.update(param.name.encode())
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()[:16]
