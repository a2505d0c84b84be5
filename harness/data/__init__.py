"""CIFAR-10 and CIFAR-100 for the harness: one canonical uint8 cache per dataset, prepared once,
memory-mapped by training.

Prepare it with ``python -m harness.data prepare --root DIR [--dataset cifar100]`` (see
``--help``); load it with :func:`load_dataset` (:func:`load_cifar10` for CIFAR-10), which holds
out a seeded, stratified validation split. The datasets are listed in :mod:`harness.data.datasets`.
"""

from harness.data.cache import (Cifar, DataError, load_cifar10, load_dataset, stratified_split,
                                stratified_subset)
from harness.data.datasets import DATASETS, DatasetSpec

__all__ = ["Cifar", "DATASETS", "DataError", "DatasetSpec", "load_cifar10", "load_dataset", "stratified_split",
           "stratified_subset"]
