"""The `prepare` stage: raw arrays -> stratified, seeded train/val/test tensors + a manifest.

Pixels are scaled to [0, 1] (float32, N x C x H x W). The official test set is kept as the test
split when the source has one; otherwise a stratified test split is carved from the data. The
validation split is always stratified from what remains for training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from initlab.config import load_config
from initlab.errors import ConfigError, reported_errors
from initlab.io import atomic_path, sha256, write_json
from initlab.paths import workspace_root

SPLITS = ("train", "val", "test")


def prepared_dir() -> Path:
    return workspace_root() / "data" / "prepared"


def stratified_split(labels: np.ndarray, fraction: float, seed: int):
    """Indices (keep, held_out): `fraction` of every class held out, chosen by `seed`."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels,
                                random_state=seed)
    except ValueError as e:  # too few examples of a class for a stratified split
        raise ConfigError(f"split: cannot hold out {fraction:.3g} of {len(labels)} examples "
                          f"stratified ({e})") from None


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> float32 (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(images).float().div_(255.0)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def split_arrays(raw: dict[str, np.ndarray], split_cfg) -> dict[str, tuple]:
    """Fractions are of the whole data set; with an official test set, val is of its train set."""
    images, labels = raw["train_images"], raw["train_labels"]
    if "test_images" in raw:
        test = (raw["test_images"], raw["test_labels"])
        val_fraction = split_cfg.val_fraction
    else:
        keep, held = stratified_split(labels, split_cfg.test_fraction, split_cfg.seed)
        test = (images[held], labels[held])
        images, labels = images[keep], labels[keep]
        val_fraction = split_cfg.val_fraction / (1 - split_cfg.test_fraction)
    keep, held = stratified_split(labels, val_fraction, split_cfg.seed)
    return {"train": (images[keep], labels[keep]), "val": (images[held], labels[held]),
            "test": test}


def prepare(cfg) -> None:
    raw_dir = workspace_root() / "data" / "raw" / cfg.dataset.name
    if not raw_dir.is_dir():
        raise ConfigError(f"{raw_dir}: raw data not found; run the download stage first")
    raw = {path.stem: np.load(path, allow_pickle=False) for path in sorted(raw_dir.glob("*.npy"))}
    splits = split_arrays(raw, cfg.split)
    with atomic_path(prepared_dir()) as tmp:
        tmp.mkdir()
        files = {}
        for split, (images, labels) in splits.items():
            path = tmp / f"{split}.pt"
            x = _to_tensor(images)
            torch.save({"x": x, "y": torch.from_numpy(labels)}, path)
            files[path.name] = {
                "shape": list(x.shape),
                "class_counts": np.bincount(labels, minlength=cfg.dataset.num_classes).tolist(),
                "sha256": sha256(path),
            }
        write_json(tmp / "manifest.json", {
            "dataset": cfg.dataset.name,
            "split": {k: cfg.split[k] for k in cfg.split},
            "files": files,
        })
    counts = ", ".join(f"{s} {len(splits[s][1])}" for s in SPLITS)
    print(f"prepare: {cfg.dataset.name}: {counts}")


def load_split(split: str, directory: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one prepared split, checked against the manifest (present, sha256, shape)."""
    directory = directory or prepared_dir()
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: missing; run `dvc repro prepare` first")
    expected = json.loads(manifest_path.read_text())["files"][f"{split}.pt"]
    path = directory / f"{split}.pt"
    if not path.is_file():
        raise ConfigError(f"{path}: missing prepared data file; run `dvc repro prepare`")
    if sha256(path) != expected["sha256"]:
        raise ConfigError(f"{path}: corrupt (sha256 differs from {manifest_path.name}); "
                          "run `dvc repro prepare` again")
    data = torch.load(path, weights_only=True)
    if list(data["x"].shape) != expected["shape"] or len(data["y"]) != expected["shape"][0]:
        raise ConfigError(f"{path}: shape {list(data['x'].shape)} differs from the manifest's "
                          f"{expected['shape']}")
    return data["x"], data["y"]


def main() -> None:
    with reported_errors():
        prepare(load_config(sys.argv[1:]))


if __name__ == "__main__":
    main()
