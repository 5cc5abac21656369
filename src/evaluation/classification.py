"""Top-1 / top-5 / loss over an evaluation dataset, every image counted once.

Batches are padded to the full batch size (and the padding masked out), so
the network compiles once however many images the last batch holds.
"""
import time

import numpy as np


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def top_classes(logits, names, k=5):
    """Per row of logits: [[class name, softmax probability], ...] of its top k
    classes (ties in index order)."""
    probabilities = np.exp(log_softmax(np.asarray(logits, np.float64)))
    return [[[names[i], float(row[i])] for i in np.argsort(-row, kind="stable")[:k]]
            for row in probabilities]


def batch_sums(logits, labels):
    """[top-1 correct, top-5 correct, summed cross-entropy, images] of one batch
    (top-5 is top-k with k = min(5, classes))."""
    logits = logits.astype(np.float64)
    k = min(5, logits.shape[1])
    top_k = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = top_k == labels[:, None]
    loss = -log_softmax(logits)[np.arange(len(labels)), labels]
    return np.array([hits[:, 0].sum(), hits.any(axis=1).sum(), loss.sum(), len(labels)], np.float64)


def pad_batch(images, batch_size):
    if len(images) == batch_size:
        return images
    padding = np.zeros((batch_size - len(images),) + images.shape[1:], images.dtype)
    return np.concatenate([images, padding])


def evaluate(net, batches, batch_size, reduce_sum=None, progress=None):
    """Score ``net`` on an iterable of (images, labels) numpy batches.

    reduce_sum: adds the per-rank sums across ranks (distributed evaluation).
    progress: called as progress(images_done) after every batch.
    Returns dict(top1, top5, loss, num_images, seconds, images_per_s); the
    speed leaves out the first batch (it includes the graph compilation)
    when there are more.
    """
    import mindspore as ms
    net.set_train(False)
    local = np.zeros(4, np.float64)  # this rank's sums
    start = time.time()
    first_batch_end, first_count = None, 0
    for images, labels in batches:
        count = len(labels)
        if count > batch_size:
            raise ValueError(f"a batch of {count} images is larger than batch_size {batch_size}")
        logits = net(ms.Tensor(pad_batch(images, batch_size))).asnumpy()[:count]
        if labels.max(initial=0) >= logits.shape[1]:
            raise ValueError(f"label {labels.max()} is out of range for a model with "
                             f"{logits.shape[1]} classes: the data has more classes than the model")
        local += batch_sums(logits, labels.astype(np.int64))
        if first_batch_end is None:
            first_batch_end, first_count = time.time(), count
        if progress is not None:
            progress(int(local[3]))
    end = time.time()
    if local[3] > first_count:  # leave the compiling first batch out of the speed
        speed = (local[3] - first_count) / max(end - first_batch_end, 1e-9)
    else:
        speed = local[3] / max(end - start, 1e-9)
    sums = reduce_sum(local) if reduce_sum is not None else local
    num_images = int(round(sums[3]))
    if num_images == 0:
        return dict(top1=0.0, top5=0.0, loss=float("nan"), num_images=0, seconds=end - start,
                    images_per_s=0.0)
    return dict(top1=sums[0] / num_images, top5=sums[1] / num_images, loss=sums[2] / num_images,
                num_images=num_images, seconds=end - start, images_per_s=speed)
