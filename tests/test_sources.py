"""Dataset sources: the real download stage against a loopback HTTP server, and local copies.

The server (started here, on a free port) serves synthetic files in the real formats: gzipped
MNIST-format (IDX) files and a CIFAR-10 python tarball, with the configs' md5s set to theirs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, copy_project
from torchvision import datasets

from initlab.config import load_config
from initlab.data.download import download
from initlab.data.prepare import load_split, prepare
from initlab.data.sources import CIFAR_BATCHES, IDX_FILES
from initlab.errors import ConfigError

RNG = np.random.default_rng(0)
IMAGES = {"train": RNG.integers(0, 256, (100, 28, 28), dtype=np.uint8),
          "test": RNG.integers(0, 256, (20, 28, 28), dtype=np.uint8)}
LABELS = {"train": np.arange(100) % 10, "test": np.arange(20) % 10}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 0x08 ndim, the sizes, the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_files(gz: bool) -> dict[str, bytes]:
    files = {}
    for role, name in IDX_FILES.items():
        split, kind = role.split("_")
        data = idx_bytes(IMAGES[split] if kind == "images" else LABELS[split])
        files[name + ".gz" if gz else name] = gzip.compress(data, mtime=0) if gz else data
    return files


def cifar_batch(n: int, offset: int) -> bytes:
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(offset, offset + n)  # red channel of pixel (0, 0): a marker
    return pickle.dumps({b"data": data, b"labels": [(offset + i) % 10 for i in range(n)]})


CIFAR = {name: cifar_batch(10, 10 * i)
         for i, name in enumerate(CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"])}


def cifar_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in CIFAR.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Server:
    """Serves `files` by name; the first `corrupt[name]` downloads of a file come corrupted."""

    def __init__(self, files: dict[str, bytes], corrupt: dict[str, int] | None = None):
        self.files, self.corrupt, self.downloads = files, dict(corrupt or {}), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name]
                if self.headers.get("Method") != "HEAD":  # torchvision's redirect probe
                    server.downloads.append(name)
                    if server.corrupt.get(name, 0) > 0:
                        server.corrupt[name] -= 1
                        body = body[:-10] + b"corrupted!"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("sources"))


@pytest.fixture
def in_blank_project(project, monkeypatch):
    monkeypatch.chdir(project)
    yield project
    shutil.rmtree(project / "data", ignore_errors=True)


def resource_overrides(dataset: str, files: dict[str, bytes]) -> list[str]:
    resources = yaml.safe_load((REPO / "conf" / "dataset" / f"{dataset}.yaml").read_text())
    return [f"dataset.resources.{role}.md5={md5(files[r['file']])}"
            for role, r in resources["resources"].items()]


def leftovers(root) -> list[str]:
    return [str(p) for p in (root / "data").rglob("*") if ".tmp" in p.name
            or p.suffix == ".gz"] if (root / "data").exists() else []


def test_dataset_configs_carry_torchvisions_mirrors_and_md5s():
    for name, cls in [("mnist", datasets.MNIST), ("fashion_mnist", datasets.FashionMNIST)]:
        conf = yaml.safe_load((REPO / "conf" / "dataset" / f"{name}.yaml").read_text())
        assert conf["mirrors"] == cls.mirrors
        assert [(r["file"], r["md5"]) for r in conf["resources"].values()] \
            == [tuple(r) for r in cls.resources]
    conf = yaml.safe_load((REPO / "conf" / "dataset" / "cifar10.yaml").read_text())
    archive = conf["resources"]["archive"]
    assert conf["mirrors"][0] + archive["file"] == datasets.CIFAR10.url
    assert archive["md5"] == datasets.CIFAR10.tgz_md5


def test_mnist_downloads_from_the_first_working_mirror_and_prepares(in_blank_project):
    files = idx_files(gz=True)
    server = Server(files)
    try:
        cfg = load_config(["dataset=mnist", "dataset.backoff_seconds=0",
                           f"dataset.mirrors=[http://127.0.0.1:9/,{server.url}]",
                           *resource_overrides("mnist", files)])
        download(cfg)
    finally:
        server.close()
    raw = in_blank_project / "data" / "raw" / "mnist"
    for split in ("train", "test"):
        assert np.array_equal(np.load(raw / f"{split}_images.npy"), IMAGES[split])
        assert np.array_equal(np.load(raw / f"{split}_labels.npy"), LABELS[split])
    assert sorted(server.downloads) == sorted(files)  # each file once, from the 2nd mirror
    assert not leftovers(in_blank_project)
    prepare(cfg)
    x_test, y_test = load_split("test")  # the official test set is kept as the test set
    assert torch.equal(y_test, torch.from_numpy(LABELS["test"]))
    _, y_val = load_split("val")  # val: 10% of train, stratified
    assert np.bincount(y_val.numpy()).tolist() == [1] * 10


def test_a_corrupted_download_fails_its_checksum_and_is_retried(in_blank_project):
    files = idx_files(gz=True)
    server = Server(files, corrupt={"train-images-idx3-ubyte.gz": 1})
    try:
        download(load_config(["dataset=mnist", "dataset.backoff_seconds=0",
                              f"dataset.mirrors=[{server.url}]",
                              *resource_overrides("mnist", files)]))
    finally:
        server.close()
    assert server.downloads.count("train-images-idx3-ubyte.gz") == 2
    assert np.array_equal(np.load(in_blank_project / "data/raw/mnist/train_images.npy"),
                          IMAGES["train"])


def test_a_server_that_never_answers_gives_the_offline_error_in_bounded_time(
        in_blank_project):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as error:
            download(load_config(["dataset=fashion_mnist", f"dataset.mirrors=[{url}]",
                                  "dataset.timeout_seconds=0.5", "dataset.retries=2",
                                  "dataset.backoff_seconds=0.1"]))
    finally:
        silent.close()
    assert time.monotonic() - started < 15
    message = str(error.value)
    assert f"{url}train-images-idx3-ubyte.gz" in message and "timed out" in message
    assert "after 2 attempt(s)" in message and "dataset.path" in message
    assert not (in_blank_project / "data" / "raw" / "fashion_mnist").exists()
    assert not leftovers(in_blank_project)


def test_cifar10_downloads_the_tarball_and_reads_it_in_place(in_blank_project):
    tarball = cifar_tarball()
    server = Server({"cifar-10-python.tar.gz": tarball})
    try:
        download(load_config(["dataset=cifar10", f"dataset.mirrors=[{server.url}]",
                              f"dataset.resources.archive.md5={md5(tarball)}"]))
    finally:
        server.close()
    raw = in_blank_project / "data" / "raw" / "cifar10"
    images = np.load(raw / "train_images.npy")
    assert images.shape == (50, 32, 32, 3) and np.load(raw / "test_images.npy").shape[0] == 10
    assert images[:, 0, 0, 0].tolist() == list(range(50))  # planes -> HWC, batches in order
    assert np.load(raw / "train_labels.npy").tolist() == [i % 10 for i in range(50)]
    assert not leftovers(in_blank_project)


def write_files(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir_reads_a_local_copy_gzipped_or_raw(in_blank_project, tmp_path, gz):
    folder = write_files(tmp_path / "kmnist", idx_files(gz))
    download(load_config(["dataset=idx_dir", f"dataset.path={folder}"]))
    raw = in_blank_project / "data" / "raw" / "idx_dir"
    for split in ("train", "test"):
        assert np.array_equal(np.load(raw / f"{split}_images.npy"), IMAGES[split])
        assert np.array_equal(np.load(raw / f"{split}_labels.npy"), LABELS[split])


def _wrong_magic(files):
    data = bytearray(files["train-labels-idx1-ubyte"])
    data[3] = 3  # labels claiming 3 dimensions: magic 2051
    files["train-labels-idx1-ubyte"] = bytes(data)


MALFORMED = {
    "wrong magic": (_wrong_magic, "train-labels-idx1-ubyte: wrong magic number 2051"),
    "truncated": (lambda f: f.update({"t10k-images-idx3-ubyte":
                                      f["t10k-images-idx3-ubyte"][:-100]}),
                  "t10k-images-idx3-ubyte: truncated"),
    "missing": (lambda f: f.pop("t10k-labels-idx1-ubyte"), "t10k-labels-idx1-ubyte: missing"),
    "count mismatch": (lambda f: f.update({"train-labels-idx1-ubyte":
                                           idx_bytes(LABELS["train"][:50])}),
                       "train-images-idx3-ubyte / train-labels-idx1-ubyte: 100 images but "
                       "50 labels"),
    "label range": (lambda f: f.update({"t10k-labels-idx1-ubyte":
                                        idx_bytes(LABELS["test"] + 5)}),
                    "labels range 5..14, expected 0..9"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_idx_dir_rejects_a_malformed_copy_naming_the_file(in_blank_project, tmp_path, case):
    files = idx_files(gz=False)
    corrupt, expected = MALFORMED[case]
    corrupt(files)
    folder = write_files(tmp_path / "bad", files)
    with pytest.raises(ConfigError, match=expected):
        download(load_config(["dataset=idx_dir", f"dataset.path={folder}"]))
    assert not (in_blank_project / "data" / "raw" / "idx_dir").exists()
    assert not leftovers(in_blank_project)


def test_a_dataset_path_that_does_not_exist_is_named(in_blank_project, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.path='.*nowhere' is not allowed: the "
                                          "folder does not exist"):
        download(load_config(["dataset=idx_dir", f"dataset.path={tmp_path / 'nowhere'}"]))


def test_cifar10_local_copy_and_a_pickle_that_would_run_code(in_blank_project, tmp_path):
    folder = write_files(tmp_path / "cifar-10-batches-py", CIFAR)
    download(load_config(["dataset=cifar10", f"dataset.path={folder}"]))
    assert np.load(in_blank_project / "data/raw/cifar10/test_labels.npy").shape == (10,)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))
    (folder / "test_batch").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ConfigError, match="test_batch: not a CIFAR-10 python batch .*refusing "
                                          "to load builtins.print"):
        download(load_config(["dataset=cifar10", f"dataset.path={folder}"]))
