"""Kept so that ``python -m zerosearch.ask`` still works: the command is now
``python -m zerosearch.evaluation.ask``."""

from zerosearch.evaluation.ask import main

if __name__ == "__main__":
    main()
