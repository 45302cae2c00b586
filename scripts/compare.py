"""`python scripts/compare.py --results_dir DIR [--baseline NAME] [--metric NAME] [--output_dir DIR]`: the same as
`strato compare DIR ...`."""

import sys

from strato_peft.cli import compare_py

if __name__ == "__main__":
    sys.exit(compare_py())
