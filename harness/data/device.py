"""The data set on the training device, augmented there in whole batches.

Images stay uint8 NHWC on the device (the training split pre-padded by 4 pixels once); a batch is
one gather that crops and flips every image at once, then one fused normalise. The NCHW view of
NHWC memory is already `channels_last`, so nothing is copied for that either. Shuffling and
augmentation draw from a generator seeded by (run seed, epoch): an epoch is the same whether the
run was interrupted before it or not.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from harness.data import datasets as D


@dataclass
class Batch:
    """One training batch as the augmentation produced it (all tensors on the training device).

    `indices` are positions in the training split; `crops` (B, 2) the top-left (row, col) offsets
    into the 4-pixel-padded image and `flips` (B,) the horizontal flips, so a method can map
    per-image caches onto the augmented view.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor | None = None
    crops: Tensor | None = None
    flips: Tensor | None = None



MEAN = D.CIFAR10.mean  # CIFAR-10 training-set statistics (of the official 50,000 training images)
STD = D.CIFAR10.std  # (each dataset's are in harness.data.datasets: DeviceData normalises with its data's)
PAD = 4


def to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A one-off copy of an array to the device. Not staged through pinned memory: the copy is
    waited for anyway, and pinning would add a second host copy of the whole split."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class Normalize:
    """uint8 NHWC → float NCHW (channels_last memory), (x/255 − mean)/std as one multiply-add.

    The statistics are CIFAR-10's unless given (``D.get(name).mean``/``.std`` for another dataset)."""

    def __init__(self, device: torch.device, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD):
        std_t = torch.tensor(std, device=device)
        self.scale = (1 / (255 * std_t)).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / std_t).view(1, 3, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        return torch.addcmul(self.shift, images.permute(0, 3, 1, 2).float(), self.scale)


class DeviceData:
    """Training, validation and test images on one device. `train_batches` augments."""

    def __init__(self, cifar, device: torch.device):
        self.device = device
        padded = np.pad(cifar.x_train, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
        self.train_padded = to_device(padded, device)
        self.train_labels = to_device(cifar.y_train.astype(np.int64), device)
        self.val = (to_device(cifar.x_val, device), to_device(cifar.y_val.astype(np.int64), device))
        self.test = (to_device(cifar.x_test, device), to_device(cifar.y_test.astype(np.int64), device))
        spec = D.get(getattr(cifar, "dataset", D.DEFAULT))  # normalised with its own dataset's statistics
        self.normalize = Normalize(device, spec.mean, spec.std)
        size = cifar.x_train.shape[1]
        self.offsets = torch.arange(size, device=device)

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.n_train // batch_size

    def train_batches(self, seed: int, epoch: int, batch_size: int, rank: int = 0,
                      world_size: int = 1) -> Iterator[Batch]:
        """Shuffled, augmented batches of one epoch (the last partial batch is dropped). With
        several ranks, each takes its share of every global batch."""
        return self.batches(*self.epoch_draws(seed, epoch), batch_size, rank, world_size)

    def epoch_draws(self, seed: int, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """The epoch's order (n,), crop offsets (n, 2) and flips (n,), drawn on the device."""
        gen = torch.Generator(device=self.device).manual_seed(seed * 100_003 + epoch)
        n = self.n_train
        order = torch.randperm(n, device=self.device, generator=gen)
        crops = torch.randint(0, 2 * PAD + 1, (n, 2), device=self.device, generator=gen)
        flips = torch.rand(n, device=self.device, generator=gen) < 0.5
        return order, crops, flips

    def batches(self, order: Tensor, crops: Tensor, flips: Tensor, batch_size: int, rank: int = 0,
                world_size: int = 1) -> Iterator[Batch]:
        """The augmented batches of one epoch's draws (the last partial batch is dropped)."""
        for step in range(self.steps_per_epoch(batch_size)):
            idx = order[step * batch_size:(step + 1) * batch_size][rank::world_size]
            yield self.augment(idx, crops[idx], flips[idx])

    def probe_batch(self, size: int = 256) -> Batch:
        """A fixed batch: the first training images, un-augmented (centre crop, no flip)."""
        return self.clean_batch(0, size)

    def clean_batch(self, start: int, stop: int) -> Batch:
        """Training images start..stop−1 (up to the last one), un-augmented: the centre crop of the
        padded image, no flip."""
        idx = torch.arange(start, min(stop, self.n_train), device=self.device)
        crops = torch.full((len(idx), 2), PAD, device=self.device)
        return self.augment(idx, crops, torch.zeros(len(idx), dtype=torch.bool, device=self.device))

    def augment(self, idx: Tensor, crops: Tensor, flips: Tensor) -> Batch:
        """Random crop (from the padded image) and horizontal flip, as one gather."""
        size = len(self.offsets)
        rows = crops[:, :1] + self.offsets  # (B, size)
        cols = torch.where(flips[:, None], size - 1 - self.offsets, self.offsets) + crops[:, 1:]
        pixels = self.train_padded[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        return Batch(self.normalize(pixels), self.train_labels[idx], idx, crops, flips)
