"""CIFAR-10 for the harness: one canonical uint8 cache, prepared once, memory-mapped by training.

Prepare it with ``python -m harness.data prepare --root DIR`` (see ``--help``); load it with
:func:`load_cifar10`, which holds out a seeded, stratified validation split.
"""

from harness.data.cache import Cifar, DataError, load_cifar10, stratified_split, stratified_subset

__all__ = ["Cifar", "DataError", "load_cifar10", "stratified_split", "stratified_subset"]
