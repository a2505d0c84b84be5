"""`python -m harness.job`: run or resume one job in its folder (harness.run.job)."""
import sys

from harness.run.job import main

if __name__ == "__main__":
    sys.exit(main())
