"""Kept so that ``python -m zerosearch.demo`` still works: the command is now
``python -m zerosearch.miniature.demo``."""

import sys

from zerosearch.miniature.demo import main

if __name__ == "__main__":
    sys.exit(main())
