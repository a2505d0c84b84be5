"""On-device augmentation: one gather per batch that equals per-image crop-and-flip."""
from __future__ import annotations

import numpy as np
import torch

from harness.data import load_cifar10
from harness.data.device import PAD, DeviceData
from harness.run.train import lr_factor


def data(cifar_root) -> DeviceData:
    return DeviceData(load_cifar10(cifar_root, val_size=100), torch.device("cpu"))


def reference(image: np.ndarray, row: int, col: int, flip: bool) -> np.ndarray:
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    crop = padded[row:row + 32, col:col + 32]
    return crop[:, ::-1] if flip else crop


def test_batch_equals_per_image_crop_and_flip(cifar_root):
    d = data(cifar_root)
    cifar = load_cifar10(cifar_root, val_size=100)
    batch = next(d.train_batches(seed=3, epoch=0, batch_size=64))
    raw = (batch.images * torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
           + torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) * 255
    raw = raw.round().permute(0, 2, 3, 1).numpy()
    for i in range(64):
        idx, (r, c), flip = batch.indices[i].item(), batch.crops[i].tolist(), bool(batch.flips[i])
        np.testing.assert_array_equal(raw[i], reference(cifar.x_train[idx], r, c, flip))
        assert batch.labels[i].item() == cifar.y_train[idx]
    assert batch.flips.any() and not batch.flips.all()
    assert batch.crops.min() >= 0 and batch.crops.max() <= 2 * PAD
    assert batch.images.is_contiguous(memory_format=torch.channels_last)


def test_epochs_are_seeded_and_cover_the_data(cifar_root):
    d = data(cifar_root)
    first = [b.indices for b in d.train_batches(seed=1, epoch=4, batch_size=50)]
    again = [b.indices for b in d.train_batches(seed=1, epoch=4, batch_size=50)]
    other = [b.indices for b in d.train_batches(seed=1, epoch=5, batch_size=50)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    seen = torch.cat(first)
    assert len(seen) == 50 * (d.n_train // 50) and len(seen.unique()) == len(seen)


def test_ranks_split_each_global_batch(cifar_root):
    d = data(cifar_root)
    whole = next(d.train_batches(seed=0, epoch=0, batch_size=40)).indices
    shards = [next(d.train_batches(seed=0, epoch=0, batch_size=40, rank=r, world_size=2)).indices for r in (0, 1)]
    assert sorted(torch.cat(shards).tolist()) == sorted(whole.tolist())


def test_learning_rate_schedules():
    recipe = {"epochs": 10, "warmup_epochs": 0, "schedule": "multistep", "milestones": [0.5, 0.75], "gamma": 0.1}
    assert [round(lr_factor(e, recipe), 6) for e in (0, 4.9, 5, 7.4, 7.5, 9.9)] == [1, 1, 0.1, 0.1, 0.01, 0.01]
    assert lr_factor(6, {**recipe, "milestones": [6, 8]}) == 0.1
    cosine = {**recipe, "schedule": "cosine", "warmup_epochs": 2}
    assert lr_factor(1, cosine) == 0.5 and lr_factor(2, cosine) == 1.0
    assert abs(lr_factor(6, cosine) - 0.5) < 1e-9 and lr_factor(10, cosine) < 1e-9
