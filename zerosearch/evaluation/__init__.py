"""Evaluation of checkpoints on the QA benchmarks: the command, its keys, data, reports, and asking a checkpoint questions."""
