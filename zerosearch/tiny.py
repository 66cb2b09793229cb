"""Kept so that ``python -m zerosearch.tiny`` still works: the command is now
``python -m zerosearch.miniature.tiny``."""

from zerosearch.miniature.tiny import main

if __name__ == "__main__":
    main()
