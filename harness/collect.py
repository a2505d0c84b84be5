"""`python -m harness.collect`: merge a grid's job files into Parquet tables (harness.analysis.collect)."""
import sys

from harness.analysis.collect import main

if __name__ == "__main__":
    sys.exit(main())
