"""Tuning a simulation LLM: collect real search results, label them, build a balanced SFT set, tune.

Stages (each a module and a subcommand of ``python -m zerosearch.simulation_tuning``):
``collect`` (a policy against a real search backend), ``label`` (useful / noisy, by rule or LLM
judge), ``build_sft`` (balanced parquet in the ``simulate_sft`` prompt format) and ``tune``
(``verl.trainer.sft_trainer`` + Hugging Face export). docs/simulation_tuning.md walks through
them and gives the GPU recipe.
"""
