"""`python scripts/eval.py --checkpoint DIR [--tasks ...]`: the same as `strato eval`."""

import sys

from strato_peft.cli import eval_py

if __name__ == "__main__":
    sys.exit(eval_py())
