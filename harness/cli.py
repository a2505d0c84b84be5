"""What every command shares: argparse types, and the one-line refusal (exit 2) of a file that is
there but cannot be read (`UnreadableFile`, raised where results and weights are read)."""
from __future__ import annotations

import argparse
import functools
import sys

from harness.atomic import UnreadableFile


def positive_int(value: str) -> int:
    """argparse type: a whole number ≥ 1 (counts of steps, images, repeats)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number ≥ 1")
    return int(value)


def refusing_unreadable(main):
    """A command's `main(argv)`: an UnreadableFile ends it with its one line and exit 2."""
    @functools.wraps(main)
    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except UnreadableFile as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return wrapped
