"""What every command shares: argparse types, the one-line refusal (exit 2) of a file that is
there but cannot be read (`UnreadableFile`, raised where results and weights are read), and an
interrupt that works however the process was started."""
from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading

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


def interruptible() -> None:
    """Make SIGINT (Ctrl-C, `kill -INT`, the launcher stopping its job) raise KeyboardInterrupt even
    where the process inherited it ignored: a shell starts `cmd &` and `nohup cmd &` of a script so,
    and Python then installs no handler; the job would then ignore its launcher's stop and be killed
    30 s later, mid-epoch, instead of ending interrupted at once."""
    if threading.current_thread() is threading.main_thread():  # signal handlers can be set only there
        signal.signal(signal.SIGINT, signal.default_int_handler)
