"""`python -m harness.report`: a grid's tables, statistics and figures (harness.analysis.report)."""
import sys

from harness.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
