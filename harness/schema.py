"""`python -m harness.schema`: print the grid-file key reference (harness.config.schema)."""
import sys

from harness.config.schema import main

if __name__ == "__main__":
    sys.exit(main())
