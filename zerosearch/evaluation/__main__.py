"""``python -m zerosearch.evaluation``: score checkpoints on QA benchmarks (``evaluate.py``)."""

from zerosearch.evaluation.evaluate import cli

cli()
