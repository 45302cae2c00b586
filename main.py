"""`python main.py --config FILE --seed 42`: the original experiment framework's entry point (= strato train)."""

import sys

from strato_peft.cli import main_py

if __name__ == "__main__":
    sys.exit(main_py())
