"""`python -m harness.status`: where every job of a grid stands (harness.analysis.status)."""
import sys

from harness.analysis.status import main

if __name__ == "__main__":
    sys.exit(main())
