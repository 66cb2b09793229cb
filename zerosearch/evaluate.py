"""Kept so that ``python -m zerosearch.evaluate`` still works: the command is now
``python -m zerosearch.evaluation``."""

from zerosearch.evaluation.evaluate import cli

if __name__ == "__main__":
    cli()
